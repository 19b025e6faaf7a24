"""Figures and the per-token reward explorer.

Every figure has labelled axes; the caller adds the one-line takeaway beneath it.
"""
from __future__ import annotations

import html

import matplotlib

from .reward import EndogenousReward, RewardResult


def _pyplot():
    import matplotlib.pyplot as plt  # imported late so a headless backend can be chosen first
    return plt


def plot_token_rewards(result: RewardResult, ax=None, title: str | None = None):
    """Bars of per-token rewards r̂_h (eq. 12) and the running sum, tokens on the x axis."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(result.tokens) + 1.5), 3.2))
    h = range(len(result.tokens))
    rewards = result.rewards.tolist()
    colors = ["tab:green" if r >= 0 else "tab:red" for r in rewards]
    ax.bar(h, rewards, color=colors, label="r̂(s_h, a_h)")
    ax.plot(h, result.rewards.cumsum(0).tolist(), "k.-", label="running sum")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xticks(list(h), [repr(t)[1:-1] for t in result.tokens], rotation=90)
    ax.set_xlabel("response token a_h")
    ax.set_ylabel("endogenous reward (nats)")
    ax.set_title(title or f"total Σ r̂ = {result.total:.3f}  (α = {result.alpha:g})")
    ax.legend(loc="best", fontsize=8)
    ax.figure.tight_layout()
    return ax


def tokens_html(result: RewardResult, scale: float | None = None) -> str:
    """The response as HTML, each token shaded green (reward > 0) or red (< 0)."""
    rewards = result.rewards.tolist()
    scale = scale or max(1e-6, max(abs(r) for r in rewards))
    spans = []
    for token, r in zip(result.tokens, rewards):
        rgb = matplotlib.colors.to_hex(matplotlib.colormaps["RdYlGn"](0.5 + 0.5 * max(-1, min(1, r / scale))))
        text = html.escape(token).replace("\n", "⏎") or "∅"
        spans.append(f'<span title="r̂ = {r:.3f}" style="background:{rgb};padding:1px 2px;'
                     f'margin:1px;border-radius:3px;font-family:monospace">{text}</span>')
    return (f"<div>{''.join(spans)}</div><div style='font-family:monospace'>total Σ r̂ = "
            f"{result.total:.3f} = α·Σ log π̂ + V(s_1) = {result.alpha:g}·{float(result.logprobs.sum()):.3f}"
            f" + {float(result.values[0]):.3f}</div>")


def reward_explorer(model, tokenizer, prompts: list[str], responses: list[str], system: str | None = None):
    """An ipywidgets explorer: pick a prompt, type a response, move α; tokens are shaded by r̂.

    Falls back to a static matplotlib figure of the first pair when widgets are unavailable.
    """
    scorers: dict[float, EndogenousReward] = {}

    def score(prompt, response, alpha):
        if alpha not in scorers:
            scorers[alpha] = EndogenousReward(model, tokenizer, alpha=alpha, device=model.device)
        return scorers[alpha].score(prompt, response, system=system)

    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:
        return plot_token_rewards(score(prompts[0], responses[0], 1.0))

    prompt_box = widgets.Dropdown(options=prompts, description="prompt")
    response_box = widgets.Text(value=responses[0], description="response")
    alpha_box = widgets.FloatLogSlider(value=1.0, base=2, min=-2, max=2, step=0.5, description="α")
    out = widgets.HTML()

    def update(_=None):
        if not response_box.value:
            out.value = "<i>type a response</i>"
            return
        out.value = tokens_html(score(prompt_box.value, response_box.value, alpha_box.value))

    for w in (prompt_box, response_box, alpha_box):
        w.observe(update, names="value")
    update()
    box = widgets.VBox([prompt_box, response_box, alpha_box, out])
    display(box)
    return box

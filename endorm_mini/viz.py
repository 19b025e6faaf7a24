"""Figures and the per-token reward explorer.

Every figure has labelled axes; the caller adds the one-line takeaway beneath it. The
explorer and its HTML views live in :mod:`endorm_mini.explorer` and are re-exported here.
"""
from __future__ import annotations

from .explorer import (ColourScale, ExplorerConfig, RewardExplorer, comparison_html,
                       reward_explorer, tokens_html)
from .reward import RewardResult

__all__ = ["ColourScale", "ExplorerConfig", "PPO_PANELS", "RewardExplorer", "comparison_html",
           "plot_history", "plot_token_rewards", "reward_explorer", "tokens_html"]


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


PPO_PANELS = (("reward", "reward per response"), ("accuracy", "sampled accuracy (rollouts)"),
              ("kl", "KL(π_θ ‖ π_ref) per response"))


def plot_history(history: list[dict], path: str, panels=PPO_PANELS,
                 xlabel: str = "PPO update") -> None:
    """One panel per ``(key, label)`` of ``panels`` against the update (PPO's: reward, sampled
    accuracy and KL side by side); ``endorm-mini grpo`` draws its own keys with it."""
    plt = _pyplot()

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        ax.plot([h["step"] for h in history], [h[key] for h in history])
        ax.set(xlabel=xlabel, ylabel=label)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""The reward explorer: a response's endogenous rewards on screen, two responses compared.

It shows what docs/paper.md §5 says. A single token's reward r̂ (eq. 12) carries the
shaping V(s_h) − V(s_{h+1}), which says little about that token (and the eos token's r̂ is
its raw logit, often the largest number in the response). Summed over a complete response
the shaping telescopes: Σ r̂ = α·Σ log π̂ + V(s_1), and V(s_1) belongs to the prompt, the
same for every response to it. So the difference of two totals is what ranks responses.

- Colour: a fixed, symmetric, diverging scale in nats (red below 0, blue above), clipped at
  ±limit. No token sets it, so one shade means one reward in every response and at every α.
- Numbers: each response gets a table (h, token, log π̂, V(s_h), r̂, running Σ r̂) and its
  telescoping line; the two totals, their difference and the preferred response follow.
- The HTML is built by plain functions, so a notebook saved without a live kernel shows the
  explorer's first view too (``RewardExplorer._repr_mimebundle_`` adds it as ``text/html``).
"""
from __future__ import annotations

import asyncio
import html
import math
from dataclasses import dataclass, field

import matplotlib

from .reward import EndogenousReward, RewardResult

MINUS = "\u2212"         # a real minus sign, not a hyphen
PI_HAT = "\u03c0\u0302"  # π followed by a combining circumflex: one glyph in DejaVu and Noto
# unquoted family names: the HTML attributes around them are single-quoted
FONT = "font-family:DejaVu Sans,system-ui,sans-serif"
MONO = "font-family:DejaVu Sans Mono,monospace"


# ---------------------------------------------------------------- numbers and colours
def signed(x: float, digits: int = 3) -> str:
    """``x`` with a real minus sign: ``−53.486``; ``0.000`` never shows as ``−0.000``."""
    text = f"{x:.{digits}f}"
    if text.startswith("-") and float(text) == 0.0:
        text = text[1:]
    return text.replace("-", MINUS)


def factor(x: float, digits: int = 3) -> str:
    """``x`` as the right operand of a product: negative numbers in parentheses, ``(−53.486)``."""
    text = signed(x, digits)
    return f"({text})" if text.startswith(MINUS) else text


def term(x: float, digits: int = 3) -> str:
    """``x`` as a later term of a sum: ``+ 9.188`` or ``− 9.188``."""
    text = signed(x, digits)
    return f"{MINUS} {text[1:]}" if text.startswith(MINUS) else f"+ {text}"


def _luminance(rgb) -> float:
    """WCAG relative luminance of an sRGB colour with channels in [0, 1]."""
    def linear(c):
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (linear(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@dataclass
class ColourScale:
    """How a reward becomes a colour: fixed in nats, symmetric about 0, clipped."""

    limit: float = 10.0
    """|r̂| in nats at which the colour saturates; larger rewards get the end colour. Fixed,
    never taken from the data, so the eos token (whose r̂ is its raw logit) cannot set it."""
    cmap: str = "RdBu"
    """A diverging matplotlib colormap: its low end shades r̂ < 0 (red), its high end r̂ > 0."""

    def __post_init__(self):
        if not (isinstance(self.limit, (int, float)) and math.isfinite(self.limit)
                and self.limit > 0):
            raise ValueError(f"ColourScale.limit must be a positive number of nats, got "
                             f"{self.limit!r}")
        if self.cmap not in matplotlib.colormaps:
            raise ValueError(f"ColourScale.cmap must be a matplotlib colormap, got {self.cmap!r}")

    def colours(self, reward: float) -> tuple[str, str]:
        """(background, text) hex colours for ``reward``; the text is black or white,
        whichever contrasts more with the background (WCAG contrast ratio)."""
        x = 0.5 + 0.5 * max(-1.0, min(1.0, reward / self.limit))
        rgba = matplotlib.colormaps[self.cmap](x)
        lum = _luminance(rgba)
        black_contrast = (lum + 0.05) / 0.05
        white_contrast = 1.05 / (lum + 0.05)
        text = "#000000" if black_contrast >= white_contrast else "#ffffff"
        return matplotlib.colors.to_hex(rgba), text

    def bar_html(self) -> str:
        """A colour bar from −limit to +limit with its range printed."""
        stops = ", ".join(self.colours(self.limit * (2 * i / 10 - 1))[0] for i in range(11))
        lim = signed(self.limit, 0 if float(self.limit).is_integer() else 1)
        return (f"<div class='endorm-colourbar' style='{FONT};font-size:12px;margin-top:6px'>"
                f"colour of r̂: fixed scale, {MINUS}{lim} to +{lim} nats, clipped beyond"
                f"<div style='display:flex;align-items:center;gap:6px;max-width:420px'>"
                f"<span>{MINUS}{lim}</span><div style='flex:1;height:10px;border:1px solid #888;"
                f"background:linear-gradient(to right, {stops})'></div><span>+{lim}</span>"
                f"</div></div>")


# ---------------------------------------------------------------- one response
def _token_text(token: str) -> str:
    return html.escape(token).replace("\n", "⏎") or "∅"


def _cell(text: str, style: str = "") -> str:
    return f"<td style='padding:1px 6px;text-align:right;{style}'>{text}</td>"


def _token_strip(result: RewardResult, scale: ColourScale) -> str:
    spans = []
    for h, (token, r) in enumerate(zip(result.tokens, result.rewards.tolist()), 1):
        bg, fg = scale.colours(r)
        spans.append(f"<span class='endorm-token' data-reward='{r:.6f}' title='h = {h}, "
                     f"r̂ = {signed(r)}' style='background:{bg};color:{fg};padding:1px 2px;"
                     f"border-radius:3px;white-space:pre;{MONO}'>{_token_text(token)}</span>")
    # a flex row that wraps: characters of one word have no line-break opportunity
    return (f"<div class='endorm-tokens' style='display:flex;flex-wrap:wrap;gap:2px;"
            f"margin:3px 0;line-height:1.5'>{''.join(spans)}</div>")


def _table(result: RewardResult, scale: ColourScale) -> str:
    head = "".join(f"<th style='padding:1px 6px;text-align:right'>{name}</th>" for name in
                   ("h", "token", f"log {PI_HAT}", "V(s<sub>h</sub>)", "r̂", "Σ r̂ so far"))
    rows = []
    running = 0.0
    for h, (token, lp, v, r) in enumerate(zip(result.tokens, result.logprobs.tolist(),
                                              result.values.tolist(), result.rewards.tolist()), 1):
        running += r
        bg, fg = scale.colours(r)
        shown = _token_text(token).replace(" ", "␣")
        rows.append("<tr>" + _cell(str(h)) + _cell(shown, MONO) + _cell(signed(lp))
                    + _cell(signed(v)) + _cell(signed(r), f"background:{bg};color:{fg}")
                    + _cell(signed(running)) + "</tr>")
    return (f"<div style='max-height:230px;overflow-y:auto;margin:4px 0'>"
            f"<table class='endorm-table' style='border-collapse:collapse;font-size:12px;"
            f"line-height:1.3;font-variant-numeric:tabular-nums'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def telescoping_line(result: RewardResult) -> str:
    """Σ r̂ = α·Σ log π̂ + V(s_1) − V(s_{T+1}) with the numbers in (eq. 12 summed)."""
    loglik = float(result.logprobs.sum())
    v1 = float(result.values[0])
    last = "0" if result.ended else factor(result.final_value)
    why = "V = 0 after eos" if result.ended else "no eos: cut, its V kept"
    return (f"<div class='endorm-telescoping' style='{FONT};font-size:12px'>"
            f"Σ r̂ = α·Σ log {PI_HAT} + V(s<sub>1</sub>) {MINUS} V(s<sub>T+1</sub>)<br>"
            f"&nbsp;&nbsp;&nbsp; = {result.alpha:g}·{factor(loglik)} {term(v1)} {MINUS} {last}"
            f" = {signed(result.total)} &nbsp;({why})</div>")


def tokens_html(result: RewardResult, scale: ColourScale | None = None,
                label: str = "") -> str:
    """One response as HTML: tokens shaded by r̂, its per-token table and its telescoping sum."""
    scale = scale or ColourScale()
    title = f"<b>{html.escape(label)}</b> " if label else ""
    return (f"<div class='endorm-response' style='{FONT};font-size:13px'>"
            f"<div>{title}total Σ r̂ = <b class='endorm-total'>{signed(result.total)}</b>"
            f" over {len(result.tokens)} tokens</div>"
            f"{_token_strip(result, scale)}{_table(result, scale)}{telescoping_line(result)}"
            f"</div>")


# ---------------------------------------------------------------- two responses
def verdict_html(a: RewardResult, b: RewardResult) -> str:
    """The two totals, their difference and which response the endogenous reward prefers."""
    diff = a.total - b.total
    if abs(diff) < 1e-9:
        which = "a tie: the reward prefers neither"
    else:
        which = f"the endogenous reward prefers <b>{'A' if diff > 0 else 'B'}</b>"
    return (f"<div class='endorm-verdict' style='{FONT};font-size:13px;margin-top:6px'>"
            f"Σ r̂(A) {MINUS} Σ r̂(B) = {signed(a.total)} {MINUS} {factor(b.total)} = "
            f"<b class='endorm-difference'>{signed(diff)}</b> nats: {which}. "
            f"V(s<sub>1</sub>) = {signed(float(a.values[0]))} belongs to the prompt and cancels"
            f" in the difference; one token's r̂ alone means little.</div>")


def comparison_html(prompt: str, a: RewardResult | str, b: RewardResult | str,
                    scale: ColourScale | None = None) -> str:
    """Two responses to ``prompt`` side by side, then their difference. A string in place
    of a result is shown as a message in that response's column (nothing to score)."""
    scale = scale or ColourScale()
    columns = []
    for label, item in (("A", a), ("B", b)):
        body = (tokens_html(item, scale, label) if isinstance(item, RewardResult) else
                f"<div class='endorm-response'><b>{label}</b> <i>{html.escape(item)}</i></div>")
        columns.append(f"<div style='flex:1 1 340px;min-width:0'>{body}</div>")
    alpha = next((x.alpha for x in (a, b) if isinstance(x, RewardResult)), None)
    both = isinstance(a, RewardResult) and isinstance(b, RewardResult)
    head = f"prompt: <b>{html.escape(prompt)}</b>"
    if alpha is not None:
        head += f" &nbsp; α = {alpha:g}"
    # line-height: the widget's HTML box inherits the controls' 28 px rows otherwise
    return (f"<div class='endorm-explorer' style='{FONT};font-size:13px;line-height:1.4;"
            f"padding-bottom:10px'>"
            f"<div style='margin-bottom:4px'>{head}</div>"
            f"<div style='display:flex;flex-wrap:wrap;gap:18px'>{''.join(columns)}</div>"
            f"{verdict_html(a, b) if both else ''}{scale.bar_html()}</div>")


# ---------------------------------------------------------------- the widget
@dataclass
class ExplorerConfig:
    """Settings of :func:`reward_explorer`."""

    alpha: float = 1.0
    """α at start (eq. 10–12); the slider runs over powers of 2 from 1/4 to 4."""
    debounce_s: float = 0.25
    """Seconds of quiet after the last keystroke or slider move before rescoring (in a
    running kernel; outside an event loop every change rescores at once)."""
    scale: ColourScale = field(default_factory=ColourScale)
    """The fixed colour scale of r̂."""

    def __post_init__(self):
        if not (math.isfinite(self.alpha) and 0.25 <= self.alpha <= 4):
            raise ValueError(f"ExplorerConfig.alpha must lie in [0.25, 4], got {self.alpha!r}")
        if not (math.isfinite(self.debounce_s) and self.debounce_s >= 0):
            raise ValueError(f"ExplorerConfig.debounce_s must be ≥ 0 seconds, got "
                             f"{self.debounce_s!r}")


def _check_examples(examples) -> dict[str, list[str]]:
    if not isinstance(examples, dict) or not examples:
        raise ValueError("examples must be a non-empty dict: prompt → [response A, response B]")
    out = {}
    for prompt, pair in examples.items():
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"examples: every prompt must be a non-empty string, got {prompt!r}")
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(r, str) for r in pair)):
            raise ValueError(f"examples[{prompt!r}] must be [response A, response B] (two "
                             f"strings), got {pair!r}")
        out[prompt] = list(pair)
    return out


class RewardExplorer:
    """Pick a prompt, edit its two responses, move α: tokens shaded by r̂, totals compared.

    ``widget`` is the ipywidgets box; the object displays as that live widget with a static
    ``text/html`` copy of the current view beside it (for a notebook read without a kernel).
    """

    def __init__(self, model, tokenizer, examples: dict[str, list[str]],
                 system: str | None = None, config: ExplorerConfig | None = None):
        import ipywidgets as widgets

        self.model = model
        self.tokenizer = tokenizer
        self.system = system
        self.config = config or ExplorerConfig()
        self.responses = _check_examples(examples)   # edits are remembered per prompt
        self.renders = 0                              # how many times the view was rebuilt
        self._scorers: dict[float, EndogenousReward] = {}
        self._pending = None
        self._loading = False
        def wide():
            # "auto" stretches across the box; "100%" plus the widgets' margins overflows it
            return widgets.Layout(width="auto")
        style = {"description_width": "90px"}
        first = next(iter(self.responses))
        self.prompt = widgets.Dropdown(options=list(self.responses), value=first,
                                       description="prompt", layout=wide(), style=style)
        self.response_a = widgets.Text(value=self.responses[first][0], description="response A",
                                       layout=wide(), style=style)
        self.response_b = widgets.Text(value=self.responses[first][1], description="response B",
                                       layout=wide(), style=style)
        self.alpha = widgets.FloatLogSlider(value=self.config.alpha, base=2, min=-2, max=2,
                                            step=0.5, description="α", style=style,
                                            layout=widgets.Layout(width="60%"))
        self.view = widgets.HTML(layout=wide())
        self.widget = widgets.VBox([self.prompt, self.response_a, self.response_b, self.alpha,
                                    self.view])
        self.prompt.observe(self._on_prompt, names="value")
        for box in (self.response_a, self.response_b):
            box.observe(self._on_response, names="value")
        self.alpha.observe(self._schedule, names="value")
        self.refresh()

    def score(self, prompt: str, response: str, alpha: float) -> RewardResult | str:
        """The endogenous reward of ``response``, or a message saying why there is none."""
        if not response:
            return "type a response"
        if alpha not in self._scorers:
            self._scorers[alpha] = EndogenousReward(self.model, self.tokenizer, alpha=alpha,
                                                    device=self.model.device)
        try:
            return self._scorers[alpha].score(prompt, response, system=self.system)
        except ValueError as err:        # e.g. longer than the model's context: say so
            return str(err)

    def html(self) -> str:
        """The comparison view of the prompt, responses and α now in the boxes."""
        prompt, alpha = self.prompt.value, self.alpha.value
        a = self.score(prompt, self.response_a.value, alpha)
        b = self.score(prompt, self.response_b.value, alpha)
        return comparison_html(prompt, a, b, self.config.scale)

    def refresh(self):
        """Rescore now and redraw the view."""
        self._pending = None
        self.view.value = self.html()
        self.renders += 1

    def _schedule(self, _change=None):
        # Debounce: in a kernel each keystroke arrives as its own change; rescore once the
        # changes stop for debounce_s. Outside an event loop (scripts, tests) rescore now.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.refresh()
            return
        if self._pending is not None:
            self._pending.cancel()
        self._pending = loop.call_later(self.config.debounce_s, self.refresh)

    def _on_response(self, _change):
        if self._loading:
            return
        self.responses[self.prompt.value] = [self.response_a.value, self.response_b.value]
        self._schedule()

    def _on_prompt(self, change):
        # Each prompt carries its own responses: load them, then rescore once.
        self._loading = True
        try:
            self.response_a.value = self.responses[change["new"]][0]
            self.response_b.value = self.responses[change["new"]][1]
        finally:
            self._loading = False
        self._schedule()

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/html"] = (f"{self.view.value}<div style='{FONT};font-size:12px;"
                               f"color:#666'>(a static copy of the explorer's view: run the "
                               f"notebook to change the prompt, the responses and α)</div>")
        bundle["text/plain"] = (f"RewardExplorer(prompt={self.prompt.value!r}, "
                                f"α={self.alpha.value:g})")
        return bundle


def reward_explorer(model, tokenizer, examples: dict[str, list[str]],
                    system: str | None = None,
                    config: ExplorerConfig | None = None) -> RewardExplorer:
    """An explorer of the endogenous reward (eq. 12) of two responses per prompt.

    ``examples`` maps each prompt to its two responses, ``[A, B]``; choosing a prompt loads
    its responses (edits are remembered per prompt). Display the returned object (the last
    expression of a cell) to get the live widget.
    """
    return RewardExplorer(model, tokenizer, examples, system=system, config=config)

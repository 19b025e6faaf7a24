"""The reward explorer: a response's endogenous rewards on screen, two responses compared.

It shows what docs/paper.md §5 says. A single token's reward r̂ (eq. 12) carries the
shaping V(s_h) − V(s_{h+1}), which says little about that token (and the eos token's r̂ is
its raw logit, often the largest number in the response). Summed over a complete response
the shaping telescopes: Σ r̂ = α·Σ log π̂ + V(s_1), and V(s_1) belongs to the prompt, the
same for every response to it. So the difference of two totals is what ranks responses.

- Colour: a fixed, symmetric, diverging scale in nats (red below 0, blue above), clipped at
  ±limit. No token sets it, so one shade means one reward in every response and at every α.
- Numbers: each response gets a table (h, token, log π̂, V(s_h), V(s_{h+1}), r̂, running
  Σ r̂) and its telescoping line; the two totals, their difference and the preferred
  response follow.
- Details: hovering a token, focusing it (Tab) or clicking it shows its h, log π̂, V(s_h),
  V(s_{h+1}), r̂ and running sum and marks its table row, in CSS only, so the stored copy
  does it too. Each table sorts by r̂ and exports CSV; it shows every row up to
  :data:`TABLE_ROWS` tokens.
- The HTML is built by plain functions, so a notebook saved without a live kernel shows the
  explorer's first view too (``RewardExplorer._repr_mimebundle_`` adds it as ``text/html``,
  headed as a snapshot: run the cell to make it live).
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
TABLE_ROWS = 64
"""A response's table shows every row up to this many tokens; a longer one scrolls inside."""


READOUT = ""   # the slider's readout: d3-format's default, ~g to 12 digits (as alpha_text)

def alpha_text(alpha: float) -> str:
    """α as every part of the explorer shows it (header, telescoping line, slider readout:
    :data:`READOUT`); the slider's powers of 2 read exactly: 0.25, 0.5, 1, 2, 4."""
    return f"{alpha:.12g}"


def _token_text(token: str) -> str:
    return html.escape(token).replace("\n", "⏎") or "∅"


def _cell(text: str, style: str = "") -> str:
    return f"<td style='padding:1px 6px;text-align:right;{style}'>{text}</td>"


@dataclass
class _Row:
    """One token's numbers: r̂ = α log π̂ + V(s_h) − V(s_{h+1}) (eq. 12)."""
    h: int
    token: str
    logprob: float
    value: float
    next_value: float
    reward: float
    running: float

    def details(self) -> str:
        """The token's numbers as one line of plain text (its label for screen readers)."""
        return (f"h = {self.h}, token {self.token!r}: log π̂ = {signed(self.logprob)}, "
                f"V(s_{self.h}) = {signed(self.value)}, V(s_{self.h + 1}) = "
                f"{signed(self.next_value)}, r̂ = {signed(self.reward)}, Σ r̂ so far = "
                f"{signed(self.running)}")


def _rows(result: RewardResult) -> list[_Row]:
    values = result.values.tolist()
    following = values[1:] + [0.0 if result.ended else float(result.final_value)]
    rows, running = [], 0.0
    for h, (token, lp, v, nv, r) in enumerate(zip(result.tokens, result.logprobs.tolist(),
                                                  values, following,
                                                  result.rewards.tolist()), 1):
        running += r
        rows.append(_Row(h, token, lp, v, nv, r, running))
    return rows


def _style(tokens: int) -> str:
    """CSS only (an HTML widget runs no script; a stored copy neither): a token hovered, or
    focused (by Tab or a click), shows its numbers under the strip and marks its table row;
    the sort box swaps the table's row order."""
    one = [f".endorm-response:has(.endorm-token[data-h='{h}']:hover) [data-h='{h}'].endorm-detail,"
           f".endorm-response:not(:has(.endorm-token:hover)):has(.endorm-token[data-h='{h}']:focus)"
           f" [data-h='{h}'].endorm-detail{{display:block}}"
           f".endorm-response:has(.endorm-token[data-h='{h}']:is(:hover,:focus)) "
           f"tr[data-h='{h}']{{outline:2px solid #d08000;outline-offset:-1px}}"
           f".endorm-response:has(.endorm-token[data-h='{h}']:is(:hover,:focus)) "
           f"tr[data-h='{h}'] td{{background-color:#fff1b8}}" for h in range(1, tokens + 1)]
    return ("<style>.endorm-detail{display:none}"
            ".endorm-response:has(.endorm-token:is(:hover,:focus)) .endorm-hint{display:none}"
            ".endorm-token{cursor:pointer}"
            ".endorm-token:focus{outline:2px solid #222;outline-offset:1px}"
            ".endorm-response:has(.endorm-sort:checked) tbody.endorm-by-h,"
            ".endorm-response:not(:has(.endorm-sort:checked)) tbody.endorm-by-reward"
            "{display:none}" + "".join(one) + "</style>")


def _token_strip(rows: list[_Row], scale: ColourScale) -> str:
    words: list[list[str]] = []
    for i, row in enumerate(rows):
        bg, fg = scale.colours(row.reward)
        span = (f"<span class='endorm-token' data-h='{row.h}' data-reward='{row.reward:.6f}' "
                f"tabindex='0' role='button' aria-label='{html.escape(row.details())}' "
                f"style='background:{bg};color:{fg};padding:1px 2px;border-radius:3px;"
                f"white-space:pre;{MONO}'>{_token_text(row.token)}</span>")
        # a line may break before a token that starts with a space or follows one that
        # ends with one (or a new line), never inside a word made of several tokens
        if not words or row.token[:1].isspace() or rows[i - 1].token[-1:].isspace():
            words.append([])
        words[-1].append(span)
    groups = "".join(f"<span style='display:inline-flex;gap:2px;white-space:nowrap'>"
                     f"{''.join(word)}</span>" for word in words)
    return (f"<div class='endorm-tokens' style='display:flex;flex-wrap:wrap;gap:2px;"
            f"margin:3px 0;line-height:1.5'>{groups}</div>")


def _details(rows: list[_Row]) -> str:
    lines = [f"<div class='endorm-detail' data-h='{r.h}'>h = {r.h}, token "
             f"<code>{_token_text(r.token).replace(' ', '␣')}</code>: log {PI_HAT} = "
             f"{signed(r.logprob)}, V(s<sub>{r.h}</sub>) = {signed(r.value)}, "
             f"V(s<sub>{r.h + 1}</sub>) = {signed(r.next_value)}, r̂ = <b>{signed(r.reward)}</b>,"
             f" Σ r̂ so far = {signed(r.running)}</div>" for r in rows]
    return (f"<div class='endorm-details' style='font-size:12px;min-height:2.8em;margin:2px 0'>"
            f"<span class='endorm-hint' style='color:#666'>hover, focus (Tab) or click a token"
            f" for its numbers; its row is marked in the table</span>{''.join(lines)}</div>")


def csv_text(result: RewardResult) -> str:
    """The per-token table as CSV (h, token, log π̂, V(s_h), V(s_{h+1}), r̂, Σ r̂ so far)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["h", "token", "log_pi_hat", "V_h", "V_h_plus_1", "reward", "running_sum"])
    for r in _rows(result):
        writer.writerow([r.h, r.token, f"{r.logprob:.6f}", f"{r.value:.6f}",
                         f"{r.next_value:.6f}", f"{r.reward:.6f}", f"{r.running:.6f}"])
    return out.getvalue()


def _tools(result: RewardResult, label: str) -> str:
    """The sort box and the CSV link, above the strip: a token's details, shown or hidden,
    never move them under the pointer."""
    from urllib.parse import quote

    name = f"rewards-{label or 'response'}.csv"
    return (f"<div style='font-size:12px;display:flex;gap:14px;align-items:center'>"
            f"<label><input type='checkbox' class='endorm-sort'> sort the table by r̂ (largest "
            f"first)</label><a class='endorm-csv' download='{name}' href='data:text/csv;"
            f"charset=utf-8,{quote(csv_text(result), safe='')}'>export CSV</a></div>")


def _table(rows: list[_Row], scale: ColourScale) -> str:
    head = "".join(f"<th style='padding:1px 6px;text-align:right'>{name}</th>" for name in
                   ("h", "token", f"log {PI_HAT}", "V(s<sub>h</sub>)", "V(s<sub>h+1</sub>)", "r̂",
                    "Σ r̂ so far"))

    def body(ordered: list[_Row], which: str) -> str:
        lines = []
        for r in ordered:
            bg, fg = scale.colours(r.reward)
            shown = _token_text(r.token).replace(" ", "␣")
            lines.append(f"<tr data-h='{r.h}'>" + _cell(str(r.h)) + _cell(shown, MONO)
                         + _cell(signed(r.logprob)) + _cell(signed(r.value))
                         + _cell(signed(r.next_value))
                         + _cell(signed(r.reward), f"background:{bg};color:{fg}")
                         + _cell(signed(r.running)) + "</tr>")
        return f"<tbody class='endorm-{which}'>{''.join(lines)}</tbody>"

    # every row shows up to TABLE_ROWS tokens; only a longer response scrolls inside
    limit = f"max-height:{TABLE_ROWS * 1.3 + 2:.0f}em;overflow-y:auto;" if len(rows) > TABLE_ROWS else ""
    by_reward = sorted(rows, key=lambda r: -r.reward)
    return (f"<div style='{limit}margin:4px 0'>"
            f"<table class='endorm-table' style='border-collapse:collapse;font-size:12px;"
            f"line-height:1.3;font-variant-numeric:tabular-nums'><thead><tr>{head}</tr></thead>"
            f"{body(rows, 'by-h')}{body(by_reward, 'by-reward')}</table></div>")


def telescoping_line(result: RewardResult) -> str:
    """Σ r̂ = α·Σ log π̂ + V(s_1) − V(s_{T+1}) with the numbers in (eq. 12 summed)."""
    loglik = float(result.logprobs.sum())
    v1 = float(result.values[0])
    last = "0" if result.ended else factor(result.final_value)
    why = "V = 0 after eos" if result.ended else "no eos: cut, its V kept"
    return (f"<div class='endorm-telescoping' style='{FONT};font-size:12px'>"
            f"Σ r̂ = α·Σ log {PI_HAT} + V(s<sub>1</sub>) {MINUS} V(s<sub>T+1</sub>)<br>"
            f"&nbsp;&nbsp;&nbsp; = {alpha_text(result.alpha)}·{factor(loglik)} {term(v1)} {MINUS} {last}"
            f" = {signed(result.total)} &nbsp;({why})</div>")


def tokens_html(result: RewardResult, scale: ColourScale | None = None,
                label: str = "") -> str:
    """One response as HTML: tokens shaded by r̂, its per-token table and its telescoping sum."""
    scale = scale or ColourScale()
    title = f"<b>{html.escape(label)}</b> " if label else ""
    rows = _rows(result)
    # data-lm-suppress-shortcuts: keys pressed on a focused token are not JupyterLab's
    return (f"<div class='endorm-response' data-lm-suppress-shortcuts='true' "
            f"style='{FONT};font-size:13px'>{_style(len(rows))}"
            f"<div>{title}total Σ r̂ = <b class='endorm-total'>{signed(result.total)}</b>"
            f" over {len(result.tokens)} tokens</div>"
            f"{_tools(result, label)}{_token_strip(rows, scale)}{_details(rows)}"
            f"{_table(rows, scale)}"
            f"{telescoping_line(result)}</div>")


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
        head += f" &nbsp; α = {alpha_text(alpha)}"
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
    """α at start (eq. 10–12); the slider runs over the powers of 2 from 1/4 to 4."""
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


# What a stored notebook shows in place of the live widget (build-lessons --execute keeps
# this copy, not the widget: a stored widget cannot rescore, and nbconvert and GitHub draw
# only the copy offline).
SNAPSHOT_NOTE = (f"<div class='endorm-snapshot' style='{FONT};font-size:13px;background:#fff4d6;"
                 f"border-left:4px solid #d08000;padding:4px 8px;margin-bottom:6px'>"
                 f"<b>A snapshot</b> of the reward explorer as it was stored: <b>run this cell"
                 f"</b> (after the cells above it) to make it live, then choose the prompt, "
                 f"edit the responses and move α.</div>")
# ipywidgets cannot mark its dropdown as keeping its keys, so JupyterLab takes ArrowDown on
# it to move to the next cell. The live view marks the <select> itself (Lumino matches the
# focused element before it reaches a marked ancestor) with data-lm-suppress-shortcuts, from
# the error handler of an empty image: the one script an HTML widget's content runs.
KEEP_KEYS = ("<img alt='' src='data:,' style='display:none' onerror=\"var b=this.closest("
             "'.widget-vbox');var d=b&&b.querySelector('.widget-dropdown select');"
             "if(d)d.setAttribute('data-lm-suppress-shortcuts','true')\">")


class RewardExplorer:
    """Pick a prompt, edit its two responses, move α: tokens shaded by r̂, totals compared.

    ``widget`` is the ipywidgets box; the object displays as that live widget with a static
    ``text/html`` copy of the current view beside it, headed as a snapshot (what a notebook
    stored by build-lessons --execute keeps). Hover, focus or click a token for its numbers
    (its table row is marked); each table sorts by r̂ and exports CSV.
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
        def wide():  # "auto" stretches across the box; "100%" plus the margins overflows it
            return widgets.Layout(width="auto")
        style = {"description_width": "90px"}
        first = next(iter(self.responses))
        self.prompt = widgets.Dropdown(options=list(self.responses), value=first,
                                       description="prompt", layout=wide(), style=style)
        self.response_a = widgets.Text(value=self.responses[first][0], description="response A",
                                       layout=wide(), style=style)
        self.response_b = widgets.Text(value=self.responses[first][1], description="response B",
                                       layout=wide(), style=style)
        # powers of 2: each α reads exactly, the same in the header, the sums and the readout
        self.alpha = widgets.FloatLogSlider(value=self.config.alpha, base=2, min=-2, max=2,
                                            step=1, readout_format=READOUT, description="α",
                                            style=style,
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
        self.static = self.html()
        self.view.value = self.static + KEEP_KEYS
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
        bundle["text/html"] = SNAPSHOT_NOTE + self.static
        bundle["text/plain"] = (f"RewardExplorer(prompt={self.prompt.value!r}, "
                                f"α={alpha_text(self.alpha.value)})")
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

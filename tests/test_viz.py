"""Figures carry labelled axes; the explorer shows every token with its reward on a fixed
colour scale, the numbers behind it, and two responses' totals compared."""
import asyncio
import dataclasses
import re

import matplotlib
import pytest

matplotlib.use("Agg")

from conftest import make_gpt2
from endorm_mini.explorer import (KEEP_KEYS, MINUS, SNAPSHOT_NOTE, TABLE_ROWS, ColourScale,
                                  ExplorerConfig, alpha_text, comparison_html, csv_text, factor,
                                  signed, term, _luminance)
from endorm_mini.reward import EndogenousReward
from endorm_mini.viz import plot_token_rewards, reward_explorer, tokens_html

EXAMPLES = {"1+2": ["3", "33"], "2+2": ["4", "5"]}


@pytest.fixture
def scored(tiny_tokenizer):
    model = make_gpt2(tiny_tokenizer)
    return EndogenousReward(model, tiny_tokenizer, device="cpu").score("1+2", "3 <ok>")


def _visible(page: str) -> str:
    """The text a reader sees: style sheets and tags (with their attributes) removed."""
    return re.sub(r"<[^>]*>", "", re.sub(r"<style>.*?</style>", "", page, flags=re.S))


def _token_colours(page: str) -> list[str]:
    return re.findall(r"class='endorm-token'[^>]*background:(#[0-9a-f]{6})", page)


def test_token_reward_figure(scored):
    ax = plot_token_rewards(scored)
    assert ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "</s>"


def test_tokens_html_shows_every_token_and_the_numbers(scored):
    page = tokens_html(scored)
    assert page.count("class='endorm-token'") == len(scored.tokens)
    assert "&lt;/s&gt;</span>" in page                                  # escaped
    text = _visible(page)
    assert signed(scored.total) in text
    for v in (scored.logprobs.tolist() + scored.values.tolist() + scored.rewards.tolist()):
        assert signed(v) in text                                        # the table has them all
    running = signed(float(scored.rewards.cumsum(0)[-1]))
    assert running in text
    # the telescoping line: α·(Σ log π̂) with the negative factor in parentheses, real minus
    loglik = float(scored.logprobs.sum())
    assert loglik < 0 and f"1·({MINUS}{abs(loglik):.3f})" in text
    assert not re.search(r"-\d", text), "a hyphen used as a minus sign"
    assert "·-" not in text and "·−" not in text


def test_number_formatting():
    assert signed(-53.4861) == f"{MINUS}53.486"
    assert signed(-0.0004) == "0.000"                  # no "−0.000"
    assert factor(-53.4861) == f"({MINUS}53.486)" and factor(2.5) == "2.500"
    assert term(9.1875) == "+ 9.188" and term(-9.1875) == f"{MINUS} 9.188"


def test_token_colour_does_not_depend_on_the_eos_reward(scored):
    """A scale relative to the response's largest |r̂| (the eos token, usually) would
    repaint every other token when eos's reward changes; the fixed scale must not."""
    louder = scored.rewards.clone()
    louder[-1] = 40.0
    quieter = scored.rewards.clone()
    quieter[-1] = 0.5
    before = _token_colours(tokens_html(dataclasses.replace(scored, rewards=quieter)))
    after = _token_colours(tokens_html(dataclasses.replace(scored, rewards=louder)))
    assert len(before) == len(scored.tokens)
    assert before[:-1] == after[:-1]
    assert before[-1] != after[-1]


def test_colour_scale_is_symmetric_diverging_clipped_and_readable():
    scale = ColourScale(limit=10.0)
    white = matplotlib.colors.to_rgb(scale.colours(0.0)[0])
    assert min(white) > 0.9                                               # 0 is neutral
    red = matplotlib.colors.to_rgb(scale.colours(-6.0)[0])
    blue = matplotlib.colors.to_rgb(scale.colours(6.0)[0])
    assert red[0] > red[2] and blue[2] > blue[0]                          # red < 0 < blue
    # symmetric: the same distance from white on both sides
    assert abs(_luminance(red) - _luminance(blue)) < 0.15
    assert scale.colours(100.0) == scale.colours(10.0)                    # clipped
    assert scale.colours(-100.0) == scale.colours(-10.0)
    assert scale.colours(-10.0)[1] == "#ffffff" and scale.colours(10.0)[1] == "#ffffff"
    assert scale.colours(0.5)[1] == "#000000"
    for r in [x / 2 for x in range(-24, 25)]:                             # WCAG AA everywhere
        bg, fg = scale.colours(r)
        lum_bg = _luminance(matplotlib.colors.to_rgb(bg))
        lum_fg = _luminance(matplotlib.colors.to_rgb(fg))
        hi, lo = max(lum_bg, lum_fg), min(lum_bg, lum_fg)
        assert (hi + 0.05) / (lo + 0.05) >= 4.5, (r, bg, fg)
    bar = _visible(scale.bar_html())
    assert f"{MINUS}10" in bar and "+10" in bar and "nats" in bar


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="limit"):
        ColourScale(limit=0)
    with pytest.raises(ValueError, match="cmap"):
        ColourScale(cmap="no-such-map")
    with pytest.raises(ValueError, match="alpha"):
        ExplorerConfig(alpha=10.0)
    with pytest.raises(ValueError, match="debounce_s"):
        ExplorerConfig(debounce_s=-1)


def test_comparison_names_the_preferred_response(tiny_tokenizer):
    model = make_gpt2(tiny_tokenizer)
    er = EndogenousReward(model, tiny_tokenizer, device="cpu")
    a, b = er.score("1+2", "3"), er.score("1+2", "33")
    text = _visible(comparison_html("1+2", a, b))
    assert signed(a.total) in text and signed(b.total) in text
    assert signed(a.total - b.total) in text
    preferred = "A" if a.total > b.total else "B"
    assert f"prefers {preferred}" in text
    assert f"prefers {'B' if preferred == 'A' else 'A'}" not in _visible(comparison_html(
        "1+2", a, b))
    swapped = _visible(comparison_html("1+2", b, a))
    assert f"prefers {'B' if preferred == 'A' else 'A'}" in swapped


def test_explorer_response_boxes_follow_the_prompt(tiny_tokenizer):
    model = make_gpt2(tiny_tokenizer)
    ex = reward_explorer(model, tiny_tokenizer, EXAMPLES)
    assert (ex.response_a.value, ex.response_b.value) == ("3", "33")
    first = ex.view.value
    assert first.count("class='endorm-token'") == 2 + 3                  # eos included
    ex.prompt.value = "2+2"
    assert (ex.response_a.value, ex.response_b.value) == ("4", "5")
    assert "2+2" in ex.view.value and ex.view.value != first
    ex.response_b.value = "22"                                             # an edit ...
    ex.prompt.value = "1+2"
    assert (ex.response_a.value, ex.response_b.value) == ("3", "33")
    ex.prompt.value = "2+2"
    assert ex.response_b.value == "22"                                     # ... is remembered
    assert EXAMPLES["2+2"] == ["4", "5"]                    # the caller's dict is not edited


def test_explorer_rescores_on_alpha_and_says_when_a_box_is_empty(tiny_tokenizer):
    model = make_gpt2(tiny_tokenizer)
    ex = reward_explorer(model, tiny_tokenizer, EXAMPLES)
    before = ex.view.value
    ex.alpha.value = 2.0
    assert "α = 2" in _visible(ex.view.value) and ex.view.value != before
    ex.response_a.value = ""
    assert "type a response" in ex.view.value and "endorm-verdict" not in ex.view.value


def test_explorer_debounces_rescoring_in_an_event_loop(tiny_tokenizer):
    model = make_gpt2(tiny_tokenizer)
    config = ExplorerConfig(debounce_s=0.05)
    ex = reward_explorer(model, tiny_tokenizer, EXAMPLES, config=config)
    start = ex.renders

    async def type_then_wait():
        for text in ("3", "3 ", "3 +", "3 + 0"):                          # one change a keystroke
            ex.response_a.value = text
        assert ex.renders == start                                         # nothing rescored yet
        for _ in range(200):
            if ex.renders > start:
                break
            await asyncio.sleep(0.02)

    asyncio.run(type_then_wait())
    assert ex.renders == start + 1
    assert ex.view.value.count("class='endorm-token'") == len("3 + 0") + 1 + 3   # the last text


def test_examples_must_be_prompt_to_two_responses(tiny_tokenizer):
    model = make_gpt2(tiny_tokenizer)
    with pytest.raises(ValueError, match="examples"):
        reward_explorer(model, tiny_tokenizer, ["1+2", "2+2"])
    with pytest.raises(ValueError, match=r"examples\['1\+2'\]"):
        reward_explorer(model, tiny_tokenizer, {"1+2": ["3"]})


def test_explorer_displays_as_widget_with_a_static_copy(tiny_tokenizer):
    model = make_gpt2(tiny_tokenizer)
    ex = reward_explorer(model, tiny_tokenizer, EXAMPLES)
    bundle = ex._repr_mimebundle_()
    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == ex.widget.model_id
    assert bundle["text/html"].startswith(SNAPSHOT_NOTE) and ex.static in bundle["text/html"]
    assert ex.view.value == ex.static + KEEP_KEYS     # the live view marks the dropdown
    assert "endorm-verdict" in bundle["text/html"] and "1+2" in bundle["text/plain"]


def test_the_html_parses_with_only_the_attributes_it_means(tiny_tokenizer):
    """A stray quote inside a style (``style='font-family:'DejaVu Sans'…'``) cuts the
    attribute short and turns the rest into junk attributes the browser ignores."""
    from html.parser import HTMLParser

    model = make_gpt2(tiny_tokenizer)
    page = reward_explorer(model, tiny_tokenizer, EXAMPLES)._repr_mimebundle_()["text/html"]
    seen = set()
    styles = []

    class Attributes(HTMLParser):
        def handle_starttag(self, tag, attrs):
            seen.update(name for name, _ in attrs)
            styles.extend(value for name, value in attrs if name == "style")

    Attributes().feed(page)
    assert seen <= {"class", "style", "data-reward", "data-h", "tabindex", "role", "aria-label",
                    "data-lm-suppress-shortcuts", "type", "download", "href"}, seen
    assert any("font-size:13px" in s for s in styles)


def test_each_token_has_its_details_its_row_a_sorted_row_and_a_csv_line(scored):
    """Hover, focus and click reach a token's numbers (CSS on data-h, no script); the
    table sorts by r̂ and exports the same numbers as CSV (issue 20)."""
    import csv
    import io
    from urllib.parse import unquote

    page = tokens_html(scored, label="A")
    T = len(scored.tokens)
    values = scored.values.tolist() + [0.0]                    # ended: V(s_{T+1}) = 0
    for h in range(1, T + 1):
        detail = re.search(rf"<div class='endorm-detail' data-h='{h}'>(.*?)</div>", page).group(1)
        text = _visible(detail)
        for v in (scored.logprobs[h - 1], values[h - 1], values[h], scored.rewards[h - 1],
                  scored.rewards[:h].sum()):
            assert signed(float(v)) in text, (h, text)
        assert f"[data-h='{h}']:hover) [data-h='{h}'].endorm-detail" in page   # hover
        assert f"[data-h='{h}']:is(:hover,:focus)) tr[data-h='{h}']" in page    # click marks the row
        assert page.count(f"<tr data-h='{h}'>") == 2                           # by h, by r̂
    assert page.count("tabindex='0'") == T                     # every token takes focus
    by_reward = re.search(r"<tbody class='endorm-by-reward'>(.*?)</tbody>", page).group(1)
    order = [int(h) for h in re.findall(r"<tr data-h='(\d+)'>", by_reward)]
    assert order == sorted(range(1, T + 1), key=lambda h: -scored.rewards[h - 1])
    href = re.search(r"download='rewards-A.csv' href='data:text/csv;charset=utf-8,([^']*)'",
                     page).group(1)
    assert unquote(href) == csv_text(scored)
    rows = list(csv.reader(io.StringIO(csv_text(scored))))
    assert rows[0][:2] == ["h", "token"] and [r[1] for r in rows[1:]] == scored.tokens
    assert float(rows[-1][-1]) == pytest.approx(scored.total, abs=1e-5)
    assert "max-height" not in page.split("endorm-table")[0].rsplit("<div", 1)[-1]


def test_long_tables_scroll_short_ones_show_every_row(scored):
    import torch
    from dataclasses import replace

    n = TABLE_ROWS + 1
    long = replace(scored, tokens=["x"] * n, logprobs=torch.zeros(n), values=torch.zeros(n),
                   rewards=torch.zeros(n), token_ids=[1] * n)
    assert "overflow-y:auto" in tokens_html(long) and "overflow-y:auto" not in tokens_html(scored)


def test_the_strip_breaks_between_words_only(scored):
    """Tokens of one word sit in one unbreakable group; a token starting with a space
    starts a new group."""
    from dataclasses import replace

    words = replace(scored, tokens=["Par", "is", " is", " the", " cap", "ital", "</s>"])
    strip = re.search(r"<div class='endorm-tokens'.*?</div>", tokens_html(words)).group(0)
    groups = re.findall(r"<span style='display:inline-flex;gap:2px;white-space:nowrap'>(.*?)"
                        r"</span>(?=<span style='display:inline-flex|</div>)", strip)
    assert [_visible(g) for g in groups] == ["Paris", " is", " the", " capital&lt;/s&gt;"]


def test_alpha_reads_the_same_in_the_header_the_sums_and_the_slider(tiny_tokenizer):
    model = make_gpt2(tiny_tokenizer)
    ex = reward_explorer(model, tiny_tokenizer, EXAMPLES)
    for value in (0.25, 0.5, 2.0, 4.0):
        ex.alpha.value = value
        assert ex.alpha.readout_format == ""    # d3's default, ~g to 12 digits (browser-tested)
        text = _visible(ex.view.value)
        assert f"α = {alpha_text(value)}" in text and f"= {alpha_text(value)}·(" in text
    assert alpha_text(2 ** 0.5) == "1.41421356237"              # d3's default shows the same

"""Figures carry labelled axes and the explorer renders every token with its reward."""
import matplotlib

matplotlib.use("Agg")

from conftest import make_gpt2
from endorm_mini.reward import EndogenousReward
from endorm_mini.viz import plot_token_rewards, reward_explorer, tokens_html


def test_token_reward_figure_and_html(tiny_tokenizer):
    model = make_gpt2(tiny_tokenizer)
    result = EndogenousReward(model, tiny_tokenizer, device="cpu").score("1+2", "3 <ok>")
    ax = plot_token_rewards(result)
    assert ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "</s>"
    page = tokens_html(result)
    assert page.count("<span") == len(result.tokens) and "&lt;/s&gt;</span>" in page  # escaped
    assert f"{result.total:.3f}" in page


def test_explorer_builds_widgets(tiny_tokenizer):
    model = make_gpt2(tiny_tokenizer)
    box = reward_explorer(model, tiny_tokenizer, ["1+2", "2+2"], ["3", "4"])
    prompt, response, alpha, out = box.children
    before = out.value
    response.value = "5"
    assert out.value != before and out.value.count("<span") == 2

"""The README's first command: `endorm-mini tour` runs offline and shows what it claims."""
import torch

from endorm_mini import models
from endorm_mini.commands import tour
from endorm_mini.chat import prompt_ids, response_ids
from endorm_mini.cli import main
from endorm_mini.commands.tour import run_tour


def log_likelihood_and_first_value(name, prompt, response):
    """``(log π̂(y | x), V(s_1))`` at α = 1, one plain forward per prefix."""
    model, tok = models.load(name, device="cpu")
    p, r = prompt_ids(tok, prompt), response_ids(tok, response)
    logp, v1 = 0.0, None
    for h, a in enumerate(r):
        with torch.no_grad():
            f = model(torch.tensor([p + r[:h]])).logits[0, -1].double()
        if h == 0:
            v1 = float(torch.logsumexp(f, -1))
        logp += float(torch.log_softmax(f, -1)[a])
    return logp, v1


def test_tour_shows_the_identity_a_judge_and_the_greedy_gap(tmp_path, capsys):
    figures = run_tour(tmp_path, n_per_domain=4)
    out = capsys.readouterr().out
    # The telescoping total (eq. 12 summed) against log π̂ + V(s_1) computed on its own, not
    # from the scorer's per-token numbers (which the tour's printed check uses).
    logp, v1 = log_likelihood_and_first_value("tiny-domains", tour.PROMPT, tour.GOOD)
    assert abs(figures["total"] - (logp + v1)) < 1e-4 and "(equal)" in out
    assert figures["figure"].stat().st_size > 10_000
    assert figures["overall"] > 0.75                       # a judge nobody trained
    matrix = figures["diagonal"]
    assert all(matrix[i, i] == matrix[i].max() for i in range(len(matrix)))
    assert figures["greedy"] >= 0.95 and figures["sampled"] < figures["greedy"] - 0.15


def test_cli_lists_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("tour", "score", "zoo", "grade", "build-lessons"):
        assert command in out


def test_score_command_prints_the_table(capsys):
    assert main(["score", "--model", "tiny-domains", "--prompt", "What is 2+2?", "--response", "4"]) == 0
    out = capsys.readouterr().out
    assert "'</s>'" in out and "total Σ r̂" in out


def test_score_command_compares_responses(capsys):
    args = ["score", "--model", "tiny-domains", "--prompt", "What is the capital of France?"]
    assert main(args + ["--response", "Paris.", "--response", "Lyon."]) == 0
    out = capsys.readouterr().out
    assert "the endogenous reward prefers 'Paris.'" in out and "'</s>'" not in out   # no tables by default
    assert main(args + ["--response", "Paris.", "--response", "Paris.", "--table"]) == 0
    out = capsys.readouterr().out
    assert "the reward ties" in out and out.count("'</s>'") == 2


def test_score_command_rejects_bad_input(capsys):
    assert main(["score", "--model", "tiny-nope", "--prompt", "x", "--response", "y"]) == 2
    assert "unknown zoo model" in capsys.readouterr().err
    assert main(["score", "--model", "tiny-domains", "--prompt", "x", "--response", ""]) == 2
    assert "empty response" in capsys.readouterr().err

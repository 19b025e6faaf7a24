"""``endorm-mini grpo --model smollm2-135m``: a real BPE chat model through the command, as
policy and endogenous reward, on ``digit-sums`` (its greedy accuracy there is about a third
with 16 tokens: benchmarks/grpo_real.py). A 2-step smoke run, not a result: the benchmark
measures before and after.

The model comes from the cache ``.ci/run`` fills (``endorm-mini zoo fetch smollm2-135m``).
Without it the test skips, saying so; under ``CI=true`` it never skips (``models.load``
fetches the model, or the test fails).
"""
import csv
import json
import os

import pytest

from endorm_mini import fetch
from endorm_mini.cli import main
from endorm_mini.scale import grpo_data

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def smollm2_cached():
    if fetch.cached("smollm2-135m") is None and os.environ.get("CI") != "true":
        pytest.skip("smollm2-135m is not in the cache: run `endorm-mini zoo fetch smollm2-135m` "
                    "(CI=true fetches it instead of skipping)")


def test_digit_sums_are_the_81_sums_of_two_digits_with_their_answers():
    rows = grpo_data.digit_sum_rows()
    assert len(rows) == 81 == len({r["prompt"] for r in rows})
    for row in rows:
        a, b = row["prompt"].removeprefix("What is ").removesuffix("?").split(" + ")
        assert row["answer"] == str(int(a) + int(b))
    assert grpo_data.load_rows("digit-sums", "prompt", "answer") == rows   # one fixed order


def test_two_grpo_steps_with_smollm2_as_policy_and_reward(smollm2_cached, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["grpo", "--model", "smollm2-135m", "--dataset", "digit-sums",
                 "--reward", "hybrid", "--steps", "2", "--prompts-per-step", "2",
                 "--num-generations", "2", "--max-completion-length", "8",
                 "--learning-rate", "1e-6", "--eval-problems", "2", "--eval-samples", "1",
                 "--save-every", "100", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["model"] == "smollm2-135m"
    assert summary["eval_problems"] == 2
    for key in ("base_accuracy", "accuracy", "base_greedy_accuracy", "greedy_accuracy"):
        assert 0.0 <= summary[key] <= 1.0, (key, summary)
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2]
    for row in rows:   # eq. 12's total of the reference is a log-likelihood plus V(s_1): finite
        endogenous, accuracy = float(row["endogenous"]), float(row["accuracy"])
        assert endogenous == endogenous and abs(endogenous) < 1e4
        assert accuracy in (0.0, 0.25, 0.5, 0.75, 1.0)   # 4 rollouts a step, each 0 or 1
        assert 1 <= float(row["completion_length"]) <= 8
    assert (out / "final" / "config.json").exists()
    assert "held-out accuracy on 2 problems" in printed.out

"""The real model, SmolLM2-135M-Instruct (``models.load("smollm2-135m")``), through the kit.

- Its endogenous rewards equal an independent recomputation from its logits through its own
  chat template (eq. 12): one plain forward over the template-rendered prompt + response +
  eos, ``log_softmax`` in float64, ``total = α Σ log π̂ + V(s_1)``.
- The real-mini table is reproducible (two runs, byte-identical summaries) and is what
  ``rmbench.score`` gives on the rewards the run wrote to ``rewards.jsonl``.

The model comes from the cache ``.ci/run`` fills (``endorm-mini zoo fetch smollm2-135m``);
without it the tests fetch it once, or skip under ``ENDORM_MINI_SKIP_DOWNLOAD``.
"""
import json
import os

import pytest
import torch

from endorm_mini import fetch, models
from endorm_mini.bench import rmbench
from endorm_mini.cli import main
from endorm_mini.reward import EndogenousReward
from endorm_mini.worlds.real_mini import PATH as REAL_MINI

# Two prompts (one with a system prompt of our own, one with the template's default) and
# responses of different lengths, so the batch is padded.
CASES = [
    ("What is the capital of France?", None,
     ["The capital of France is Paris.", "The capital of France is Lyon, on the Rhône."]),
    ("Write a Python expression for the square of x.", "You are a terse coding assistant.",
     ["`x ** 2`", "You can write `x * x`, or equivalently `x ** 2`, which squares x."]),
]
LIMIT_PER_DOMAIN = 1  # 4 items, 24 responses: about 15 s a run on one CPU thread


@pytest.fixture(scope="module")
def smollm2():
    if fetch.cached("smollm2-135m") is None and os.environ.get("ENDORM_MINI_SKIP_DOWNLOAD"):
        pytest.skip("no fetched smollm2-135m and ENDORM_MINI_SKIP_DOWNLOAD is set")
    return models.load("smollm2-135m", device="cpu")


def reference(model, tokenizer, prompt, system, response, alpha):
    """``(token ids, log π̂ per response token, V(s_1), total)`` without the kit's code: the
    whole conversation rendered by the model's own template, one forward, float64."""
    messages = ([{"role": "system", "content": system}] if system is not None else []) + \
        [{"role": "user", "content": prompt}]
    head = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    whole = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}],
                                          tokenize=False)
    assert whole.startswith(head + response + tokenizer.eos_token), whole  # ChatML: <|im_end|>
    n_head = len(tokenizer(head, add_special_tokens=False)["input_ids"])
    ids = tokenizer(head + response + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id == 2
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double() / alpha   # [L, V]
    logp = torch.log_softmax(logits[n_head - 1:-1], -1)                          # states s_1 … s_T
    actions = torch.tensor(ids[n_head:])
    logprobs = logp.gather(-1, actions[:, None])[:, 0]                             # [T]
    v1 = alpha * torch.logsumexp(logits[n_head - 1], -1)
    return ids[n_head:], logprobs, float(v1), float(alpha * logprobs.sum() + v1)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_scores_equal_a_recomputation_from_its_logits(smollm2, alpha):
    model, tokenizer = smollm2
    reward = EndogenousReward(model, tokenizer, alpha=alpha, device="cpu")
    for prompt, system, responses in CASES:
        results = reward.score_batch([prompt] * len(responses), responses, system=system,
                                     progress=False)
        for response, got in zip(responses, results):
            ids, logprobs, v1, total = reference(model, tokenizer, prompt, system, response, alpha)
            assert got.token_ids == ids and got.ended and got.final_value == 0.0
            assert got.logprobs.double() == pytest.approx(logprobs, abs=2e-4), response
            assert got.values[0] == pytest.approx(v1, abs=2e-4)
            assert got.total == pytest.approx(total, abs=2e-3)
            # eq. 12 telescoped: the per-token rewards sum to α Σ log π̂ + V(s_1)
            assert float(got.rewards.double().sum()) == pytest.approx(total, abs=2e-3)


def test_the_right_answer_scores_higher(smollm2):
    model, tokenizer = smollm2
    paris, lyon = EndogenousReward(model, tokenizer, device="cpu").score_batch(
        [CASES[0][0]] * 2, CASES[0][2], progress=False)
    assert paris.total > lyon.total + 5   # 10.6 nats measured


def run_real_mini(out):
    assert main(["rmbench", "--model", "smollm2-135m", "--data", "real-mini", "--device", "cpu",
                 "--limit-per-domain", str(LIMIT_PER_DOMAIN), "--out", str(out),
                 "--no-progress"]) == 0
    return out / f"summary-limit-per-domain-{LIMIT_PER_DOMAIN}.json"


def test_real_mini_table_is_reproducible_and_recomputable(smollm2, tmp_path, capsys):
    first, second = run_real_mini(tmp_path / "a"), run_real_mini(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    assert (tmp_path / "a" / "rewards.jsonl").read_bytes() == \
        (tmp_path / "b" / "rewards.jsonl").read_bytes()

    summary = json.loads(first.read_text())
    records = [json.loads(line) for line in
               (tmp_path / "a" / "rewards.jsonl").read_text().splitlines()]
    assert len(records) == summary["n_items"] == 4 * LIMIT_PER_DOMAIN
    assert summary["scores"] == rmbench.score(records, records)
    assert summary["run"]["model"] == "smollm2-135m" and summary["run"]["method"] == "endogenous"

    # The rewards are the model's: one item's six totals, scored here without the runner.
    model, tokenizer = smollm2
    item = next(it for it in rmbench.load(REAL_MINI) if it["id"] == records[0]["id"])
    responses = item["chosen"] + item["rejected"]
    results = EndogenousReward(model, tokenizer, device="cpu").score_batch(
        [item["prompt"]] * 6, responses, progress=False)
    assert records[0]["chosen"] + records[0]["rejected"] == \
        pytest.approx([r.total for r in results], abs=1e-3)

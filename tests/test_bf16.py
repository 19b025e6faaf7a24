"""bf16 models: their logits are bf16, but every log-sum-exp, log-probability and total
must be fp32 arithmetic on those logits (eq. 10–12). A bf16 log-sum-exp moves a value by up
to half a bf16 step (0.03 at V ≈ 9) per token, and a total by tenths of a nat."""
import copy

import pytest
import torch

from conftest import make_gpt2
from endorm_mini import models
from endorm_mini.bench.bradley_terry import BradleyTerryRM
from endorm_mini.chat import prompt_ids, response_ids
from endorm_mini.reward import EndogenousReward

PROMPT = "What is the capital of France?"
RESPONSES = ["Paris.", "It is Lyon, I think, or maybe Paris; hard to say."]


def fp32_on_bf16_logits(model, tokenizer, response, alpha):
    """Reference: the bf16 model's own full-forward logits, then everything in fp64."""
    p, r = prompt_ids(tokenizer, PROMPT), response_ids(tokenizer, response)
    with torch.no_grad():
        f = model(torch.tensor([p + r])).logits[0, len(p) - 1:].double()    # [T+1, V], bf16 values
    values = alpha * torch.logsumexp(f / alpha, -1)
    values[-1] = 0.0                                                       # after eos
    q = f[:-1].gather(-1, torch.tensor(r)[:, None])[:, 0]
    return values[:-1], q - values[1:]


@pytest.fixture(scope="module")
def bf16_domains():
    model, tok = models.load("tiny-domains", device="cpu")   # trained: values ≈ 9–14, as in real LMs
    return model.to(torch.bfloat16), tok


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_a_bf16_model_is_scored_in_fp32(bf16_domains, alpha):
    model, tok = bf16_domains
    er = EndogenousReward(model, tok, alpha=alpha, device="cpu", chunk_size=8)
    results = er.score_batch([PROMPT] * 2, RESPONSES, progress=False)
    assert er._plain_head is True                          # the shortcut's bf16 matmul, checked
    for response, res in zip(RESPONSES, results):
        values, rewards = fp32_on_bf16_logits(model, tok, response, alpha)
        assert res.values.dtype == res.rewards.dtype == torch.float32
        torch.testing.assert_close(res.values.double(), values, atol=1e-3, rtol=0)
        torch.testing.assert_close(res.rewards.double(), rewards, atol=1e-3, rtol=0)
        assert res.total == pytest.approx(float(rewards.sum()), abs=5e-3)


def test_bradley_terry_scores_of_a_bf16_model_are_its_fp32_scores(tiny_tokenizer):
    """R(x, y) = w·h(x ⊕ y)[eos] + b: a bf16 backbone gives the scores an fp32 one gives,
    read one sequence at a time (no padding), up to bf16 rounding of h."""
    model = make_gpt2(tiny_tokenizer, seed=5)
    rm = BradleyTerryRM(copy.deepcopy(model).to(torch.bfloat16), tiny_tokenizer)
    torch.nn.init.normal_(rm.head.weight, generator=torch.Generator().manual_seed(0))
    responses = RESPONSES + ["Rome.", "Paris, of course!"]     # different lengths: padding
    scores = rm(PROMPT, responses)
    expected = []
    for response in responses:
        ids = prompt_ids(tiny_tokenizer, PROMPT) + response_ids(tiny_tokenizer, response)
        with torch.no_grad():
            hidden = model.get_decoder()(input_ids=torch.tensor([ids])).last_hidden_state
            h = hidden[0, -1]                                       # fp32, at eos
            expected.append(float(rm.head(h)))
    spread = max(expected) - min(expected)
    assert spread > 1.0                                     # scores that differ, to be told apart
    assert scores == pytest.approx(expected, abs=0.01 * spread)   # measured 0.002

"""limits.sequence_modes on a causal LM whose greedy decoding is NOT the sequence mode
(docs/paper.md §6: the β → 0 end point of RL on the endogenous reward is argmax_τ π̂(τ), which greedy
decoding only approximates). tests/test_limits.py's model has greedy = mode on every prompt,
so a "mode" that is really greedy decoding passes there."""
import math

import pytest
import torch

from conftest import lm_distribution, make_gpt2
from endorm_mini import limits
from endorm_mini.zoo import char_tokenizer

PROMPTS = ["ab", "b", "abba"]


def test_sequence_modes_where_greedy_decoding_is_not_the_mode():
    tok = char_tokenizer("ab")
    model = make_gpt2(tok, seed=1)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(3)   # greedy: 3 words, p ≈ 0.054; the mode: eos, p ≈ 0.07
    modes = limits.sequence_modes(model, tok, PROMPTS, max_new_tokens=3, device="cpu")
    greedy = limits._search(model, tok, PROMPTS, None, 3, None, 1024, "cpu", greedy=True)
    for prompt, (text, logp), g in zip(PROMPTS, modes, greedy):
        dist = lm_distribution(model, tok, prompt, 3)
        best = max(dist, key=dist.get)
        assert g.token_ids[0] != best                                  # the case this test is for
        assert float(g.logprobs[0]) < math.log(dist[best]) - 0.05
        assert logp == pytest.approx(math.log(dist[best]), abs=1e-4)
        words = [t for t in best if t != tok.eos_token_id]
        assert text == tok.decode(words, skip_special_tokens=True)

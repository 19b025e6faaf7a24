"""The endogenous reward's contract (README) on real HF models: tiny GPT-2 and Llama."""
import pytest
import torch

from conftest import make_gpt2, make_llama
from endorm_mini.chat import prompt_ids, response_ids
from endorm_mini.reward import EndogenousReward, endogenous_rewards, soft_value

PROMPT, RESPONSES = "What is 12+7?", ["19", "It is 20, I think.", "nineteen!"]


def naive_rewards(model, tokenizer, prompt, response, alpha, system=None):
    """Reference: one full forward, full fp32 log-softmax at every position (eq. 10–12)."""
    p, r = prompt_ids(tokenizer, prompt, system), response_ids(tokenizer, response)
    with torch.no_grad():
        f = model(torch.tensor([p + r])).logits[0, len(p) - 1:].float()   # [T+1, V]
    values = alpha * torch.logsumexp(f / alpha, -1)
    values[-1] = 0.0                                                     # after eos: terminal
    actions = torch.tensor(r)
    logprobs = torch.log_softmax(f[:-1] / alpha, -1).gather(-1, actions[:, None])[:, 0]
    rewards = f[:-1].gather(-1, actions[:, None])[:, 0] - values[1:]
    return logprobs, values[:-1], rewards


def prefix_by_prefix(model, tokenizer, prompt, response, alpha, system=None):
    """``(α log π̂(y | x), V(s_1))``, one forward per prefix: no batch, no chunks, no slicing."""
    p, r = prompt_ids(tokenizer, prompt, system), response_ids(tokenizer, response)
    logp, v1 = 0.0, None
    for h, a in enumerate(r):
        with torch.no_grad():
            f = model(torch.tensor([p + r[:h]])).logits[0, -1].double()      # f̂(s_h, ·)
        if h == 0:
            v1 = alpha * float(torch.logsumexp(f / alpha, -1))
        logp += float(torch.log_softmax(f / alpha, -1)[a])
    return alpha * logp, v1


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_total_telescopes(tiny_model, tiny_tokenizer, alpha):
    """Σ_h r̂ = α log π̂(y | x) + V(s_1) (eq. 12 summed, V = 0 after eos), the right side
    computed on its own, prefix by prefix (not from the scorer's log π̂ and V)."""
    er = EndogenousReward(tiny_model, tiny_tokenizer, alpha=alpha, device="cpu", chunk_size=3)
    for response in RESPONSES:
        res = er.score(PROMPT, response, system="You are terse.")
        assert res.ended and res.final_value == 0.0
        alpha_logp, v1 = prefix_by_prefix(tiny_model, tiny_tokenizer, PROMPT, response, alpha,
                                          "You are terse.")
        assert res.total == pytest.approx(alpha_logp + v1, abs=1e-4)
        assert abs(v1) > 1.0 and abs(alpha_logp) > 1.0       # neither term could go missing unseen


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_matches_full_forward_and_scores_only_the_response(tiny_model, tiny_tokenizer, alpha):
    er = EndogenousReward(tiny_model, tiny_tokenizer, alpha=alpha, device="cpu", chunk_size=3)
    res = er.score(PROMPT, RESPONSES[1], system="sys")
    logprobs, values, rewards = naive_rewards(tiny_model, tiny_tokenizer, PROMPT, RESPONSES[1], alpha, "sys")
    # Rewards only for response tokens, eos included; no prompt token is scored.
    assert res.token_ids == response_ids(tiny_tokenizer, RESPONSES[1])
    assert res.token_ids[-1] == tiny_tokenizer.eos_token_id and len(res.rewards) == len(RESPONSES[1]) + 1
    torch.testing.assert_close(res.logprobs, logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.values, values, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.rewards, rewards, atol=1e-5, rtol=0)


def test_a_wrong_shaping_is_caught(tiny_tokenizer):
    """The parity check above can fail: V(s_h) in place of V(s_{h+1}), from the model's own
    logits (not from the scorer's output), gives other rewards and another total."""
    model = make_llama(tiny_tokenizer)
    res = EndogenousReward(model, tiny_tokenizer, device="cpu").score(PROMPT, RESPONSES[1])
    p, r = prompt_ids(tiny_tokenizer, PROMPT), response_ids(tiny_tokenizer, RESPONSES[1])
    with torch.no_grad():
        f = model(torch.tensor([p + r])).logits[0, len(p) - 1:-1].double()   # [T, V] at s_1 … s_T
    q = f.gather(-1, torch.tensor(r)[:, None])[:, 0]                          # f̂(s_h, a_h)
    wrong = (q - torch.logsumexp(f, -1)).float()                  # f̂(s_h, a_h) − V(s_h)
    assert not torch.allclose(wrong, res.rewards, atol=1e-3)
    assert abs(float(wrong.sum()) - res.total) > 1e-2


def test_per_state_constant_changes_tokens_not_differences(tiny_tokenizer):
    """Logits are a soft-Q only up to a per-state constant c(s): per-token rewards move,
    but the difference of totals between two responses to the same prompt does not."""
    model = make_llama(tiny_tokenizer, tie=False)
    before = EndogenousReward(model, tiny_tokenizer, device="cpu").score_batch(
        [PROMPT] * 2, RESPONSES[:2], progress=False)
    # f'(s, a) = f(s, a) + w·h(s) for every a: add the same row w to every lm_head row.
    torch.manual_seed(1)
    with torch.no_grad():
        model.lm_head.weight += torch.randn(1, model.config.hidden_size)
    after = EndogenousReward(model, tiny_tokenizer, device="cpu").score_batch(
        [PROMPT] * 2, RESPONSES[:2], progress=False)
    assert not torch.allclose(before[0].rewards, after[0].rewards, atol=1e-2)
    torch.testing.assert_close(before[0].logprobs, after[0].logprobs, atol=1e-4, rtol=0)
    diff_before = before[0].total - before[1].total
    diff_after = after[0].total - after[1].total
    assert diff_after == pytest.approx(diff_before, abs=1e-3)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batched_equals_one_by_one(tiny_model, tiny_tokenizer, padding_side):
    tiny_tokenizer.padding_side = padding_side
    prompts = [PROMPT, "hi", [{"role": "user", "content": "a long question, really long"}]]
    one = EndogenousReward(tiny_model, tiny_tokenizer, device="cpu", batch_tokens=1)
    many = EndogenousReward(tiny_model, tiny_tokenizer, device="cpu", batch_tokens=10_000)
    singles = one.score_batch(prompts, RESPONSES, progress=False)
    batched = many.score_batch(prompts, RESPONSES, progress=False)
    for s, b in zip(singles, batched):
        assert s.token_ids == b.token_ids
        torch.testing.assert_close(s.rewards, b.rewards, atol=1e-5, rtol=0)
        assert s.total == pytest.approx(b.total, abs=1e-5)


def test_tensor_function_agrees_with_the_scorer(tiny_tokenizer):
    """``endogenous_rewards`` on a right-padded batch (used by PPO) equals the scorer."""
    model = make_gpt2(tiny_tokenizer)
    p = prompt_ids(tiny_tokenizer, PROMPT)
    rs = [response_ids(tiny_tokenizer, RESPONSES[0]), response_ids(tiny_tokenizer, RESPONSES[1])[:-1]]
    T = max(map(len, rs))
    actions = torch.zeros(2, T, dtype=torch.long)
    mask = torch.zeros(2, T, dtype=torch.bool)
    logits = torch.zeros(2, T + 1, len(tiny_tokenizer))
    for b, r in enumerate(rs):
        with torch.no_grad():
            f = model(torch.tensor([p + r])).logits[0, len(p) - 1:]
        logits[b, :len(r) + 1], actions[b, :len(r)], mask[b, :len(r)] = f, torch.tensor(r), True
    terminal = torch.tensor([True, False])
    logprobs, values, rewards = endogenous_rewards(logits, actions, 1.0, terminal=terminal, mask=mask)
    scored = EndogenousReward(model, tiny_tokenizer, device="cpu").score_ids([p, p], rs, progress=False)
    assert scored[0].ended and not scored[1].ended
    for b, res in enumerate(scored):
        n = len(rs[b])
        torch.testing.assert_close(rewards[b, :n], res.rewards, atol=1e-5, rtol=0)
        torch.testing.assert_close(logprobs[b, :n], res.logprobs, atol=1e-5, rtol=0)
        assert float(values[b, n]) == pytest.approx(res.final_value, abs=1e-5)
        assert float(rewards[b, n:].abs().sum()) == 0.0
    # A cut response keeps the value of the state it stops in (no terminal zero).
    cut = scored[1]
    assert cut.final_value != 0.0
    assert cut.total == pytest.approx(float(cut.logprobs.sum()) + float(cut.values[0]) - cut.final_value, abs=1e-4)


def test_soft_value_is_alpha_logsumexp():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    expected = 0.5 * torch.log(torch.exp(torch.tensor([0.0, 2.0, 4.0])).sum())
    assert float(soft_value(logits, 0.5)) == pytest.approx(float(expected), abs=1e-6)


def test_bad_input(tiny_tokenizer):
    model = make_gpt2(tiny_tokenizer, n_positions=32)
    er = EndogenousReward(model, tiny_tokenizer, device="cpu")
    with pytest.raises(ValueError, match="empty response"):
        er.score(PROMPT, "")
    with pytest.raises(ValueError, match="context of 32"):
        er.score(PROMPT, "x" * 40)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        er.score_batch([PROMPT, PROMPT], ["a"])
    with pytest.raises(ValueError, match="alpha"):
        EndogenousReward(model, tiny_tokenizer, alpha=0.0)
    with torch.no_grad():
        model.transformer.ln_f.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        er.score(PROMPT, "19")


def test_tokenizer_without_pad_token_gets_one(tiny_tokenizer):
    from endorm_mini.zoo import char_tokenizer
    tok = char_tokenizer()
    tok.pad_token = None
    with pytest.warns(UserWarning, match="pad"):
        er = EndogenousReward(make_gpt2(tiny_tokenizer), tok, device="cpu")
    assert tok.pad_token_id == tok.eos_token_id
    assert len(er.score_batch([PROMPT] * 2, RESPONSES[:2], progress=False)) == 2

"""endorm_mini.limits: the §6 optima against brute force, exact mode search against full
enumeration (a toy policy and a real causal LM), the biased demonstrator's statistics, the
layer-subset student, and the grid world's endogenous reward."""
import math

import pytest
import torch
from conftest import lm_distribution, make_gpt2, make_llama

from endorm_mini import limits, walks, worlds
from endorm_mini.chat import prompt_ids
from endorm_mini.mdp import TokenMDP, response_distribution
from endorm_mini.zoo import char_tokenizer


# ---------------------------------------------------------------- §6 optima
def objective(pi, logp_hat, alpha, beta, kind):
    """E_π[r̂] − β KL(π‖π̂) (kind "kl") or E_π[r̂] + β H(π) (kind "entropy"), r̂ = α log π̂ (V(s_1) dropped)."""
    expected = (pi * alpha * logp_hat).sum()
    log_pi = pi.clamp_min(1e-300).log()
    return expected - beta * (pi * (log_pi - logp_hat)).sum() if kind == "kl" else expected - beta * (pi * log_pi).sum()


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.5), (2.0, 1.0), (0.5, 2.0)])
def test_kl_and_entropy_optima_beat_every_perturbation(alpha, beta):
    g = torch.Generator().manual_seed(0)
    logp_hat = torch.log_softmax(2 * torch.randn(12, generator=g, dtype=torch.float64), -1)
    for kind, fn, wrong in (("kl", limits.kl_optimum, limits.entropy_optimum),
                            ("entropy", limits.entropy_optimum, limits.kl_optimum)):
        best = fn(logp_hat, alpha, beta).exp()
        assert best.sum().item() == pytest.approx(1.0)
        top = objective(best, logp_hat, alpha, beta, kind)
        for _ in range(20):
            noise = torch.softmax(torch.randn(12, generator=g, dtype=torch.float64), -1)
            other = 0.9 * best + 0.1 * noise
            assert objective(other, logp_hat, alpha, beta, kind) < top
        # the other regulariser's answer is not the optimum (the check can fail)
        assert objective(wrong(logp_hat, alpha, beta).exp(), logp_hat, alpha, beta, kind) < top - 1e-6


def test_entropy_bonus_alpha_returns_the_model_and_small_beta_is_the_mode():
    logp_hat = torch.log_softmax(torch.tensor([1.0, 2.0, 0.5, 1.9], dtype=torch.float64), -1)
    torch.testing.assert_close(limits.entropy_optimum(logp_hat, 0.7, 0.7), logp_hat)
    assert limits.kl_optimum(logp_hat, 1.0, 0.001).exp()[1].item() > 0.99
    with pytest.raises(ValueError, match="beta"):
        limits.kl_optimum(logp_hat, 1.0, 0.0)


def test_sharpened_accuracy_and_verifier_margin_by_hand():
    inf = math.inf
    logp = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.4, 0.0], [0.9, 0.1, 0.0]], dtype=torch.float64))
    correct = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])
    assert limits.sharpened_accuracy(logp, correct, 1.0) == pytest.approx((0.3 + 0.6 + 0) / 3)
    sq = (0.09 / (0.25 + 0.09 + 0.04) + 0.36 / (0.36 + 0.16)) / 3
    assert limits.sharpened_accuracy(logp, correct, 2.0) == pytest.approx(sq)
    assert limits.sharpened_accuracy(logp, correct, 1e4) == pytest.approx(1 / 3)   # only the second prompt's mode is right
    assert limits.sharpened_accuracy(logp, correct, math.inf) == pytest.approx(1 / 3)
    margin = limits.verifier_margin(logp, correct, alpha=2.0)
    torch.testing.assert_close(margin, torch.tensor([2 * math.log(0.5 / 0.3), 2 * math.log(0.4 / 0.6), inf],
                                                    dtype=torch.float64))
    # c > margin ⇔ the hybrid reward's best listed response is correct (brute force)
    for c in (0.5, 1.1, 3.0):
        best = (2.0 * logp + c * correct).argmax(-1)
        assert torch.equal(correct.gather(1, best[:, None]).squeeze(1), margin < c)
    with pytest.raises(ValueError, match="power"):
        limits.sharpened_accuracy(logp, correct, 0.0)
    with pytest.raises(ValueError, match=r"\[N, R\]"):
        limits.verifier_margin(logp, correct[:, :2])


# ---------------------------------------------------------------- exact mode search
def test_best_first_mode_is_the_argmax_of_the_full_distribution():
    tm = TokenMDP(vocab_size=4, eos=0, horizon=4)
    greedy_wrong = 0
    for seed in range(25):
        policy = limits.random_policy(4, seed, scale=1.0)
        dist = response_distribution(tm, policy)
        mode = max(dist, key=dist.get)
        found, p = limits.best_first_mode(tm, policy)
        assert found == mode and p == pytest.approx(dist[mode], rel=1e-9)
        greedy, p_greedy = limits.greedy_response(tm, policy)
        assert p_greedy == pytest.approx(dist[greedy], rel=1e-9) and p_greedy <= p + 1e-12
        greedy_wrong += greedy != mode
    assert greedy_wrong >= 3   # greedy decoding is a different answer on these trees: the test can fail


@pytest.fixture(scope="module")
def lm_case():
    tok = char_tokenizer("ab")
    model = make_gpt2(tok, seed=1)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(6)   # a peaked model: a few likely responses
    return model, tok


def test_enumeration_and_modes_match_brute_force_on_a_real_lm(lm_case):
    model, tok = lm_case
    prompts = ["ab", "b", "abba"]                   # different lengths: left padding must be right
    found = limits.enumerate_responses(model, tok, prompts, min_prob=0.01, max_new_tokens=3, device="cpu")
    modes = limits.sequence_modes(model, tok, prompts, max_new_tokens=3, device="cpu")
    for prompt, r, (mode_text, mode_lp) in zip(prompts, found, modes):
        dist = lm_distribution(model, tok, prompt, 3)
        above = {t: p for t, p in dist.items() if p >= 0.01}
        assert {ids: p for ids, p in zip(r.token_ids, r.logprobs.exp().tolist())} == pytest.approx(above, rel=1e-4)
        assert r.logprobs.tolist() == sorted(r.logprobs.tolist(), reverse=True)
        best = max(dist, key=dist.get)
        assert mode_lp == pytest.approx(math.log(dist[best]), abs=1e-4)
        assert mode_text == tok.decode([t for t in best if t != tok.eos_token_id], skip_special_tokens=True)
        assert r.mass == pytest.approx(sum(above.values()), rel=1e-4)
    logp, correct = limits.response_table(found, prompts, lambda p, t: t == "a")
    assert logp.shape == correct.shape == (3, max(len(r.texts) for r in found))
    assert correct.any() and torch.isinf(logp[~correct & (logp == -math.inf)]).all()
    with pytest.raises(ValueError, match="min_prob"):
        limits.enumerate_responses(model, tok, prompts, min_prob=0.0)


# ---------------------------------------------------------------- the biased demonstrator
def test_carry_slip_demos_forget_the_carry_more_often_than_not():
    assert limits.has_carry("7+5") and limits.has_carry("19+1") and not limits.has_carry("12+7")
    demos = limits.carry_slip_demos(8000, p_correct=0.3, p_forgot=0.6, seed=0)
    plain = worlds.arith_demos(8000, 0.6, seed=0)
    carry = [(d, worlds.arith_answer(d.prompt)) for d in demos if limits.has_carry(d.prompt)]
    assert 0.4 < len(carry) / len(demos) < 0.5
    forgot = sum(d.response == str(c - 10) for d, c in carry) / len(carry)
    right = sum(d.response == str(c) for d, c in carry) / len(carry)
    assert forgot == pytest.approx(0.6 + 0.1 / 6, abs=0.03) and right == pytest.approx(0.3, abs=0.03)
    assert all(a == b for a, b in zip(demos, plain) if not limits.has_carry(a.prompt))
    with pytest.raises(ValueError, match="p_forgot"):
        limits.carry_slip_demos(10, p_correct=0.6, p_forgot=0.6)


# ---------------------------------------------------------------- layer-subset student
@pytest.mark.parametrize("maker", [make_gpt2, make_llama])
def test_layer_subset_student(maker):
    tok = char_tokenizer("ab")
    teacher = maker(tok, seed=2)
    ids = torch.tensor([prompt_ids(tok, "abab")])
    with torch.no_grad():
        same = limits.layer_subset_student(teacher, (0, 1))(input_ids=ids).logits
        torch.testing.assert_close(same, teacher(input_ids=ids).logits)
        student = limits.layer_subset_student(teacher, (1,))
        owner, name = limits._layer_list(teacher)
        assert student.config.num_hidden_layers == 1 and len(getattr(owner, name)) == 2   # teacher untouched
        assert not torch.allclose(student(input_ids=ids).logits, same, atol=1e-3)
        # the renumbered layer works with a KV cache: cached greedy = uncached greedy
        out = student.generate(input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
        x = ids
        for _ in range(4):
            x = torch.cat([x, student(input_ids=x).logits[:, -1:].argmax(-1)], 1)
    assert torch.equal(out, x)
    with pytest.raises(ValueError, match="keep"):
        limits.layer_subset_student(teacher, (2,))


# ---------------------------------------------------------------- the grid world (endorm_mini.walks)
def test_walk_rules_and_expert_walks():
    E = walks.END
    assert sorted(walks.neighbours(0)) == [1, 5] and len(walks.neighbours(12)) == 4
    assert walks.walk_return([18, 23, 24, E]) == -2.0
    assert walks.walk_return([18, 19, 24, 19, 24, E]) == -4.0
    assert walks.walk_return([18, 24, E]) == -11.0           # a diagonal jump is not a move
    assert walks.walk_return([18, 23, E]) == -11.0           # stopped short of the goal
    assert walks.walk_return([18, 23, 24]) == -12.0          # never said END
    expert = walks.grid_walks(300, skill=0.8, seed=3)
    assert len(expert) > 250
    for w in expert:
        assert w[-1] == E and w[-2] == walks.GOAL and walks.walk_return(w) == -(len(w) - 2)
        assert len(w) - 2 >= walks.distance(w[0])
    for kind, pairs in walks.walk_pairs(30, seed=1).items():
        assert all(walks.walk_return(g) > walks.walk_return(b) for g, b in pairs), kind


def test_sequence_returns_telescope_and_a_shifted_slice_is_wrong():
    g = torch.Generator().manual_seed(0)
    B, L, V, P = 3, 7, 6, 2
    logits = 3 * torch.randn(B, L, V, generator=g)
    tokens = torch.randint(0, 4, (B, L), generator=g)
    tokens[0, 5:] = torch.tensor([4, 5])                       # ended (END = 4), then PAD = 5
    tokens[1, 6] = 4                                           # ended at the last position
    # row 2: never ended (cut), V of its last state is kept
    got = walks.sequence_returns(logits, tokens, P, end=4, pad=5, alpha=0.5)
    for b, (n, ended) in enumerate([(4, True), (5, True), (5, False)]):
        f = logits[b, P - 1:P + n]                             # states s_1 … s_{n+1}
        logp = torch.log_softmax(f[:-1] / 0.5, -1).gather(-1, tokens[b, P:P + n, None]).sum()
        value = lambda x: 0.5 * torch.logsumexp(x / 0.5, -1)
        want = 0.5 * logp + value(f[0]) - (0.0 if ended else value(f[-1]))
        assert got[b].item() == pytest.approx(want.item(), abs=1e-4)
    shifted = walks.sequence_returns(torch.roll(logits, -1, 1), tokens, P, end=4, pad=5, alpha=0.5)
    assert not torch.allclose(shifted, got, atol=1e-2)
    with pytest.raises(ValueError, match="prompt_len"):
        walks.sequence_returns(logits, tokens, 0, end=4, pad=5)


def test_a_walk_model_learns_a_reward_that_ranks_good_walks_first():
    model = walks.walk_model(seed=0)
    losses = walks.train_walk_model(model, walks.grid_walks(800, seed=0), steps=120, seed=0)
    assert sum(losses[-10:]) / 10 < 0.6 * losses[0]
    for kind, pairs in walks.walk_pairs(60, seed=2).items():
        good = walks.score_walks(model, [a for a, _ in pairs])
        bad = walks.score_walks(model, [b for _, b in pairs])
        assert walks.pairwise_accuracy(good, bad) > 0.8, kind
    # A tie (2 vs 2) is wrong, as in RM-Bench and every other accuracy of the kit.
    assert walks.pairwise_accuracy([1.0, 2.0, 3.0, 1.0], [0.0, 2.0, 4.0, 0.0]) == pytest.approx(0.5)
    assert walks.pairwise_accuracy(torch.ones(5), torch.ones(5)) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        walks.pairwise_accuracy([1.0], [1.0, 2.0])

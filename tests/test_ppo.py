"""PPO (endorm_mini.ppo): GAE and the clipped losses by hand, rollouts against a fresh
forward, the section 3.3 facts on an exactly enumerable case, bad input, resume, and a
short seeded run on noisy arithmetic."""
import copy
import os

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from conftest import make_gpt2, make_llama
from endorm_mini import models, ppo, verifiers, worlds
from endorm_mini.chat import prompt_ids
from endorm_mini.zoo import char_tokenizer


# ---------------------------------------------------------------- GAE
def hand_gae(rewards, values, lengths, gamma, lam):
    """GAE with Python floats: each row is an episode of `lengths[b]` steps, V = 0 after it."""
    advantages = []
    for r, v, n in zip(rewards.tolist(), values.tolist(), lengths):
        row, running = [0.0] * len(r), 0.0
        for t in reversed(range(n)):
            next_v = v[t + 1] if t + 1 < n else 0.0
            running = r[t] + gamma * next_v - v[t] + gamma * lam * running
            row[t] = running
        advantages.append(row)
    return torch.tensor(advantages)


def gae_no_episode_end(rewards, values, mask, gamma, lam):
    """A classic mistake: bootstrapping from V(s_{t+1}) past the end of the episode."""
    B, T = rewards.shape
    adv, running = torch.zeros_like(rewards), torch.zeros(B)
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros(B)
        running = rewards[:, t] + gamma * next_v - values[:, t] + gamma * lam * running
        adv[:, t] = running
    return adv * mask, (adv + values) * mask


def gae_lambda_on_delta(rewards, values, mask, gamma, lam):
    """Another mistake: discounting with γ only (λ forgotten) between steps."""
    return ppo.gae(rewards, values, mask, gamma, 1.0)


@pytest.fixture
def gae_case():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    lengths = [5, 3, 1]
    mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
    return rewards * mask, values, mask, lengths


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_matches_hand_computation(gae_case, gamma, lam):
    rewards, values, mask, lengths = gae_case
    adv, returns = ppo.gae(rewards, values, mask, gamma, lam)
    expected = hand_gae(rewards, values, lengths, gamma, lam)
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(returns, (expected + values) * mask, atol=1e-6, rtol=0)


def test_gae_check_rejects_wrong_implementations(gae_case):
    rewards, values, mask, lengths = gae_case
    expected = hand_gae(rewards, values, lengths, 1.0, 0.5)
    for wrong in (gae_no_episode_end, gae_lambda_on_delta):
        adv, _ = wrong(rewards, values, mask, 1.0, 0.5)
        assert not torch.allclose(adv, expected, atol=1e-3), wrong.__name__


def test_gae_lambda_one_is_return_to_go_minus_value(gae_case):
    rewards, values, mask, _ = gae_case
    adv, _ = ppo.gae(rewards, values, mask, 1.0, 1.0)
    to_go = rewards.flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(adv, (to_go - values) * mask, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- clipped losses
def test_policy_loss_on_known_numbers():
    # ratios 1.5, 0.5, 0.5, 1.5, 1.1 with advantages +1, −1, +1, −1, +2; ε = 0.2:
    #   +1·1.5 → clipped to 1.2 → −1.2;  −1·0.5 → clipped to 0.8 → 0.8;
    #   +1·0.5 → unclipped → −0.5;       −1·1.5 → unclipped → 1.5;  +2·1.1 → −2.2
    old = torch.zeros(1, 5)
    new = torch.log(torch.tensor([[1.5, 0.5, 0.5, 1.5, 1.1]]))
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 2.0]])
    mask = torch.ones(1, 5, dtype=torch.bool)
    loss, clipfrac = ppo.policy_loss(new, old, adv, mask, 0.2)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 0.5 + 1.5 - 2.2) / 5, abs=1e-6)
    assert clipfrac.item() == pytest.approx(2 / 5)
    masked = mask.clone()
    masked[0, 4] = False  # masked tokens do not count
    assert ppo.policy_loss(new, old, adv, masked, 0.2)[0].item() == pytest.approx(0.6 / 4, abs=1e-6)
    # Mutations: no clipping, or min instead of max (the optimistic bound), are rejected.
    ratio = new.exp()
    assert (-adv * ratio).mean().item() != pytest.approx(loss.item(), abs=1e-3)
    wrong_min = torch.minimum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)).mean()
    assert wrong_min.item() != pytest.approx(loss.item(), abs=1e-3)


def test_value_loss_on_known_numbers():
    old = torch.tensor([[0.0, 0.0, 1.0]])
    new = torch.tensor([[0.5, -0.1, 1.0]])
    returns = torch.tensor([[1.0, 1.0, 0.0]])
    # (0.5−1)²=0.25 vs clipped (0.2−1)²=0.64 → 0.64; (−0.1−1)²=1.21 (inside the clip); 1.
    loss = ppo.value_loss(new, old, returns, torch.ones(1, 3), 0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.21 + 1.0) / 3, abs=1e-6)
    assert ppo.value_loss(new, old, returns, torch.ones(1, 3), 10.0).item() == pytest.approx(
        0.5 * (0.25 + 1.21 + 1.0) / 3, abs=1e-6)


# ---------------------------------------------------------------- rollouts
@pytest.fixture(scope="module")
def ab_tokenizer():
    return char_tokenizer("ab")  # 9 tokens: eos is likely, so responses end at many lengths


@pytest.mark.parametrize("maker", [make_gpt2, make_llama])
def test_rollout_logprobs_values_and_kl_match_a_fresh_forward(maker, ab_tokenizer):
    tok = ab_tokenizer
    model, other = maker(tok, seed=0), maker(tok, seed=1)
    head = ppo.make_value_head(model)
    torch.nn.init.normal_(head.weight, generator=torch.Generator().manual_seed(0))
    prompts = ["a", "abab", "ba", "b"] * 4  # different lengths: left padding matters
    ro = ppo.generate(model, head, tok, prompts, 6, 1.0, torch.Generator().manual_seed(0))
    T = ro.mask.shape[1]
    lengths = ro.mask.sum(1)
    assert ro.ended.any() and (lengths > 1).any() and (lengths < T).any()
    for row, n, ended in zip(ro.actions, lengths, ro.ended):  # eos ends a row, pad follows
        assert (row[n:] == tok.pad_token_id).all()
        assert bool(ended) == (row[n - 1] == tok.eos_token_id)
    with torch.no_grad():
        logits, hidden = ppo.response_forward(model, ro.input_ids, ro.attention_mask, T)
        fresh = ppo.action_logprobs(logits[:, :-1], ro.actions) * ro.mask
        values = head(hidden[:, :-1]).squeeze(-1) * ro.mask
        ref_logits, _ = ppo.response_forward(other, ro.input_ids, ro.attention_mask, T)
        ref_fresh = ppo.action_logprobs(ref_logits[:, :-1], ro.actions) * ro.mask
    torch.testing.assert_close(ro.logprobs, fresh, atol=1e-5, rtol=0)
    torch.testing.assert_close(ro.values, values, atol=1e-5, rtol=0)
    cfg = ppo.PPOConfig(prompts_per_update=16, samples_per_prompt=1, minibatches=4)
    scored = ppo.score_rollout(ro, other, cfg)
    torch.testing.assert_close(scored["ref_logprobs"], ref_fresh, atol=1e-5, rtol=0)
    _, kl = ppo.shaped_rewards(scored["score"], ro.logprobs, scored["ref_logprobs"], ro.mask, 0.01)
    torch.testing.assert_close(kl, (fresh - ref_fresh) * ro.mask, atol=1e-5, rtol=0)
    assert kl.abs().sum() > 0.1  # two different models: the check can see a KL
    same = ppo.score_rollout(ro, copy.deepcopy(model), cfg)
    torch.testing.assert_close(same["ref_logprobs"], ro.logprobs, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- section 3.3, exactly
class Enumerated:
    """Every response of horizon 2 to one prompt over a 9-token vocabulary (73 of them)."""

    def __init__(self, tok):
        eos, pad = tok.eos_token_id, tok.pad_token_id
        V = len(tok)
        seqs = [[eos, pad]] + [[x, y] for x in range(V) if x != eos for y in range(V)]
        self.B = len(seqs)
        self.actions = torch.tensor(seqs)
        self.mask = torch.ones(self.B, 2, dtype=torch.bool)
        self.mask[0, 1] = False
        prompt = torch.tensor(prompt_ids(tok, "ab")).repeat(self.B, 1)
        self.input_ids = torch.cat([prompt, self.actions], 1)
        self.attention = torch.ones_like(self.input_ids)
        self.ended = self.actions[:, 0].eq(eos) | self.actions[:, 1].eq(eos)

    def logprobs(self, model, temperature):  # [B, 2] log π(a_t|s_t), with grad
        logits, _ = ppo.response_forward(model, self.input_ids, self.attention, 2)
        return ppo.action_logprobs(logits[:, :-1] / temperature, self.actions) * self.mask

    def expected_gradient(self, model, ref, alpha, temperature, kl_coef, entropy_coef):
        """The exact expected PPO gradient at ratio 1: each response weighted by π(τ)."""
        cfg = ppo.PPOConfig(alpha=alpha, temperature=temperature, kl_coef=kl_coef,
                            entropy_coef=entropy_coef, prompts_per_update=self.B,
                            samples_per_prompt=1, minibatches=1)
        logp = self.logprobs(model, temperature)
        ro = ppo.Rollout(["ab"] * self.B, [""] * self.B, self.input_ids, self.attention, self.mask,
                         logp.detach(), torch.zeros(self.B, 2), self.ended)
        scored = ppo.score_rollout(ro, ref, cfg)
        rewards, _ = ppo.shaped_rewards(scored["score"], logp.detach(), scored["ref_logprobs"],
                                        self.mask, kl_coef, entropy_coef)
        advantages, _ = ppo.gae(rewards, torch.zeros(self.B, 2), self.mask, 1.0, 1.0)
        weights = logp.sum(1).exp().detach()[:, None] * self.mask  # π(τ) on each of its tokens
        loss, _ = ppo.policy_loss(logp, logp.detach(), advantages, weights, 0.2)
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.fixture(scope="module")
def base_model(ab_tokenizer):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(ab_tokenizer), n_embd=16, n_layer=1, n_head=2,
                                       n_positions=32)).eval()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(8)  # a peaked π̂, so that π̂^k differs from π̂
    return model


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_entropy_bonus_alpha_gives_zero_expected_update(alpha, ab_tokenizer, base_model):
    """max E_π[r̂] + c H(π) is solved by π̂ when c = α: PPO's expected step at π̂ is 0."""
    case = Enumerated(ab_tokenizer)
    model, ref = copy.deepcopy(base_model), copy.deepcopy(base_model)
    # π̂ = softmax(f̂/α) is the sampling policy at temperature α.
    probs = case.logprobs(model, alpha).sum(1).exp()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-5) and probs.max() < 0.9
    at_alpha = case.expected_gradient(model, ref, alpha, alpha, 0.0, alpha).norm()
    without = case.expected_gradient(model, ref, alpha, alpha, 0.0, 0.0).norm()
    off = case.expected_gradient(model, ref, alpha, alpha, 0.0, 1.1 * alpha).norm()
    assert at_alpha < 1e-5 * without
    assert off > 0.05 * without  # the check can fail: 10% off α is a real update


def test_kl_penalty_moves_policy_to_sharpened_base(ab_tokenizer, base_model):
    """max E_π[r̂] − β KL(π‖π̂) is solved by π ∝ π̂^{1+α/β}: exact-gradient PPO steps get there."""
    alpha, beta = 1.0, 0.5
    case = Enumerated(ab_tokenizer)
    policy, ref = copy.deepcopy(base_model), copy.deepcopy(base_model).requires_grad_(False)
    with torch.no_grad():
        base = case.logprobs(ref, 1.0).sum(1).exp()
    target = base ** (1 + alpha / beta)
    target /= target.sum()
    wrong = base ** (alpha / beta)  # the entropy-bonus answer, not the KL one
    wrong /= wrong.sum()
    tv = lambda p, q: 0.5 * (p - q).abs().sum().item()  # noqa: E731
    assert tv(base, target) > 0.3 and tv(wrong, target) > 0.15
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.02)
    for _ in range(120):
        case.expected_gradient(policy, ref, alpha, 1.0, beta, 0.0)
        optimizer.step()
    with torch.no_grad():
        final = case.logprobs(policy, 1.0).sum(1).exp()
    assert tv(final, target) < 0.02 and tv(final, wrong) > 0.15


# ---------------------------------------------------------------- bad input, resume
def small_config(**kw):
    base = dict(steps=2, prompts_per_update=4, samples_per_prompt=2, max_new_tokens=4, minibatches=2,
                epochs=1, progress=False, device="cpu")
    return ppo.PPOConfig(**{**base, **kw})


def test_empty_prompts_and_bad_config_are_rejected(ab_tokenizer):
    model = make_gpt2(ab_tokenizer)
    with pytest.raises(ValueError, match="prompts is empty"):
        ppo.train(model, ab_tokenizer, [], small_config())
    with pytest.raises(ValueError, match="reward must be one of"):
        small_config(reward="nonsense")
    with pytest.raises(ValueError, match="divisible"):
        small_config(minibatches=3)
    with pytest.raises(ValueError, match="needs is_correct"):
        ppo.train(model, ab_tokenizer, ["ab"], small_config(reward="verifier"))
    with pytest.raises(ValueError, match="needs reward_fn"):
        ppo.train(model, ab_tokenizer, ["ab"], small_config(reward="custom"))


@pytest.mark.parametrize("bad,match", [
    (lambda p, r, ids: torch.zeros(len(p), 99), "shape"),
    (lambda p, r, ids: torch.zeros(len(p) + 1), "shape"),
    (lambda p, r, ids: torch.full((len(p),), float("nan")), "NaN"),
    (lambda p, r, ids: [1.0] * (len(p) - 1) + [float("inf")], "NaN/inf for responses \\[7\\]"),
])
def test_bad_reward_callables_are_rejected(bad, match, ab_tokenizer):
    model = make_gpt2(ab_tokenizer)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=match):
        ppo.train(model, ab_tokenizer, ["ab", "ba"], small_config(reward="custom"), reward_fn=bad)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # no silent update


def test_custom_rewards_dense_and_terminal_are_placed_on_valid_tokens(ab_tokenizer):
    mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(ppo.check_reward([1.0, 2.0], 2, 3, mask),
                               torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]))
    dense = torch.tensor([[1.0, 2.0, float("nan")], [3.0, 4.0, 5.0]])  # NaN past the end: ignored
    torch.testing.assert_close(ppo.check_reward(dense, 2, 3, mask),
                               torch.tensor([[1.0, 2.0, 0.0], [3.0, 4.0, 5.0]]))


def test_no_pad_token_and_no_eos_are_handled_with_warnings(ab_tokenizer):
    tok = copy.deepcopy(ab_tokenizer)
    tok.pad_token = None
    model = make_llama(tok)
    seen = []
    def reward_fn(prompts, responses, ids):  # noqa: E306
        seen.extend(ids)
        return torch.ones(len(prompts))
    with pytest.warns(UserWarning) as record:
        result = ppo.train(model, tok, ["ab", "b"], small_config(reward="custom", max_new_tokens=6),
                           reward_fn=reward_fn)
    messages = " ".join(str(w.message) for w in record)
    assert "no pad token" in messages and "never emit eos" in messages
    assert tok.pad_token_id == tok.eos_token_id
    # pad = eos: the mask still ends at the first eos, and a cut response has no eos at all.
    assert all(tok.eos_token_id not in ids[:-1] for ids in seen)
    assert all(0 <= h["truncated"] <= 1 for h in result.history) and any(h["truncated"] > 0 for h in result.history)


@pytest.mark.filterwarnings("ignore:responses that never emit eos")
def test_gradient_checkpointing_gives_the_same_update(ab_tokenizer):
    """A CUDA setting, run on the CPU: checkpointing changes nothing. (bf16/fp16 autocast:
    tests/test_ppo_update.py compares one SGD step with fp32's.)"""
    def run(**kw):
        model = make_llama(ab_tokenizer, seed=3)
        ppo.train(model, ab_tokenizer, ["a", "ab"], small_config(**kw))
        return model, torch.cat([p.flatten() for p in model.parameters()])
    base, weights = run()
    checkpointed, weights_gc = run(gradient_checkpointing=True)
    flag = "is_activation_checkpointing" if hasattr(base, "is_activation_checkpointing") else "is_gradient_checkpointing"
    assert getattr(checkpointed, flag) and not getattr(base, flag)
    torch.testing.assert_close(weights_gc, weights, atol=1e-6, rtol=0)
    start = torch.cat([p.flatten() for p in make_llama(ab_tokenizer, seed=3).parameters()])
    assert (weights - start).abs().max() > 1e-3            # it trained: a step to compare


class KillAt:
    """A verifier that "kills" the run (raises) at its n-th call, and says False until then."""

    def __init__(self, n):
        self.calls, self.n = 0, n

    def __call__(self, prompt, response):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return False


@pytest.mark.filterwarnings("ignore:responses that never emit eos")
def test_a_killed_run_resumes_exactly(tmp_path, ab_tokenizer):
    prompts = ["a", "ab", "bb", "ba"]
    straight = make_gpt2(ab_tokenizer, seed=3)
    full = ppo.train(straight, ab_tokenizer, prompts, small_config(steps=4), is_correct=KillAt(0))
    cfg = small_config(steps=4, checkpoint_dir=str(tmp_path), checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):  # killed in update 3 (8 responses each): the checkpoint is from 2
        ppo.train(make_gpt2(ab_tokenizer, seed=3), ab_tokenizer, prompts, cfg, is_correct=KillAt(17))
    assert (tmp_path / "log.csv").read_text().count("\n") == 3  # header + 2 updates
    resumed = ppo.train(make_gpt2(ab_tokenizer, seed=3), ab_tokenizer, prompts, cfg, is_correct=KillAt(0),
                        resume=True)
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4]
    for key in ("reward", "kl", "policy_loss", "value_loss", "entropy"):
        assert [h[key] for h in resumed.history] == pytest.approx([h[key] for h in full.history], abs=1e-6)
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert (tmp_path / "log.csv").read_text().count("\n") == 5


# ---------------------------------------------------------------- noisy arithmetic
ARITH = os.environ.get("ENDORM_TINY_ARITH", "tiny-arith")  # a retrained copy can stand in for the shipped one


def test_a_short_seeded_run_raises_sampled_accuracy_on_noisy_arithmetic():
    from endorm_mini import zoo

    if ARITH not in zoo.available() and not os.path.isdir(ARITH):
        pytest.skip("the tiny-arith checkpoint is not in the zoo yet")
    model, tok = models.load(ARITH, device="cpu")
    problems = worlds.arith_problems()
    before = verifiers.arith_accuracy(model, tok, problems, temperature=1.0, samples=1, seed=1, device="cpu")
    cfg = ppo.PPOConfig(steps=40, prompts_per_update=16, progress=False, device="cpu", seed=0)
    history = ppo.train(model, tok, problems, cfg, is_correct=verifiers.is_correct).history
    after = verifiers.arith_accuracy(model, tok, problems, temperature=1.0, samples=1, seed=1, device="cpu")
    # Greedy decoding is right on tiny-arith, sampling ~60% of the time: RL on the model's own
    # reward climbs toward its sequence-level mode, the right answer (docs/paper.md §6).
    assert before < 0.75 and after > before + 0.15, (before, after)
    assert history[-1]["kl"] > 0.05  # it moved away from the reference, as it must to get there


@pytest.mark.filterwarnings("ignore:responses that never emit eos")
def test_cli_writes_log_plot_checkpoint_and_resumes(tmp_path, capsys):
    from endorm_mini import cli, zoo

    if ARITH not in zoo.available() and not os.path.isdir(ARITH):
        pytest.skip("the tiny-arith checkpoint is not in the zoo yet")
    args = ["ppo", "--model", ARITH, "--steps", "2", "--out", str(tmp_path), "--eval-samples", "1", "--device", "cpu"]
    assert cli.main(args) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"log.csv", "ppo.png", "ppo.pt"}
    assert cli.main(args[:4] + ["4"] + args[5:] + ["--resume"]) == 0
    assert (tmp_path / "log.csv").read_text().count("\n") == 5  # header + 2 + 2 resumed updates
    assert "after 4 updates" in capsys.readouterr().out
    assert cli.main(["ppo", "--model", "tiny-nope", "--steps", "1", "--out", str(tmp_path)]) == 2

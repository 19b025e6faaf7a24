"""Checks for lesson 08 (PPO from scratch, ``endorm_mini.ppo``) on seeded [B, T] tensors.

A batch is B responses of at most T tokens; ``mask`` is a prefix (True up to and including
each response's eos). Entries after the mask hold garbage on purpose: a function that forgets
the mask, or bootstraps past the end of an episode, gives a different number.
The mistakes are the wrong versions a learner is likely to write, each named.
"""
from __future__ import annotations

import torch

from ... import ppo
from . import case, exercise


# ---------------------------------------------------------------- random inputs
def _mask(lengths, T) -> torch.Tensor:
    return torch.arange(T)[None] < torch.tensor(lengths)[:, None]          # B, T (bool prefix)


def _logprobs(rng, B, T, scale=1.0) -> torch.Tensor:
    return torch.log_softmax(scale * torch.randn(B, T, 6, generator=rng), -1)[..., 0]   # B, T, all < 0


def _masked_mean(x, mask):
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1e-8)


# ---------------------------------------------------------------- 8.1 the KL-shaped reward
def _shaped(score, logprobs, ref_logprobs, mask, kl_coef, entropy_coef=0.0, *, how="ok"):
    kl = logprobs - ref_logprobs
    if how == "sign":
        kl = -kl
    if how == "probs":
        kl = logprobs.exp() - ref_logprobs.exp()
    kl = kl * mask
    if how == "no mask":
        kl = logprobs - ref_logprobs
        return score - kl_coef * kl - entropy_coef * logprobs, kl
    if how == "terminal":
        last = torch.zeros_like(kl).scatter(1, mask.sum(1, keepdim=True) - 1, kl.sum(1, keepdim=True))
        return (score - kl_coef * last - entropy_coef * logprobs) * mask, kl
    bonus = -entropy_coef * logprobs if how != "bonus sign" else entropy_coef * logprobs
    return (score - kl_coef * kl + bonus) * mask, kl


@exercise(
    "8.1", "shaped_rewards", reference=ppo.shaped_rewards,
    equation="r'_t = score_t − β (log π_θ − log π_ref)(a_t|s_t) − c_H log π_θ(a_t|s_t) on every "
             "response token (docs/paper.md §7 Q3: β = 0.01); zero after the mask",
    hint="kl = (logprobs − ref_logprobs) * mask; rewards = (score − kl_coef·kl − entropy_coef·logprobs) "
         "* mask; return (rewards, kl)",
    outputs=("rewards", "kl"),
    mistakes={
        "the KL sign is flipped: kl_t = log π_θ − log π_ref (positive where the policy is more "
        "sure than the reference)": lambda *a, **k: _shaped(*a, **k, how="sign"),
        "forgot the mask: tokens after eos are not part of the response":
            lambda *a, **k: _shaped(*a, **k, how="no mask"),
        "the KL of probabilities: use log-probabilities, log π_θ − log π_ref":
            lambda *a, **k: _shaped(*a, **k, how="probs"),
        "the response's whole KL on its last token: each token pays its own β·kl_t":
            lambda *a, **k: _shaped(*a, **k, how="terminal"),
        "the entropy bonus has the wrong sign: −c_H log π is positive (a bonus for unlikely tokens)":
            lambda *a, **k: _shaped(*a, **k, how="bonus sign"),
    },
)
def shaped_rewards_cases(rng: torch.Generator):
    B, T = 3, 6
    mask = _mask([6, 4, 1], T)
    score = torch.randn(B, T, generator=rng)                              # garbage after the mask too
    yield case("dense score [3, 6], β = 0.01, lengths 6, 4, 1", score, _logprobs(rng, B, T),
               _logprobs(rng, B, T), mask, 0.01)
    terminal = torch.zeros(B, T).scatter(1, mask.sum(1, keepdim=True) - 1, torch.ones(B, 1))
    yield case("a 1/0 verifier score on the last token, β = 0.5", terminal, _logprobs(rng, B, T),
               _logprobs(rng, B, T), mask, 0.5)
    mask = _mask([2, 5, 5, 3], 5)
    yield case("β = 0.2 and an entropy bonus c_H = 0.7, [4, 5]", torch.randn(4, 5, generator=rng),
               _logprobs(rng, 4, 5, 2.0), _logprobs(rng, 4, 5), mask, 0.2, entropy_coef=0.7)
    lp = _logprobs(rng, 2, 4)
    yield case("the policy is the reference (KL = 0), c_H = 1", torch.randn(2, 4, generator=rng), lp,
               lp.clone(), _mask([3, 4], 4), 0.1, entropy_coef=1.0)


# ---------------------------------------------------------------- 8.2 GAE
def _gae(rewards, values, mask, gamma=1.0, lam=0.95, *, how="ok"):
    mask = mask.float()
    B, T = rewards.shape
    adv, running, next_value = torch.zeros_like(rewards), torch.zeros(B), torch.zeros(B)
    for t in reversed(range(T)):
        if how in ("past end", "no end"):
            next_value = values[:, t + 1] if t + 1 < T else torch.zeros(B)
        decay = {"no lambda": gamma, "no gamma": lam}.get(how, gamma * lam)
        running = rewards[:, t] + gamma * next_value - values[:, t] + decay * running
        running = running if how == "no end" else running * mask[:, t]
        next_value = values[:, t] * mask[:, t]
        adv[:, t] = running
    if how == "returns":
        return adv * mask, adv * mask
    return adv * mask, (adv + values) * mask


@exercise(
    "8.2", "gae", reference=ppo.gae,
    equation="GAE: δ_t = r_t + γ V(s_{t+1}) − V(s_t), A_t = δ_t + γλ A_{t+1}, computed backwards; "
             "V(s_{t+1}) = 0 and A_{t+1} = 0 after each response's last token; returns = A + V",
    hint="loop t from T−1 down to 0 keeping next_value and next_adv per row; multiply both by "
         "mask[:, t] so that nothing flows in from after the episode's end",
    outputs=("advantages", "returns"),
    mistakes={
        "bootstrapped past the end of the episode: after the last token V(s_{t+1}) = 0, whatever "
        "`values` holds there": lambda *a, **k: _gae(*a, **k, how="past end"),
        "ignored the episode's end: after each response's last token reset both V(s_{t+1}) and A_{t+1} "
        "to 0 (masking the output is not enough)": lambda *a, **k: _gae(*a, **k, how="no end"),
        "forgot λ: A_t = δ_t + γλ A_{t+1}, not δ_t + γ A_{t+1}":
            lambda *a, **k: _gae(*a, **k, how="no lambda"),
        "forgot γ in the recursion: A_t = δ_t + γλ A_{t+1}":
            lambda *a, **k: _gae(*a, **k, how="no gamma"),
        "the returns are the advantages plus the values (the critic's target), not the advantages":
            lambda *a, **k: _gae(*a, **k, how="returns"),
    },
)
def gae_cases(rng: torch.Generator):
    B, T = 3, 6
    mask = _mask([6, 4, 1], T)
    yield case("[3, 6], lengths 6, 4, 1, γ = 1, λ = 0.95", torch.randn(B, T, generator=rng) * mask,
               torch.randn(B, T, generator=rng), mask)
    mask = _mask([2, 5, 3, 5], 5)
    yield case("γ = 0.9, λ = 0.5, values after the mask are garbage", torch.randn(4, 5, generator=rng) * mask,
               torch.randn(4, 5, generator=rng), mask, gamma=0.9, lam=0.5)
    mask = _mask([4, 2], 4)
    yield case("λ = 1: A = return-to-go − V (Monte Carlo), γ = 0.8", torch.randn(2, 4, generator=rng) * mask,
               torch.randn(2, 4, generator=rng), mask, gamma=0.8, lam=1.0)
    mask = _mask([3, 1], 3)
    yield case("λ = 0: A = δ (one-step TD)", torch.randn(2, 3, generator=rng) * mask,
               torch.randn(2, 3, generator=rng), mask, gamma=1.0, lam=0.0)
    yield case("one token per response, T = 1", torch.randn(3, 1, generator=rng),
               torch.randn(3, 1, generator=rng), torch.ones(3, 1, dtype=torch.bool), 1.0, 0.95)


# ---------------------------------------------------------------- 8.3 log-probs of the actions
def _lp(logits, actions, *, how="ok"):
    x = logits if how == "low precision" else logits.float()
    if how == "dim":
        logp = torch.log_softmax(x, 1)
    elif how == "raw":
        logp = x
    else:
        logp = torch.log_softmax(x, -1)
    out = logp.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    return out.exp() if how == "probs" else out.float()


@exercise(
    "8.3", "action_logprobs", reference=ppo.action_logprobs,
    equation="log π_θ(a_t|s_t) = f(s_t, a_t) − log Σ_a exp f(s_t, a), in float32 (eq. 10 at α = 1)",
    atol=1e-4,  # float32 logsumexp of logits ~100 is exact to ~1e-5 only
    hint="logits = logits.float(); gather the taken token's logit with actions.unsqueeze(-1) and "
         "subtract torch.logsumexp over the vocabulary (last) dimension",
    mistakes={
        "returned probabilities; the ratio π_θ/π_old is formed from log-probabilities":
            lambda logits, actions: _lp(logits, actions, how="probs"),
        "forgot to normalise: a raw logit is not a log-probability":
            lambda logits, actions: _lp(logits, actions, how="raw"),
        "normalised over the time dimension; the vocabulary is the last one":
            lambda logits, actions: _lp(logits, actions, how="dim"),
        "computed in bf16: upcast to float32 first (autocast hands you bf16/fp16 logits)":
            lambda logits, actions: _lp(logits, actions, how="low precision"),
    },
)
def action_logprobs_cases(rng: torch.Generator):
    yield case("logits [2, 4, 9]", torch.randn(2, 4, 9, generator=rng), torch.randint(9, (2, 4), generator=rng))
    yield case("large logits, as a real LM's (exp overflows without logsumexp)",
               100 + 10 * torch.randn(3, 2, 7, generator=rng), torch.randint(7, (3, 2), generator=rng))
    yield case("bf16 logits from autocast, [2, 3, 50]", (3 * torch.randn(2, 3, 50, generator=rng)).bfloat16(),
               torch.randint(50, (2, 3), generator=rng))
    yield case("one response of 5 tokens, vocabulary 4", torch.randn(1, 5, 4, generator=rng),
               torch.randint(4, (1, 5), generator=rng))


# ---------------------------------------------------------------- 8.4 the clipped objective
def _pg(logprobs, old_logprobs, advantages, mask, clip_eps=0.2, *, how="ok"):
    ratio = logprobs / old_logprobs if how == "log ratio" else torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    if how == "no clip":
        clipped = unclipped
    loss = torch.minimum(unclipped, clipped) if how == "min" else torch.maximum(unclipped, clipped)
    frac = ((ratio - 1).abs() > clip_eps).float() if how == "frac" else (clipped > unclipped).float()
    if how == "no mask":
        return loss.mean(), frac.mean()
    return _masked_mean(loss, mask), _masked_mean(frac, mask)


@exercise(
    "8.4", "policy_loss", reference=ppo.policy_loss,
    equation="PPO-clip: L = mean_t max(−A_t ρ_t, −A_t clip(ρ_t, 1−ε, 1+ε)), ρ_t = exp(log π_θ − log π_old), "
             "the mean over response tokens; clip fraction = share of tokens where the clipped term is larger",
    hint="ratio = torch.exp(logprobs − old_logprobs); take the elementwise torch.maximum of the two "
         "negated surrogates; average with masked_mean (from endorm_mini.ppo, allowed)",
    outputs=("loss", "clipfrac"),
    mistakes={
        "min where PPO takes max: the loss is the negated surrogate, so the pessimistic bound is the max":
            lambda *a, **k: _pg(*a, **k, how="min"),
        "no clipping: that is the plain policy gradient surrogate, which lets ρ run away":
            lambda *a, **k: _pg(*a, **k, how="no clip"),
        "ρ = log π_θ / log π_old: the ratio of probabilities is exp(log π_θ − log π_old)":
            lambda *a, **k: _pg(*a, **k, how="log ratio"),
        "averaged over padding too: use the mask (masked_mean)":
            lambda *a, **k: _pg(*a, **k, how="no mask"),
        "the clip fraction counted every ratio outside [1−ε, 1+ε]; count the tokens where the clip "
        "binds (the clipped term is larger)": lambda *a, **k: _pg(*a, **k, how="frac"),
    },
)
def policy_loss_cases(rng: torch.Generator):
    old = _logprobs(rng, 3, 6)
    mask = _mask([6, 4, 2], 6)
    yield case("[3, 6], log-ratios ~ ±0.4, ε = 0.2", old + 0.4 * torch.randn(3, 6, generator=rng), old,
               torch.randn(3, 6, generator=rng), mask)
    new, old = torch.log(torch.tensor([[1.5, 0.5, 0.5, 1.5, 1.1]])), torch.zeros(1, 5)
    yield case("ratios 1.5, 0.5, 0.5, 1.5, 1.1 against advantages +1, −1, +1, −1, +2 (by hand: loss −0.32)",
               new - 1.0, old - 1.0, torch.tensor([[1.0, -1.0, 1.0, -1.0, 2.0]]), torch.ones(1, 5, dtype=torch.bool))
    old = _logprobs(rng, 4, 5)
    yield case("ε = 0.1, wide ratios, [4, 5]", old + torch.randn(4, 5, generator=rng), old,
               torch.randn(4, 5, generator=rng), _mask([5, 1, 3, 4], 5), clip_eps=0.1)
    old = _logprobs(rng, 2, 4)
    yield case("ratio exactly 1 (the first minibatch of an update)", old.clone(), old,
               torch.randn(2, 4, generator=rng), _mask([4, 3], 4))


# ---------------------------------------------------------------- 8.5 the clipped value loss
def _vf(values, old_values, returns, mask, clip=0.2, *, how="ok"):
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    if how == "around returns":
        clipped = returns + torch.clamp(values - returns, -clip, clip)
    if how == "absolute":
        clipped = torch.clamp(values, -clip, clip)
    a, b = (values - returns) ** 2, (clipped - returns) ** 2
    loss = torch.minimum(a, b) if how == "min" else torch.maximum(a, b)
    scale = 1.0 if how == "no half" else 0.5
    return scale * (loss.mean() if how == "no mask" else _masked_mean(loss, mask))


@exercise(
    "8.5", "value_loss", reference=ppo.value_loss,
    equation="clipped value loss: ½ mean_t max((V − R)², (V_old + clip(V − V_old, −c, c) − R)²) over "
             "response tokens, R = the GAE returns",
    hint="clipped = old_values + (values − old_values).clamp(−clip, clip); square both errors, take "
         "the elementwise max, masked_mean, times ½",
    mistakes={
        "min where PPO takes max (the pessimistic of the two errors)": lambda *a, **k: _vf(*a, **k, how="min"),
        "forgot the ½": lambda *a, **k: _vf(*a, **k, how="no half"),
        "clipped V around the returns; the clip keeps V near the rollout's old values":
            lambda *a, **k: _vf(*a, **k, how="around returns"),
        "clipped V itself to [−c, c]; clip the change V − V_old":
            lambda *a, **k: _vf(*a, **k, how="absolute"),
        "averaged over padding too: use the mask": lambda *a, **k: _vf(*a, **k, how="no mask"),
    },
)
def value_loss_cases(rng: torch.Generator):
    old = torch.randn(3, 6, generator=rng)
    yield case("[3, 6], V moved by ~±0.3 from V_old, c = 0.2", old + 0.3 * torch.randn(3, 6, generator=rng), old,
               torch.randn(3, 6, generator=rng), _mask([6, 3, 1], 6))
    yield case("known numbers: V = 0.5, −0.1, 1 from V_old = 0, 0, 1; R = 1, 1, 0",
               torch.tensor([[0.5, -0.1, 1.0]]), torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 1.0, 0.0]]),
               torch.ones(1, 3, dtype=torch.bool))
    old = 2 * torch.randn(4, 5, generator=rng)
    yield case("c = 0.5, big moves, [4, 5]", old + torch.randn(4, 5, generator=rng), old,
               2 * torch.randn(4, 5, generator=rng), _mask([5, 2, 4, 1], 5), clip=0.5)

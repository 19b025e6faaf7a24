"""Checks for lesson 05 (Theorems 1 and 2, measured): preference TV, ε_π, the bound,
RL's gap on the endogenous reward, and power-law exponents."""
from __future__ import annotations

import torch

from ... import mdp as tabular, theory
from ...irl import reward_from_q
from ...mdp import DTYPE, Trajectories
from . import case, exercise


def _seed(rng: torch.Generator) -> int:
    return int(torch.randint(2**31 - 1, (1,), generator=rng))


# ---------------------------------------------------------------- 5.1 preference TV
def _tv(a, b, c, d, *, how="tv"):
    a, b, c, d = (torch.as_tensor(x, dtype=DTYPE) for x in (a, b, c, d))
    if how == "half":
        return 0.5 * (torch.sigmoid(a - b) - torch.sigmoid(c - d)).abs()
    if how == "pairing":
        return (torch.sigmoid(a - c) - torch.sigmoid(b - d)).abs()
    if how == "lipschitz":
        return ((a - b) - (c - d)).abs() / 4
    if how == "signed":
        return torch.sigmoid(a - b) - torch.sigmoid(c - d)
    return (torch.sigmoid(a - b) - torch.sigmoid(c - d)).abs()


@exercise(
    "5.1", "preference_tv", reference=theory.preference_tv,
    equation="eq. 13: P_r(τ ≻ τ') = σ(r(τ) − r(τ')); TV of two distributions over "
             "{τ ≻ τ', τ' ≻ τ} = ½ Σ over both outcomes |P − P'|",
    concept="two Bradley–Terry distributions over the two outcomes {τ ≻ τ', τ' ≻ τ}; total variation "
            "is half the summed absolute difference of their probabilities",
    hint="p = σ(r*(τ) − r*(τ')), q = σ(r̂(τ) − r̂(τ')); the two outcomes have (p, 1 − p) and "
         "(q, 1 − q), so the ½ Σ has two equal terms",
    mistakes={
        "only half of it: ½ Σ over BOTH outcomes, |p − q| + |(1 − p) − (1 − q)|, is |p − q|":
            lambda a, b, c, d: _tv(a, b, c, d, how="half"),
        "paired the wrong rewards: compare σ(r*(τ) − r*(τ')) with σ(r̂(τ) − r̂(τ'))":
            lambda a, b, c, d: _tv(a, b, c, d, how="pairing"),
        "|Δr* − Δr̂|/4 is the Lipschitz upper bound on the TV, not the TV itself":
            lambda a, b, c, d: _tv(a, b, c, d, how="lipschitz"),
        "forgot the absolute value (a distance is never negative)":
            lambda a, b, c, d: _tv(a, b, c, d, how="signed"),
    },
    forbid=(theory.bt_preference,),   # write your own Bradley–Terry above it
)
def preference_tv_cases(rng: torch.Generator):
    r = 3 * torch.randn(4, 50, generator=rng, dtype=DTYPE)
    yield case("50 random reward pairs", *r)
    r = torch.randn(4, 6, generator=rng, dtype=DTYPE)
    yield case("r̂ = r* + 0.1·noise (nearly equal preferences)", r[0], r[1],
               r[0] + 0.1 * r[2], r[1] + 0.1 * r[3])
    r = 40 * torch.randn(4, 5, generator=rng, dtype=DTYPE)
    yield case("large reward gaps (σ saturates at 0 or 1)", *r)


# ---------------------------------------------------------------- 5.2 ε_π
def _eps(log_e, log_h, reachable_mask=None, *, how="max"):
    diff = log_e - log_h
    diff = diff if how == "signed" else diff.abs()
    if reachable_mask is not None and how != "no mask":
        mask = reachable_mask if reachable_mask.dim() == diff.dim() else reachable_mask[..., None]
        diff = diff[mask.expand_as(diff)]
    return float(diff.mean() if how == "mean" else diff.max())


def _log_policy(rng, shape, scale=1.0):
    return torch.log_softmax(scale * torch.randn(*shape, generator=rng, dtype=DTYPE), -1)


@exercise(
    "5.2", "epsilon_pi", reference=theory.epsilon_pi,
    equation="Theorems 1–2: ε_π = max_h max_(s,a) |log π_E(a|s) − log π̂(a|s)|, the max over "
             "(h, s) where reachable_mask is True",
    concept="the worst log-ratio between the two policies over every step, state and action that the "
            "mask keeps",
    hint="diff = (log_pi_expert − log_pi_hat).abs(); a mask [H, S] covers all actions of a "
         "state: mask[..., None].expand_as(diff); return a Python float",
    mistakes={
        "forgot the absolute value: an under-estimate is an error too":
            lambda e, h, reachable_mask=None: _eps(e, h, reachable_mask, how="signed"),
        "ignored reachable_mask: unreachable states do not count":
            lambda e, h, reachable_mask=None: _eps(e, h, reachable_mask, how="no mask"),
        "a mean instead of the max (ε_π is a worst case)":
            lambda e, h, reachable_mask=None: _eps(e, h, reachable_mask, how="mean"),
        "compared probabilities, not log-probabilities":
            lambda e, h, reachable_mask=None: _eps(e.exp(), h.exp(), reachable_mask),
    },
)
def epsilon_pi_cases(rng: torch.Generator):
    e = _log_policy(rng, (4, 5, 3))
    yield case("two random log-policies [4, 5, 3], no mask", e, e + 0.3 * torch.randn(4, 5, 3, generator=rng,
                                                                                       dtype=DTYPE))
    e = _log_policy(rng, (3, 4, 3))
    h = e - 0.2
    h[1, 2, 0] += 1.7                                    # one big over-estimate
    yield case("log π̂ below log π_E by 0.2 except one over-estimate by 1.5, all reachable", e, h,
               reachable_mask=torch.ones(3, 4, dtype=torch.bool))
    e, h = _log_policy(rng, (3, 4, 2)), _log_policy(rng, (3, 4, 2))
    mask = torch.rand(3, 4, generator=rng) < 0.5
    mask[0, 0] = True
    yield case("a [H, S] mask: unreachable states ignored", e, h, reachable_mask=mask)
    e = _log_policy(rng, (2, 3, 4))
    h = e.clone()
    h[1, 2] = _log_policy(rng, (4,), scale=5.0)          # a huge error in one state...
    h[0, 1] = torch.log_softmax(e[0, 1] + 0.1 * torch.randn(4, generator=rng, dtype=DTYPE), -1)
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[1, 2] = False                                   # ... that is unreachable
    yield case("a [H, S, A] mask hiding the state with the largest error", e, h, reachable_mask=mask)


# ---------------------------------------------------------------- 5.3 the bound
@exercise(
    "5.3", "theorem1_bound", reference=theory.theorem1_bound,
    equation="Theorem 1: TV(P_r*(·|τ,τ'), P_r̂(·|τ,τ')) ≤ α H ε_π / 2",
    concept="each step can move the reward gap by at most α ε_π, on both responses, and the sigmoid's "
            "slope is at most 1/4",
    hint="each of the H steps of τ and of τ' moves the reward gap by at most α ε_π "
         "(2 α H ε_π in all), and σ is 1/4-Lipschitz",
    mistakes={
        "H² where Theorem 1 has H (H² is Theorem 2's imitation gap)":
            lambda alpha, horizon, eps: alpha * horizon**2 * eps / 2,
        "a factor 2 too small: 2 α H ε_π · ¼ = α H ε_π / 2":
            lambda alpha, horizon, eps: alpha * horizon * eps / 4,
        "forgot α (rewards are α log π̂ plus shaping)":
            lambda alpha, horizon, eps: horizon * eps / 2,
        "forgot the ½": lambda alpha, horizon, eps: alpha * horizon * eps,
    },
)
def theorem1_bound_cases(rng: torch.Generator):
    yield case("α = 1, H = 10, ε_π = 0.1", 1.0, 10, 0.1)
    yield case("α = 0.5, H = 7, ε_π = 0.03", 0.5, 7, 0.03)
    yield case("α = 0.1, H = 128, ε_π = 2.5 (a vacuous bound: > 1)", 0.1, 128, 2.5)
    alpha, eps = (float(x) for x in torch.rand(2, generator=rng, dtype=DTYPE) + 0.1)
    yield case("random α and ε_π, H = 3", alpha, 3, eps)


# ---------------------------------------------------------------- 5.4 RL on r̂
def _rl_gap(mdp, expert, r_hat, *, how="ok"):
    if how == "greedy":
        pi = torch.nn.functional.one_hot(r_hat.argmax(-1), mdp.num_actions).to(DTYPE)
    elif how == "soft":
        pi = tabular.soft_value_iteration(mdp, 1.0, reward=r_hat).policy
    else:
        pi = tabular.hard_value_iteration(mdp, reward=r_hat).policy
    if how == "under r_hat":
        return tabular.policy_value(mdp, expert) - tabular.policy_value(mdp, pi, reward=r_hat)
    gap = tabular.policy_value(mdp, expert) - tabular.policy_value(mdp, pi)
    return -gap if how == "sign" else gap


def _perturbed(rng, S=5, A=3, H=4, alpha=1.0, noise=0.5):
    """A random MDP, its soft-optimal expert, and the endogenous reward of a noisy copy."""
    m = tabular.random_mdp(S, A, H, seed=_seed(rng), single_start=True)
    expert = tabular.soft_value_iteration(m, alpha).policy
    log_hat = torch.log_softmax(expert.log() + noise * torch.randn(expert.shape, generator=rng,
                                                                   dtype=DTYPE), -1)
    return m, expert, reward_from_q(m, alpha * log_hat, alpha)


@exercise(
    "5.4", "rl_gap", reference=theory.rl_gap,
    equation="Theorem 2: V(π_E) − V(π_RL) under r* (eq. 1), π_RL = argmax_π E_π[Σ_h r̂] "
             "(the exact optimum of r̂: hard value iteration)",
    concept="π_RL is the exact (hard) optimum of r̂; its loss is measured under the MDP's own reward "
            "r*, against the expert's value",
    hint="π_RL = hard_value_iteration(mdp, reward=r_hat).policy; then policy_value(mdp, π) "
         "evaluates with the MDP's own reward r*",
    mistakes={
        "evaluated π_RL under r̂; Theorem 2 measures every policy under the true reward r*":
            lambda mdp, expert, r_hat: _rl_gap(mdp, expert, r_hat, how="under r_hat"),
        "the gap is V(π_E) − V(π_RL), not V(π_RL) − V(π_E)":
            lambda mdp, expert, r_hat: _rl_gap(mdp, expert, r_hat, how="sign"),
        "argmax_a r̂_h(s, a) step by step ignores what comes after: π_RL maximises the "
        "total of r̂ (hard value iteration)":
            lambda mdp, expert, r_hat: _rl_gap(mdp, expert, r_hat, how="greedy"),
        "a soft-optimal policy of r̂ (soft value iteration); RL here is the exact optimum "
        "(hard value iteration)": lambda mdp, expert, r_hat: _rl_gap(mdp, expert, r_hat, how="soft"),
    },
    forbid=(theory.rl_policy, theory.bc_gap),
)
def rl_gap_cases(rng: torch.Generator):
    c = theory.compounding_error_mdp(8, eps=0.01, alpha=0.1)
    yield case("the compounding-error chain, H = 8, eps = 0.01", c.mdp, c.expert, c.r_hat)
    yield case("a random MDP (S=5, A=3, H=4) and a noisy expert's r̂", *_perturbed(rng))
    yield case("a random MDP (S=6, A=4, H=6), α = 0.5", *_perturbed(rng, S=6, A=4, H=6, alpha=0.5))
    c = theory.compounding_error_mdp(20, eps=0.05, alpha=0.2)
    yield case("the chain, H = 20, eps = 0.05, α = 0.2", c.mdp, c.expert, c.r_hat)


# ---------------------------------------------------------------- 5.5 fitted exponent
def _slope(x, y):
    x, y = torch.as_tensor(x, dtype=DTYPE), torch.as_tensor(y, dtype=DTYPE)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x * x).sum())


def _through_origin(horizons, gaps):
    x = torch.log(torch.as_tensor(horizons, dtype=DTYPE))
    y = torch.log(torch.as_tensor(gaps, dtype=DTYPE))
    return float((x * y).sum() / (x * x).sum())


@exercise(
    "5.5", "fit_exponent", reference=theory.fit_exponent,
    equation="gap ≈ c·H^k ⇔ log gap = log c + k log H: k is the least-squares slope of "
             "log gap against log H",
    concept="a power law is a straight line on log-log axes: the exponent is the least-squares slope "
            "of log gap against log H",
    hint="x = log H, y = log gap (both natural logs); subtract their means; k = Σ x y / Σ x x",
    mistakes={
        "forgot the log of the gaps: the slope of gap against log H":
            lambda horizons, gaps: _slope(torch.log(torch.as_tensor(horizons, dtype=DTYPE)), gaps),
        "a line through the origin: subtract the means first (the intercept is log c)":
            _through_origin,
        "the axes swapped: regress log gap on log H, not log H on log gap":
            lambda horizons, gaps: _slope(torch.log(torch.as_tensor(gaps, dtype=DTYPE)),
                                          torch.log(torch.as_tensor(horizons, dtype=DTYPE))),
        "log10 on one axis and ln on the other: use the same log for both":
            lambda horizons, gaps: _slope(torch.log10(torch.as_tensor(horizons, dtype=DTYPE)),
                                          torch.log(torch.as_tensor(gaps, dtype=DTYPE))),
    },
)
def fit_exponent_cases(rng: torch.Generator):
    H = [4, 8, 16, 32, 64]
    yield case("an exact power law 3·H² (lists)", H, [3.0 * h**2 for h in H])
    noisy = 0.1 * torch.tensor(H, dtype=DTYPE) * torch.exp(0.2 * torch.randn(5, generator=rng, dtype=DTYPE))
    yield case("0.1·H times log-normal noise (tensors)", torch.tensor(H), noisy)
    yield case("two points", [10, 100], [5.0, 0.05])
    yield case("irregular horizons, gap ∝ H^1.5", [3, 5, 11, 40], [0.2 * h**1.5 for h in (3, 5, 11, 40)])


# ---------------------------------------------------------------- 5.6 the telescoping total (a derivation)
def _telescoped(mdp, Q, alpha, demos, *, first=True, last=True, scale=True, last_step="T", sign=1.0):
    """α Σ log π + V_0(s_0) − V_T(s_T), with one deliberate mistake (named by the flags)."""
    states, actions = demos
    N, T = states.shape
    V = torch.zeros(mdp.horizon + 1, mdp.num_states, dtype=DTYPE)
    V[:-1] = alpha * torch.logsumexp(Q / alpha, -1)
    steps = torch.arange(T).expand_as(states)
    logp = (Q / alpha - torch.logsumexp(Q / alpha, -1, keepdim=True))[steps, states, actions].sum(-1)
    after = mdp.next_state[states[:, -1], actions[:, -1]]                 # s_T
    total = (alpha if scale else 1.0) * logp
    if first:
        total = total + sign * V[0, states[:, 0]]
    if last:
        total = total - sign * V[T if last_step == "T" else T - 1, after]
    return total


def _cut(rng, m, n, T, scale=1.0):
    """``n`` trajectories of a random policy on ``m``, cut after T steps (T ≤ H), and a random Q."""
    Q = scale * torch.randn(m.horizon, m.num_states, m.num_actions, generator=rng, dtype=DTYPE)
    policy = torch.softmax(torch.randn(m.horizon, m.num_states, m.num_actions, generator=rng,
                                       dtype=DTYPE), -1)
    states, actions = tabular.sample_trajectories(m, policy, n, rng)
    return Q, Trajectories(states[:, :T], actions[:, :T])


@exercise(
    "5.6", "telescoped_total", reference=theory.telescoped_total,
    equation="eq. 8/12 summed: Σ_{h<T} r̂_h(s_h,a_h) with r̂_h = Q_h − V_{h+1}(s_{h+1}) = α log π_h(a_h|s_h) "
             "+ V_h(s_h) − V_{h+1}(s_{h+1}); π = softmax(Q/α), V_h = α logsumexp(Q_h/α), V_H = 0",
    concept="write each step's reward in eq. 12's form and add them up: every V except the first "
            "and the last appears once with + and once with −",
    hint="α · (log π_h(a_h|s_h) summed over h) + V_0(s_0) − V_T(s_T), where s_T = mdp.next_state[s_{T−1}, "
         "a_{T−1}] and V_T = 0 when T = H",
    mistakes={
        "forgot V(s_1): the first value has no partner to cancel (it is the start state's, shared "
        "by every response from that state)":
            lambda mdp, Q, alpha, demos: _telescoped(mdp, Q, alpha, demos, first=False),
        "forgot −V(s_{T+1}): a trajectory cut before the horizon keeps the value of the state it stops in":
            lambda mdp, Q, alpha, demos: _telescoped(mdp, Q, alpha, demos, last=False),
        "forgot α: eq. 12's first term is α log π, not log π":
            lambda mdp, Q, alpha, demos: _telescoped(mdp, Q, alpha, demos, scale=False),
        "V(s_{T+1}) at the wrong step: the state after step T−1 is valued by V_T, not V_{T−1}":
            lambda mdp, Q, alpha, demos: _telescoped(mdp, Q, alpha, demos, last_step="T-1"),
        "the signs of the values: + V(s_1) − V(s_{T+1}), as eq. 12 has + V(s_h) − V(s_{h+1})":
            lambda mdp, Q, alpha, demos: _telescoped(mdp, Q, alpha, demos, sign=-1.0),
    },
    forbid=(reward_from_q, theory.tabular_endogenous_reward),   # derive it: no per-step rewards
)
def telescoped_total_cases(rng: torch.Generator):
    m = tabular.random_mdp(5, 3, 4, seed=_seed(rng))
    Q, demos = _cut(rng, m, 8, 4)
    yield case("8 complete trajectories (T = H = 4), α = 1", m, Q, 1.0, demos)
    m = tabular.random_mdp(6, 4, 6, seed=_seed(rng))
    Q, demos = _cut(rng, m, 5, 3)
    yield case("5 trajectories cut after 3 of H = 6 steps, α = 0.5", m, Q, 0.5, demos)
    m = tabular.random_mdp(4, 3, 5, seed=_seed(rng))
    Q, demos = _cut(rng, m, 3, 1, scale=30.0)
    yield case("one step of H = 5, large Q at α = 0.2 (exp(Q/α) overflows)", m, Q, 0.2, demos)
    m = tabular.random_mdp(5, 2, 3, seed=_seed(rng))
    Q, demos = _cut(rng, m, 4, 2)
    yield case("cut after 2 of H = 3 steps, α = 2", m, Q, 2.0, demos)

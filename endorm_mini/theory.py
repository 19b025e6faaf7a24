"""Theorems 1 and 2 (docs/paper.md §6), as quantities you can compute on tabular MDPs.

Setting: an expert ``π_E`` that is soft-optimal (temperature α) for the true reward
``r*``, so ``r* = α log π_E + shaping``; a learned policy ``π̂`` (behaviour cloning,
eq. 2) and its endogenous reward ``r̂ = α log π̂ + shaping`` (eq. 8/12). The one number
that links them is the policy error

    ε_π = max_h max_(s,a) |log π_E(a|s) − log π̂(a|s)|.

- Theorem 1 (reward quality): for two responses τ, τ' from the same start state, the
  Bradley–Terry preferences (eq. 13) under r* and r̂ differ in total variation by at most
  ``α H ε_π / 2``. Why: along one trajectory ``r(τ) = α log π(τ|s_1) + V(s_1)`` (the
  shaping telescopes, V(s_1) cancels between τ and τ'), so the two reward differences
  are at most ``2 α H ε_π`` apart, and σ is 1/4-Lipschitz.
- Theorem 2 (policy quality, under r*): behaviour cloning loses
  ``V(π_E) − V(π̂) ≲ H² ε_π`` (a mistake at step h costs all the remaining H − h steps),
  while RL on r̂ loses only ``V(π_E) − V(π_RL) ≲ H ε_π`` (a slightly wrong reward costs a
  little at each step), π_RL being the exact optimum of r̂ (``hard_value_iteration``).

What ``compounding_error_mdp`` measures is not Theorem 2's bound. It is a chain whose π̂
errs with a fixed *probability* ``eps`` per step (a per-step total-variation error, the
same for every H); there BC loses ≈ eps·H(H+1)/2 and RL on r̂ loses ≈ α·eps·H/2: the H²
against H of the theorem's mechanism, in that per-step error. The theorem's ε_π of this
π̂ is not fixed: the expert makes the mistake with probability ≈ e^{−(H−h)/α}, so ε_π
grows like H/α, and ``H ε_π`` is already far above the largest possible gap (H, rewards
are at most 1 a step). On this chain the bounds are vacuous: neither checked nor
contradicted.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .irl import reward_from_q
from .mdp import DTYPE, TabularMDP, hard_value_iteration, policy_value, soft_value_iteration


def epsilon_pi(log_pi_expert: torch.Tensor, log_pi_hat: torch.Tensor,
               reachable_mask: torch.Tensor | None = None) -> float:
    """``ε_π = max |log π_E(a|s) − log π̂(a|s)|`` over (h, s, a) (Theorems 1–2).

    Both log-policies are [H, S, A]; ``reachable_mask`` ([H, S] or [H, S, A] bool)
    restricts the max to states that matter (e.g. ``mdp.reachable``).
    """
    diff = (torch.as_tensor(log_pi_expert, dtype=DTYPE) - torch.as_tensor(log_pi_hat, dtype=DTYPE)).abs()
    if reachable_mask is not None:
        mask = torch.as_tensor(reachable_mask, dtype=torch.bool)
        mask = mask[..., None] if mask.dim() == diff.dim() - 1 else mask
        diff = diff[mask.expand_as(diff)]
    return float(diff.max())


def bt_preference(r_tau: torch.Tensor | float, r_tau2: torch.Tensor | float) -> torch.Tensor:
    """Bradley–Terry (eq. 13): ``P(τ ≻ τ') = σ(r(τ) − r(τ'))``."""
    return torch.sigmoid(torch.as_tensor(r_tau, dtype=DTYPE) - torch.as_tensor(r_tau2, dtype=DTYPE))


def preference_tv(r_star_tau, r_star_tau2, r_hat_tau, r_hat_tau2) -> torch.Tensor:
    """TV between the preference distributions over {τ ≻ τ', τ' ≻ τ} under r* and r̂.

    Each is a two-outcome distribution ``(p, 1 − p)``, so
    ``TV = ½ (|p − q| + |(1 − p) − (1 − q)|) = |p − q|``.
    """
    p = bt_preference(r_star_tau, r_star_tau2)
    q = bt_preference(r_hat_tau, r_hat_tau2)
    return (p - q).abs()


def theorem1_bound(alpha: float, horizon: int, eps: float) -> float:
    """Theorem 1's right-hand side: ``α H ε_π / 2``."""
    return alpha * horizon * eps / 2


def tabular_endogenous_reward(mdp: TabularMDP, log_pi_hat: torch.Tensor, alpha: float) -> torch.Tensor:
    """The endogenous reward of a tabular policy: eq. 8/12 with logits ``f̂ = α log π̂``.

    ``r̂_h(s,a) = α log π̂_h(a|s) − V_{h+1}(s')`` with ``V = α logsumexp(f̂/α) = 0`` at
    every state but the last, i.e. ``r̂ = α log π̂`` exactly; any per-state constant
    added to ``f̂`` would only add potential shaping.
    """
    return reward_from_q(mdp, alpha * torch.as_tensor(log_pi_hat, dtype=DTYPE), alpha)


def telescoped_total(mdp: TabularMDP, Q: torch.Tensor, alpha: float, demos) -> torch.Tensor:
    """Σ_h r̂_h along each trajectory, r̂ read off ``Q`` by eq. 8 (``reward_from_q``): [N].

    ``demos`` = (states, actions) [N, T], steps 0 … T−1 with T ≤ H (a trajectory cut before
    the horizon keeps the value of the state it stops in). The sum telescopes (eq. 12):
    ``α Σ_h log π_h(a_h|s_h) + V_0(s_0) − V_T(s_T)``, π = softmax(Q/α), V = α logsumexp(Q/α),
    V_H = 0. This reference sums the per-step rewards; the exercise derives the closed form.
    """
    states, actions = demos
    steps = torch.arange(states.shape[1]).expand_as(states)             # [N, T]
    return reward_from_q(mdp, Q, alpha)[steps, states, actions].sum(-1)


def bc_gap(mdp: TabularMDP, expert: torch.Tensor, policy_hat: torch.Tensor) -> float:
    """Theorem 2, behaviour cloning: ``V(π_E) − V(π̂)`` under the MDP's reward r* (eq. 1)."""
    return policy_value(mdp, expert) - policy_value(mdp, policy_hat)


def rl_policy(mdp: TabularMDP, r_hat: torch.Tensor) -> torch.Tensor:
    """π_RL: the exact optimum of ``r̂`` (hard value iteration, docs/paper.md §6), [H, S, A] one-hot."""
    return hard_value_iteration(mdp, reward=r_hat).policy


def rl_gap(mdp: TabularMDP, expert: torch.Tensor, r_hat: torch.Tensor) -> float:
    """Theorem 2, RL on the endogenous reward: ``V(π_E) − V(π_RL)`` under r*."""
    return policy_value(mdp, expert) - policy_value(mdp, rl_policy(mdp, r_hat))


# States and actions of the compounding-error chain.
ON_TRACK, DERAILED = 0, 1
GOOD, OK, MISTAKE = 0, 1, 2


@dataclass
class CompoundingError:
    """The example of Theorem 2, built by ``compounding_error_mdp``."""

    mdp: TabularMDP
    """the chain; ``mdp.reward`` is r*."""
    alpha: float
    """the temperature of the expert and of the endogenous reward."""
    eps: float
    """π̂'s per-step error: the probability it makes the mistake when on track."""
    delta: float
    """how much worse OK is than GOOD under r* (``α·eps``)."""
    expert: torch.Tensor
    """[H, S, A] π_E, soft-optimal for r* at ``alpha``."""
    policy_hat: torch.Tensor
    """[H, S, A] π̂, the behaviour-cloned policy with its two errors."""
    r_hat: torch.Tensor
    """[H, S, A] π̂'s endogenous reward (``tabular_endogenous_reward``)."""


def compounding_error_mdp(horizon: int, eps: float = 0.01, alpha: float = 0.1) -> CompoundingError:
    """A chain where imitation errors compound (gap ~ eps H²/2) and reward errors do not (~ δ H/2).

    Two states: ON_TRACK and DERAILED (absorbing, reward 0 forever). On track, GOOD earns
    1, OK earns ``1 − δ`` with ``δ = α·eps``, and MISTAKE earns 0 and derails. The expert
    is soft-optimal for this r*: it (almost) never derails, and prefers GOOD to OK by
    log-odds ``δ/α = eps``.

    π̂ has two errors of size eps on track: it makes the MISTAKE with probability eps,
    and it swaps the expert's GOOD/OK probabilities (log-odds −eps). Behaviour cloning
    then derails with probability ~eps per step and loses everything after:
    ``V(π_E) − V(π̂) ≈ eps·H(H+1)/2``. The swap makes r̂ = α log π̂ rank OK above GOOD,
    so RL on r̂ takes OK at every step and loses ``≈ δ·H/2`` against the expert, but it
    never derails: the mistake has tiny probability under π̂, so tiny r̂.

    eps here is a probability (a total-variation error per step), fixed as H grows. In
    log terms π̂'s error on the mistake is much larger than eps, because the expert almost
    never makes it: Theorem 2's ε_π of this π̂ is ≈ H/α (it grows with H), so the
    theorem's bounds ``H² ε_π`` and ``H ε_π`` say nothing here (both exceed H, the largest
    gap possible). A learner whose log-probabilities were all within eps of the expert's
    could derail at most e^eps times as often as the expert itself.
    """
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    delta = alpha * eps
    next_state = torch.tensor([[ON_TRACK, ON_TRACK, DERAILED],      # ON_TRACK: GOOD, OK, MISTAKE
                               [DERAILED, DERAILED, DERAILED]])     # DERAILED is absorbing
    reward = torch.tensor([[1.0, 1.0 - delta, 0.0],
                           [0.0, 0.0, 0.0]], dtype=DTYPE)
    mdp = TabularMDP(next_state, reward, horizon, torch.tensor([1.0, 0.0], dtype=DTYPE))
    expert = soft_value_iteration(mdp, alpha).policy                 # [H, 2, 3]
    policy_hat = expert.clone()
    on = expert[:, ON_TRACK]                                         # [H, 3]
    swapped = torch.stack([on[:, OK], on[:, GOOD], on[:, MISTAKE]], dim=-1)
    policy_hat[:, ON_TRACK] = (1 - eps) * swapped
    policy_hat[:, ON_TRACK, MISTAKE] += eps
    r_hat = tabular_endogenous_reward(mdp, policy_hat.log(), alpha)
    return CompoundingError(mdp, alpha, eps, delta, expert, policy_hat, r_hat)


def fit_exponent(horizons, gaps) -> float:
    """The slope of ``log gap`` against ``log H`` (least squares): gap ∝ H^slope."""
    x = torch.log(torch.as_tensor(horizons, dtype=DTYPE))
    y = torch.as_tensor(gaps, dtype=DTYPE)
    if x.shape != y.shape or x.numel() < 2:
        raise ValueError(f"need matching horizons and gaps, at least two, got {x.numel()} and {y.numel()}")
    if bool((y <= 0).any()) or not bool(torch.isfinite(y).all()):
        raise ValueError(f"gaps must be positive and finite to fit a power law, got {y.tolist()}")
    y = torch.log(y)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x * x).sum())

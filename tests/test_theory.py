"""Theorem 1 (preference TV ≤ α H ε_π / 2), measured on random MDPs; and Theorem 2's mechanism
(BC's gap ~ H², RL on r̂ ~ H) on a chain whose per-step error probability is fixed. That
chain's ε_π grows with H, so Theorem 2's bounds themselves (H² ε_π, H ε_π) are vacuous
there: the tests below measure the chain's gaps, not the theorem."""
import math

import pytest
import torch

from endorm_mini.irl import reward_from_q, shaping_residual
from endorm_mini.mdp import (TabularMDP, policy_value, random_mdp, reachable, reward_table,
                             sample_trajectories, soft_value_iteration, trajectory_return)
from endorm_mini.theory import (DERAILED, GOOD, MISTAKE, OK, ON_TRACK, bc_gap, bt_preference,
                                compounding_error_mdp, epsilon_pi, fit_exponent,
                                preference_tv, rl_gap, rl_policy, tabular_endogenous_reward,
                                theorem1_bound)

F64 = torch.float64
HORIZONS = [4, 8, 16, 32, 64]


# ------------------------------------------------------------------------ small pieces
def test_bt_preference_and_tv_by_hand():
    assert math.isclose(float(bt_preference(1.0, 0.0)), 1 / (1 + math.exp(-1)), rel_tol=1e-12)
    assert math.isclose(float(bt_preference(2.0, 2.0)), 0.5)
    # TV between (p, 1-p) and (q, 1-q), written out as ½ Σ over both outcomes.
    assert math.isclose(float(preference_tv(1.0, 0.0, 0.0, 0.0)), 1 / (1 + math.exp(-1)) - 0.5, rel_tol=1e-12)


def check_tv(tv_fn):
    g = torch.Generator().manual_seed(0)
    r = 3 * torch.randn(4, 100, generator=g, dtype=F64)
    p, q = torch.sigmoid(r[0] - r[1]), torch.sigmoid(r[2] - r[3])
    explicit = 0.5 * ((p - q).abs() + ((1 - p) - (1 - q)).abs())
    assert torch.allclose(tv_fn(*r), explicit, atol=1e-12)


def test_preference_tv_is_the_total_variation():
    check_tv(preference_tv)
    mutants = [lambda a, b, c, d: 0.5 * (torch.sigmoid(a - b) - torch.sigmoid(c - d)).abs(),  # half of it
               lambda a, b, c, d: (torch.sigmoid(a - c) - torch.sigmoid(b - d)).abs(),        # wrong pairing
               lambda a, b, c, d: ((a - b) - (c - d)).abs() / 4]                            # the Lipschitz bound
    for wrong in mutants:
        with pytest.raises(AssertionError):
            check_tv(wrong)


def test_epsilon_pi_with_and_without_mask():
    log_e = torch.zeros(2, 2, 2, dtype=F64)
    log_h = torch.zeros(2, 2, 2, dtype=F64)
    log_h[1, 1, 0] = -3.0                      # a big error in one state...
    log_h[0, 0, 1] = 0.5
    assert epsilon_pi(log_e, log_h) == 3.0
    mask = torch.tensor([[True, True], [True, False]])          # ... that is unreachable
    assert epsilon_pi(log_e, log_h, mask) == 0.5
    assert epsilon_pi(log_e, log_h, mask[:, :, None].expand(2, 2, 2)) == 0.5


def test_fit_exponent():
    H = torch.tensor(HORIZONS, dtype=F64)
    assert math.isclose(fit_exponent(H, 3 * H**2), 2.0, rel_tol=1e-12)
    assert math.isclose(fit_exponent(HORIZONS, (0.1 * H).tolist()), 1.0, rel_tol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        fit_exponent(HORIZONS, [1.0, 2.0, -1.0, 4.0, 5.0])
    with pytest.raises(ValueError, match="matching"):
        fit_exponent([4, 8], [1.0])


# ------------------------------------------------------------------------ Theorem 1
def theorem1_cases(n_mdps=50, pairs=5):
    """(TV, ε_π, α, H) for random MDPs, perturbed experts and response pairs from one start."""
    g = torch.Generator().manual_seed(0)
    for i in range(n_mdps):
        H = 2 + i % 7
        alpha = [0.3, 1.0, 2.0][i % 3]
        mdp = random_mdp(5, 3, H, seed=100 + i, single_start=True)
        expert = soft_value_iteration(mdp, alpha).policy
        noise = [0.01, 0.1, 0.5][i % 3] * torch.randn(expert.shape, generator=g, dtype=F64)
        log_hat = torch.log_softmax(expert.log() + noise, -1)
        # π̂'s logits, with an arbitrary per-state constant (it only adds shaping).
        logits = alpha * log_hat + torch.randn(H, 5, 1, generator=g, dtype=F64)
        r_hat = reward_from_q(mdp, logits, alpha)
        eps = epsilon_pi(expert.log(), log_hat, reachable(mdp))
        tau = sample_trajectories(mdp, torch.full_like(expert, 1 / 3), 2 * pairs, g)
        r_star_tau = trajectory_return(reward_table(mdp), *tau)
        r_hat_tau = trajectory_return(r_hat, *tau)
        tv = preference_tv(r_star_tau[:pairs], r_star_tau[pairs:], r_hat_tau[:pairs], r_hat_tau[pairs:])
        for value in tv.tolist():
            yield value, eps, alpha, H


def tight_case(eps=1e-3, alpha=0.5, H=10):
    """One state, two actions, uniform expert; π̂ leans to action 0 by log-ratio ε at every step.

    τ = all action 0, τ' = all action 1: every step of both adds ≈ ε to the reward gap, so
    TV ≈ σ'(0)·2αHε = αHε/2, the bound itself.
    """
    mdp = TabularMDP(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2), H, torch.ones(1))
    expert = soft_value_iteration(mdp, alpha).policy                     # uniform (r* = 0)
    p = math.exp(eps) / 2
    log_hat = torch.log(torch.tensor([p, 1 - p], dtype=F64)).expand(H, 1, 2)
    r_hat = tabular_endogenous_reward(mdp, log_hat, alpha)
    states = torch.zeros(2, H, dtype=torch.long)
    actions = torch.stack([torch.zeros(H, dtype=torch.long), torch.ones(H, dtype=torch.long)])
    r_star = trajectory_return(reward_table(mdp), states, actions)
    r_hat_tau = trajectory_return(r_hat, states, actions)
    tv = float(preference_tv(r_star[0], r_star[1], r_hat_tau[0], r_hat_tau[1]))
    return tv, epsilon_pi(expert.log(), log_hat), alpha, H


def check_theorem1(bound):
    cases = list(theorem1_cases())
    assert len(cases) >= 200
    for tv, eps, alpha, H in cases:
        assert tv <= bound(alpha, H, eps) + 1e-12
    tv, eps, alpha, H = tight_case()
    assert tv <= bound(alpha, H, eps) + 1e-12
    assert tv / bound(alpha, H, eps) > 0.95                 # the bound is (almost) attained


def test_theorem1_bound_holds_on_random_mdps_and_is_tight():
    check_theorem1(theorem1_bound)


@pytest.mark.parametrize("wrong", [lambda a, H, e: a * H * H * e / 2,     # H² where H is needed
                                   lambda a, H, e: a * H * e / 4,         # a factor too small
                                   lambda a, H, e: H * e / 2])            # forgot α
def test_theorem1_check_rejects_wrong_bounds(wrong):
    with pytest.raises(AssertionError):
        check_theorem1(wrong)


def test_true_reward_is_alpha_log_expert_plus_shaping():
    """The premise of Theorem 1: the expert's reward r* equals α log π_E up to shaping."""
    mdp, alpha = random_mdp(5, 3, 6, seed=9), 0.8
    expert = soft_value_iteration(mdp, alpha).policy
    assert shaping_residual(mdp, mdp.reward, tabular_endogenous_reward(mdp, expert.log(), alpha)) < 1e-8


# ------------------------------------------------------------------------ Theorem 2's mechanism
def gaps(eps):
    bc, rl = [], []
    for H in HORIZONS:
        c = compounding_error_mdp(H, eps=eps)
        bc.append(bc_gap(c.mdp, c.expert, c.policy_hat))
        rl.append(rl_gap(c.mdp, c.expert, c.r_hat))
    return bc, rl


@pytest.mark.parametrize("eps", [0.01, 0.002])
def test_chain_with_fixed_per_step_error_bc_gap_grows_like_h_squared_rl_gap_like_h(eps):
    """On compounding_error_mdp, π̂ derails with probability eps at every step, for every H:
    V(π_E) − V(π̂) ∝ H² and V(π_E) − V(π_RL) ∝ H in that fixed per-step (TV) error."""
    bc, rl = gaps(eps)
    assert 1.8 <= fit_exponent(HORIZONS, bc) <= 2.2
    assert fit_exponent(HORIZONS, rl) <= 1.1
    assert all(b > r > 0 for b, r in zip(bc, rl))


def test_compounding_error_mdp_mechanics():
    c = compounding_error_mdp(16, eps=0.01, alpha=0.1)
    on = c.expert[:, ON_TRACK]
    assert float(on[:, MISTAKE].max()) < 1e-4                            # the expert stays on track
    assert torch.allclose(c.policy_hat[:, ON_TRACK, MISTAKE], torch.full((16,), 0.01, dtype=F64), atol=1e-4)
    pi_rl = rl_policy(c.mdp, c.r_hat)
    assert torch.equal(pi_rl[:, ON_TRACK].argmax(-1), torch.full((16,), OK))   # misranked, never derails
    # RL's loss is the per-step misranking, δ·P_E(GOOD) summed over steps (less the
    # expert's own rare mistakes, which RL does not make).
    expected = c.delta * float(on[:, GOOD].sum())
    assert math.isclose(rl_gap(c.mdp, c.expert, c.r_hat), expected, rel_tol=1e-2)
    # BC derails with probability eps per step: ≈ eps·H(H+1)/2 to first order.
    assert math.isclose(bc_gap(c.mdp, c.expert, c.policy_hat), 0.01 * 16 * 17 / 2, rel_tol=0.1)
    assert c.mdp.next_state[DERAILED].eq(DERAILED).all()


def test_chain_exponent_check_rejects_rl_that_is_just_bc():
    """Mutation: if "RL" returned π̂ itself, the RL exponent test would fail."""
    c_list = [compounding_error_mdp(H, eps=0.01) for H in HORIZONS]
    fake_rl = [policy_value(c.mdp, c.expert) - policy_value(c.mdp, c.policy_hat) for c in c_list]
    assert fit_exponent(HORIZONS, fake_rl) > 1.1


def test_chain_epsilon_pi_grows_with_h_so_theorem2_bounds_are_vacuous_there():
    """What the chain is not: a case of Theorem 2 at fixed ε_π. The expert's probability of
    the mistake falls like e^{−(H−h)/α}, so ε_π (a max of log-ratios) grows like H/α, and
    the bound H ε_π exceeds H, the largest gap any policy can have (rewards ≤ 1 a step)."""
    eps_pi = []
    for H in HORIZONS:
        c = compounding_error_mdp(H, eps=0.01, alpha=0.1)
        eps_pi.append(epsilon_pi(c.expert.log(), c.policy_hat.log(), reachable(c.mdp)))
        assert H * eps_pi[-1] > H >= bc_gap(c.mdp, c.expert, c.policy_hat)
    assert 0.9 <= fit_exponent(HORIZONS, eps_pi) <= 1.1


def test_compounding_error_bad_input():
    with pytest.raises(ValueError, match="eps"):
        compounding_error_mdp(8, eps=0.0)
    with pytest.raises(ValueError, match="alpha"):
        compounding_error_mdp(8, alpha=-1.0)

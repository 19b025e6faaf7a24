"""Tabular soft value iteration, exact policy values, and the token MDP (docs/paper.md §1, §4)."""
import math

import pytest
import torch

from endorm_mini.mdp import (SoftQ, TabularMDP, TokenMDP, hard_value_iteration, policy_value,
                             random_mdp, reachable, response_distribution, reward_table,
                             sample_trajectories, soft_value_iteration, state_occupancy,
                             trajectory_return, value_by_enumeration, value_by_monte_carlo)

F64 = torch.float64


def one_state_mdp(horizon):
    """One state, two actions with rewards 1 and 0: small enough to solve by hand."""
    return TabularMDP(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[1.0, 0.0]]), horizon,
                      torch.ones(1))


def test_soft_value_iteration_by_hand():
    out = soft_value_iteration(one_state_mdp(2), alpha=1.0)
    v = math.log(math.e + 1)                                    # log(e^1 + e^0)
    assert torch.allclose(out.V[:, 0], torch.tensor([2 * v, v, 0.0], dtype=F64))
    assert torch.allclose(out.Q[0, 0], torch.tensor([1 + v, v], dtype=F64))
    assert torch.allclose(out.policy[1, 0], torch.tensor([math.e, 1.0], dtype=F64) / (math.e + 1))
    # alpha = 2: V = 2 log(e^(1/2) + 1) at the last step.
    out = soft_value_iteration(one_state_mdp(1), alpha=2.0)
    assert math.isclose(float(out.V[0, 0]), 2 * math.log(math.exp(0.5) + 1), rel_tol=1e-12)


def soft_identity_gap(mdp, alpha, out):
    """Soft value = expected return + α·expected entropy of the policy (an independent check)."""
    d = state_occupancy(mdp, out.policy)
    entropy = -(d[:, :, None] * out.policy * out.policy.log()).sum()
    return abs(float(mdp.initial @ out.V[0]) - (policy_value(mdp, out.policy) + alpha * float(entropy)))


@pytest.mark.parametrize("alpha", [0.3, 1.0, 2.5])
def test_soft_value_is_return_plus_entropy(alpha):
    mdp = random_mdp(6, 3, 5, seed=1)
    assert soft_identity_gap(mdp, alpha, soft_value_iteration(mdp, alpha)) < 1e-10


def test_wrong_backups_break_the_identity():
    """Mutations of soft VI (max instead of logsumexp; V_h(s') instead of V_{h+1}(s')) are caught."""
    mdp, alpha = random_mdp(6, 3, 5, seed=1), 1.0
    r = reward_table(mdp)
    H, S, A = r.shape
    for mutant in ("max", "same_step"):
        Q, V = torch.zeros(H, S, A, dtype=F64), torch.zeros(H + 1, S, dtype=F64)
        for h in reversed(range(H)):
            Q[h] = r[h] + (V[h] if mutant == "same_step" else V[h + 1])[mdp.next_state]
            V[h] = Q[h].max(-1).values if mutant == "max" else alpha * torch.logsumexp(Q[h] / alpha, -1)
        wrong = SoftQ(Q, V, torch.softmax(Q / alpha, -1))
        assert soft_identity_gap(mdp, alpha, wrong) > 1e-2, mutant


def test_soft_expert_maximises_entropy_regularised_return():
    mdp, alpha = random_mdp(5, 3, 4, seed=2), 0.7
    best = soft_value_iteration(mdp, alpha)
    target = float(mdp.initial @ best.V[0])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = best.policy.log() + 0.3 * torch.randn(best.policy.shape, generator=g, dtype=F64)
        out = best._replace(policy=torch.softmax(logits, -1))
        d = state_occupancy(mdp, out.policy)
        entropy = -(d[:, :, None] * out.policy * out.policy.log()).sum()
        assert policy_value(mdp, out.policy) + alpha * float(entropy) < target


def test_hard_value_iteration_is_the_optimum_and_the_soft_limit():
    mdp = random_mdp(6, 3, 5, seed=3)
    hard = hard_value_iteration(mdp)
    v_star = policy_value(mdp, hard.policy)
    assert math.isclose(v_star, float(mdp.initial @ hard.V[0]), rel_tol=1e-12)
    g = torch.Generator().manual_seed(1)
    for _ in range(50):                                          # no policy beats it
        policy = torch.softmax(3 * torch.randn(hard.policy.shape, generator=g, dtype=F64), -1)
        assert policy_value(mdp, policy) <= v_star + 1e-12
    soft = soft_value_iteration(mdp, alpha=1e-3)                 # α → 0
    assert torch.allclose(soft.V, hard.V, atol=5 * 1e-3 * math.log(3))


def test_occupancy_and_exact_value_match_sampling():
    mdp, alpha = random_mdp(5, 3, 6, seed=4, single_start=True), 0.5
    policy = soft_value_iteration(mdp, alpha).policy
    d = state_occupancy(mdp, policy)
    assert torch.allclose(d.sum(-1), torch.ones(6, dtype=F64))
    assert not bool((d > 0)[~reachable(mdp)].any())             # mass only where reachable
    demos = sample_trajectories(mdp, policy, 20000, torch.Generator().manual_seed(0))
    returns = trajectory_return(reward_table(mdp), *demos)
    stderr = float(returns.std()) / math.sqrt(len(returns))
    assert abs(float(returns.mean()) - policy_value(mdp, policy)) < 4 * stderr
    empirical = torch.stack([torch.bincount(demos.states[:, h], minlength=5) for h in range(6)]) / 20000
    assert torch.allclose(empirical.to(F64), d, atol=0.02)


def test_sampling_is_reproducible():
    mdp = random_mdp(4, 2, 3, seed=0)
    policy = soft_value_iteration(mdp, 1.0).policy
    a = sample_trajectories(mdp, policy, 10, torch.Generator().manual_seed(7))
    b = sample_trajectories(mdp, policy, 10, torch.Generator().manual_seed(7))
    assert torch.equal(a.states, b.states) and torch.equal(a.actions, b.actions)
    assert torch.equal(a.states[:, 1], mdp.next_state[a.states[:, 0], a.actions[:, 0]])


def test_bad_mdps_are_refused():
    with pytest.raises(ValueError, match="next_state"):
        TabularMDP(torch.tensor([[0, 5]]), torch.zeros(1, 2), 2, torch.ones(1))
    with pytest.raises(ValueError, match="initial"):
        TabularMDP(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2), 2, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="reward"):
        TabularMDP(torch.zeros(1, 2, dtype=torch.long), torch.zeros(3, 1, 2), 2, torch.ones(1))
    with pytest.raises(ValueError, match="absorbing"):
        TabularMDP(torch.tensor([[1], [0]]), torch.zeros(2, 1), 2, torch.tensor([1.0, 0.0]),
                   terminal=torch.tensor([False, True]))
    with pytest.raises(ValueError, match="no reward"):
        TabularMDP(torch.tensor([[1], [1]]), torch.ones(2, 1), 2, torch.tensor([1.0, 0.0]),
                   terminal=torch.tensor([False, True]))
    with pytest.raises(ValueError, match="alpha"):
        soft_value_iteration(one_state_mdp(2), alpha=0.0)
    with pytest.raises(ValueError, match="policy"):
        policy_value(one_state_mdp(2), torch.full((2, 1, 2), 0.7))


# ------------------------------------------------------------------------ the token MDP
VOCAB, EOS, H = 3, 0, 4


def toy_policy(prefix):
    """Depends on the whole prefix, like a language model."""
    g = torch.Generator().manual_seed(hash(prefix) % 2**31)
    return torch.softmax(torch.randn(VOCAB, generator=g, dtype=F64), -1)


def toy_reward(prefix, token):
    return float(token == 1) - 0.25 * len(prefix) + (0.5 if prefix[-1:] == (2,) and token == EOS else 0.0)


def test_token_mdp_enumeration():
    tm = TokenMDP(VOCAB, EOS, H)
    assert len(tm.prefixes()) == sum((VOCAB - 1) ** k for k in range(H))
    dist = response_distribution(tm, toy_policy)
    assert math.isclose(sum(dist.values()), 1.0, rel_tol=1e-12)
    for tau in dist:                                             # eos ends a response, H caps it
        assert len(tau) <= H and EOS not in tau[:-1]
        assert tau[-1] == EOS or len(tau) == H
    # A hand-built one-token MDP: V = Σ_a π(a) r(a).
    one = TokenMDP(VOCAB, EOS, 1)
    expected = sum(float(p) * toy_reward((), a) for a, p in enumerate(toy_policy(())))
    assert math.isclose(value_by_enumeration(one, toy_policy, toy_reward), expected, rel_tol=1e-12)


def test_token_mdp_enumeration_equals_tabular_value():
    """Two implementations of eq. 1: the response tree, and forward occupancy on the tabular MDP."""
    tm = TokenMDP(VOCAB, EOS, H)
    mdp, prefixes = tm.to_tabular(toy_reward)
    table = torch.stack([toy_policy(p) for p in prefixes] + [torch.full((VOCAB,), 1 / VOCAB, dtype=F64)])
    policy = table.expand(H, *table.shape)
    exact = value_by_enumeration(tm, toy_policy, toy_reward)
    assert math.isclose(policy_value(mdp, policy), exact, rel_tol=1e-10)
    # Soft VI on the tree gives a policy whose soft value is the log-partition over responses.
    soft = soft_value_iteration(mdp, alpha=1.0)
    log_z = math.log(sum(math.exp(sum(toy_reward(t[:h], a) for h, a in enumerate(t)))
                         for t in response_distribution(tm, lambda p: torch.full((VOCAB,), 1 / VOCAB))))
    assert math.isclose(float(soft.V[0, prefixes.index(())]), log_z, rel_tol=1e-10)


def test_token_mdp_monte_carlo_converges():
    tm = TokenMDP(VOCAB, EOS, H)
    exact = value_by_enumeration(tm, toy_policy, toy_reward)
    est = value_by_monte_carlo(tm, toy_policy, toy_reward, 4000, torch.Generator().manual_seed(0))
    assert 0 < est.stderr < 0.05 and abs(est.mean - exact) < 4 * est.stderr


def test_token_mdp_bad_input():
    with pytest.raises(ValueError, match="eos"):
        TokenMDP(3, 3, 2)
    tm = TokenMDP(VOCAB, EOS, 2)
    with pytest.raises(ValueError, match="probabilities"):
        value_by_enumeration(tm, lambda p: torch.tensor([0.5, 0.6, 0.1]), toy_reward)
    with pytest.raises(ValueError, match="probabilities"):
        value_by_enumeration(tm, lambda p: torch.ones(2) / 2, toy_reward)

"""Inverse soft-Q (eq. 7) and reward recovery (eq. 8), up to potential shaping."""
import pytest
import torch

from endorm_mini.irl import (action_counts, fit_potential, inverse_soft_q, log_likelihood,
                             reward_from_q, shaping_residual)
from endorm_mini.mdp import (TokenMDP, random_mdp, reachable, reward_table, sample_trajectories,
                             soft_value_iteration, trajectory_return)

F64 = torch.float64


def expert_logits(mdp, alpha, seed):
    """Exact expert logits: α log π_E plus an arbitrary per-state constant (as an LM's logits are)."""
    policy = soft_value_iteration(mdp, alpha).policy
    g = torch.Generator().manual_seed(seed)
    const = 5 * torch.randn(mdp.horizon, mdp.num_states, 1, generator=g, dtype=F64)
    return policy, alpha * policy.log() + const


@pytest.mark.parametrize("seed,alpha", [(0, 1.0), (1, 0.3), (2, 2.0), (3, 0.7)])
def test_exact_logits_recover_the_reward_up_to_shaping(seed, alpha):
    mdp = random_mdp(6, 3, 5, seed=seed)
    expert, Q = expert_logits(mdp, alpha, seed)
    r_hat = reward_from_q(mdp, Q, alpha)
    assert shaping_residual(mdp, mdp.reward, r_hat) < 1e-8
    # ... and its soft-optimal policy is the expert's, everywhere.
    assert torch.allclose(soft_value_iteration(mdp, alpha, reward=r_hat).policy, expert, atol=1e-10)
    # The per-token rewards themselves are NOT the true ones: only up to shaping.
    assert (r_hat - reward_table(mdp)).abs().max() > 0.1


def test_q_is_the_soft_q_of_the_recovered_reward():
    """Eq. 8 inverts the soft Bellman backup: soft VI on r̂ gives back Q exactly."""
    mdp, alpha = random_mdp(5, 4, 4, seed=5), 0.5
    Q = torch.randn(4, 5, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    r_hat = reward_from_q(mdp, Q, alpha)
    assert torch.allclose(soft_value_iteration(mdp, alpha, reward=r_hat).Q, Q, atol=1e-12)


def test_wrong_recoveries_are_not_shaping():
    """Mutation proof: the residual rejects rewards that are not the true one up to shaping."""
    mdp, alpha = random_mdp(6, 3, 5, seed=0), 0.7
    expert, Q = expert_logits(mdp, alpha, 0)
    V = torch.zeros(6, 6, dtype=F64)
    V[:-1] = alpha * torch.logsumexp(Q / alpha, -1)
    V_wrong_alpha = torch.zeros(6, 6, dtype=F64)
    V_wrong_alpha[:-1] = torch.logsumexp(Q, -1)                   # forgot α
    mutants = {
        "Q alone": Q,
        "V_h(s') instead of V_{h+1}(s')": Q - V[:-1][:, mdp.next_state],
        "V without alpha": Q - V_wrong_alpha[1:][:, mdp.next_state],
        "true reward + noise": reward_table(mdp) + 0.1 * torch.randn(5, 6, 3, dtype=F64,
                                                                    generator=torch.Generator().manual_seed(1)),
    }
    for name, r_wrong in mutants.items():
        assert shaping_residual(mdp, mdp.reward, r_wrong) > 0.02, name
    # Not a mutant: α log π_E = Q − V_h(s) is the true reward up to shaping (Φ = −V*).
    assert shaping_residual(mdp, mdp.reward, alpha * expert.log()) < 1e-8


def test_shaping_residual_positive_and_negative_controls():
    mdp = random_mdp(5, 3, 4, seed=7)
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(5, 5, generator=g, dtype=F64)
    phi[-1] = 0                                                   # Φ_{H+1} = 0
    shaped = reward_table(mdp) + phi[:-1, :, None] - phi[1:][:, mdp.next_state]
    found, residual = fit_potential(mdp, mdp.reward, shaped)
    assert residual.abs().max() < 1e-10
    R = reachable(mdp)
    assert torch.allclose(found[:-1][R], phi[:-1][R], atol=1e-8)  # Φ is identified where reachable
    # A potential on the final state is not shaping: it changes which endings are preferred.
    phi[-1] = torch.randn(5, generator=g, dtype=F64)
    final = reward_table(mdp) + phi[:-1, :, None] - phi[1:][:, mdp.next_state]
    assert shaping_residual(mdp, mdp.reward, final) > 0.05


def test_counts_and_gradient_solvers_agree():
    mdp, alpha = random_mdp(6, 3, 4, seed=1), 0.5
    demos = sample_trajectories(mdp, soft_value_iteration(mdp, alpha).policy, 300,
                                torch.Generator().manual_seed(0))
    closed = inverse_soft_q(mdp, demos, alpha, method="counts")
    fitted = inverse_soft_q(mdp, demos, alpha, method="gradient", steps=400)
    assert torch.allclose(torch.softmax(closed / alpha, -1), torch.softmax(fitted / alpha, -1), atol=1e-3)
    r1, r2 = reward_from_q(mdp, closed, alpha), reward_from_q(mdp, fitted, alpha)
    assert shaping_residual(mdp, r1, r2) < 1e-2
    # The closed form maximises eq. 7 (smoothing → 0): any perturbation lowers the likelihood.
    mle = inverse_soft_q(mdp, demos, alpha, smoothing=1e-9)
    best = log_likelihood(mle, demos, alpha)
    g = torch.Generator().manual_seed(2)
    for _ in range(10):
        other = mle + 0.1 * torch.randn(mle.shape, generator=g, dtype=F64)
        assert log_likelihood(other, demos, alpha) < best
    assert log_likelihood(mle, demos, alpha) > log_likelihood(torch.zeros_like(mle), demos, alpha)


def test_error_shrinks_with_more_demonstrations():
    mdp, alpha = random_mdp(5, 3, 4, seed=3), 1.0
    expert = soft_value_iteration(mdp, alpha).policy
    R = reachable(mdp)
    reward_errors, policy_errors = [], []
    for n in (100, 1000, 10000):
        demos = sample_trajectories(mdp, expert, n, torch.Generator().manual_seed(n))
        Q = inverse_soft_q(mdp, demos, alpha)
        reward_errors.append(shaping_residual(mdp, mdp.reward, reward_from_q(mdp, Q, alpha)))
        policy_errors.append(float((torch.softmax(Q / alpha, -1) - expert).abs()[R].max()))
    assert reward_errors[0] > reward_errors[1] > reward_errors[2]
    assert policy_errors[0] > policy_errors[1] > policy_errors[2]
    assert reward_errors[2] < 0.3 * reward_errors[0]


def every_episode(mdp):
    """Every action sequence of length H from the single start state, and its states: [N, H]."""
    H = mdp.horizon
    actions = torch.cartesian_prod(*[torch.arange(mdp.num_actions)] * H).reshape(-1, H)
    states = torch.empty_like(actions)
    s = torch.full((len(actions),), int(mdp.initial.argmax()))
    for h in range(mdp.horizon):
        states[:, h] = s
        s = mdp.next_state[s, actions[:, h]]
    return states, actions


def test_token_tree_rewards_recovered_from_logits():
    """On the token MDP the recovered reward has the same response totals as the true one,
    up to one constant shared by every response (the start state's potential)."""
    tm = TokenMDP(vocab_size=3, eos=0, horizon=3)
    mdp, prefixes = tm.to_tabular(lambda p, a: float(a == 2) - 0.3 * len(p))
    _, Q = expert_logits(mdp, 1.0, seed=0)              # random constants, terminal state too
    r_hat = reward_from_q(mdp, Q, 1.0)
    assert shaping_residual(mdp, mdp.reward, r_hat) < 1e-8
    assert float(r_hat[:, -1].abs().max()) == 0.0                 # nothing after eos
    episodes = every_episode(mdp)                                 # 27, ending at steps 1, 2 and 3
    offset = trajectory_return(r_hat, *episodes) - trajectory_return(reward_table(mdp), *episodes)
    assert float(offset.max() - offset.min()) < 1e-9


def test_action_counts_and_bad_input():
    mdp = random_mdp(3, 2, 2, seed=0)
    demos = sample_trajectories(mdp, soft_value_iteration(mdp, 1.0).policy, 50,
                                torch.Generator().manual_seed(0))
    counts = action_counts(mdp, demos)
    assert counts.shape == (2, 3, 2) and torch.equal(counts.sum((1, 2)), torch.full((2,), 50.0, dtype=F64))
    assert counts[0, demos.states[0, 0], demos.actions[0, 0]] >= 1
    with pytest.raises(ValueError, match="method"):
        inverse_soft_q(mdp, demos, method="adam")
    with pytest.raises(ValueError, match="smoothing"):
        inverse_soft_q(mdp, demos, smoothing=0.0)
    with pytest.raises(ValueError, match=r"\[N, H=2\]"):
        inverse_soft_q(mdp, (demos.states[:, :1], demos.actions[:, :1]))
    with pytest.raises(ValueError, match="Q must be"):
        reward_from_q(mdp, torch.zeros(2, 3), 1.0)

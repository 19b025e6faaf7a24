"""Eq. 8 at the end of a response: V = 0 at the terminal state, and the shaping checker
(irl.fit_potential) that must see when it is not.

The counterexample: a token tree where every word earns 0.7 and eos earns nothing, so the
best response never stops (true value 3 × 0.7 = 2.1). An LM's logits carry an arbitrary
constant per state, the padding state after eos included. Eq. 8 with that state's value
left in (not zeroed) pays −V(terminal) for stopping: a bonus for ending early, and the
RL optimum of that reward says eos at once (true value 0.0). A checker that lets the
terminal state carry a potential calls that reward "equal up to shaping" (residual ~1e-15).
"""
import pytest
import torch

from endorm_mini.irl import fit_potential, reward_from_q, shaping_residual
from endorm_mini.mdp import (DTYPE, TokenMDP, hard_value_iteration, policy_value, reward_table,
                             soft_value_iteration)
from endorm_mini.reward import soft_value


def word_tree(alpha=1.0):
    """Vocabulary {eos, w1, w2}, horizon 3, r* = 0.7 per word; the expert's logits with
    constants −20, −10 on the terminal state's logits at steps 2 and 3."""
    tm = TokenMDP(vocab_size=3, eos=0, horizon=3)
    mdp, _ = tm.to_tabular(lambda prefix, a: 0.7 * (a != 0))
    Q = alpha * soft_value_iteration(mdp, alpha).policy.log()                 # [H, S, A]
    Q[:, mdp.terminal] -= torch.tensor([0.0, 20.0, 10.0], dtype=DTYPE)[:, None, None]
    return mdp, Q


def eq8_terminal_value_kept(mdp, Q, alpha):
    """The bug: eq. 8 with V(terminal) = α logsumexp(Q/α) left in (only V_{H+1} = 0)."""
    V = torch.zeros(mdp.horizon + 1, mdp.num_states, dtype=DTYPE)
    V[:-1] = soft_value(Q, alpha)
    r_hat = Q - V[1:][:, mdp.next_state]
    r_hat[:, mdp.terminal] = 0.0
    return r_hat


def rl_value(mdp, r_hat):
    """True value (under r*) of the exact RL optimum of r_hat."""
    return policy_value(mdp, hard_value_iteration(mdp, reward=r_hat).policy)


def test_early_ending_bonus_changes_the_optimum_and_is_not_shaping():
    mdp, Q = word_tree()
    right, wrong = reward_from_q(mdp, Q, 1.0), eq8_terminal_value_kept(mdp, Q, 1.0)
    assert rl_value(mdp, mdp.reward) == pytest.approx(2.1)
    assert rl_value(mdp, right) == pytest.approx(2.1)
    assert rl_value(mdp, wrong) == pytest.approx(0.0)                         # says eos at once
    assert shaping_residual(mdp, mdp.reward, right) < 1e-8
    assert shaping_residual(mdp, mdp.reward, wrong) > 1.0                     # was 3.6e-15
    # The potential found for the right reward is 0 on the terminal state at every step.
    phi, _ = fit_potential(mdp, mdp.reward, right)
    assert float(phi[:, mdp.terminal].abs().max()) == 0.0


def test_a_reward_paid_on_the_padding_is_not_shaping():
    """A reward collected after eos changes returns: the default mask includes terminal rows."""
    mdp, Q = word_tree()
    padded = reward_from_q(mdp, Q, 1.0)
    padded[1:, mdp.terminal] = 0.5
    assert shaping_residual(mdp, mdp.reward, padded) == pytest.approx(0.5)


def test_shaping_with_a_zero_terminal_potential_is_still_shaping():
    """Negative control: any Φ with Φ(terminal) = 0 and Φ_{H+1} = 0 passes."""
    mdp, _ = word_tree()
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(mdp.horizon + 1, mdp.num_states, generator=g, dtype=DTYPE)
    phi[-1] = 0.0
    phi[:, mdp.terminal] = 0.0
    r = reward_table(mdp)
    shaped = r + phi[:-1, :, None] - phi[1:][:, mdp.next_state]
    shaped[:, mdp.terminal] = 0.0
    assert shaping_residual(mdp, r, shaped) < 1e-10
    assert rl_value(mdp, shaped) == pytest.approx(2.1)

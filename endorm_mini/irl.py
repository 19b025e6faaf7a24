"""Inverse soft-Q learning on tabular demonstrations, and reward recovery (eq. 6–8).

MaxEnt IRL (eq. 6) looks for a reward whose soft-optimal policy explains the expert.
Inverse soft-Q skips the reward: fit a Q-table directly so that ``softmax(Q/α)`` gives the
demonstrations maximum likelihood (eq. 7),

    max_Q  Σ_i Σ_h [ Q_h(s_h^i, a_h^i) − α log Σ_a exp(Q_h(s_h^i, a)/α) ]   (scaled by 1/α),

then read the reward off the soft Bellman equation with γ = 1 (eq. 8):

    r̂_h(s, a) = Q_h(s, a) − V_Q,h+1(s'),   V_Q,h(s) = α logsumexp(Q_h(s,·)/α),  V_Q,H+1 = 0.

Eq. 7 is next-token prediction (eq. 2) with the logits called Q: this is why a language
model's logits already are a soft-Q function (eq. 10–12, ``endorm_mini.reward``).

Two solvers of eq. 7 are given, and a test checks they agree:
- ``method="counts"`` (default): the closed form. The objective splits into one softmax
  likelihood per (h, s), maximised by ``Q_h(s, a) = α log p̂_h(a|s)`` (+ any per-state
  constant), with ``p̂`` the empirical action frequencies smoothed by ``smoothing``
  pseudo-counts (unvisited actions then stay finite; unvisited states get uniform).
- ``method="gradient"``: Adam on eq. 7 itself (plus the same pseudo-counts), the way a
  neural network would be trained. It reaches the closed form up to optimisation error.

Q is identified only up to a per-state constant, and so r̂ only up to potential-based
shaping ``r̂ − r = Φ_h(s) − Φ_{h+1}(s')`` (with ``Φ_{H+1} = 0``, and ``Φ = 0`` at terminal
states), which changes no policy's ranking. ``shaping_residual`` measures how far two
rewards are from that.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .mdp import DTYPE, TabularMDP, Trajectories, reachable, reward_table
from .reward import soft_value  # V = α logsumexp(Q/α): the same function scores LMs (the V of eq. 12)


def _check_demos(mdp: TabularMDP, demos: Trajectories) -> tuple[torch.Tensor, torch.Tensor]:
    states, actions = demos
    if states.shape != actions.shape or states.dim() != 2 or states.shape[1] != mdp.horizon:
        raise ValueError(f"demonstrations must be states and actions of shape [N, H={mdp.horizon}], "
                         f"got {tuple(states.shape)} and {tuple(actions.shape)}")
    if states.numel() == 0:
        raise ValueError("no demonstrations")
    return states.long(), actions.long()


def action_counts(mdp: TabularMDP, demos: Trajectories) -> torch.Tensor:
    """``n[h, s, a]``: how often the demonstrations take action a in state s at step h."""
    states, actions = _check_demos(mdp, demos)
    H, S, A = mdp.horizon, mdp.num_states, mdp.num_actions
    flat = (torch.arange(H) * S * A + states * A + actions).flatten()   # [N*H] index into [H,S,A]
    return torch.bincount(flat, minlength=H * S * A).reshape(H, S, A).to(DTYPE)


def log_likelihood(Q: torch.Tensor, demos: Trajectories, alpha: float) -> torch.Tensor:
    """Eq. 7's objective: ``Σ_i Σ_h log softmax(Q_h(s_h^i, ·)/α)[a_h^i]`` (differentiable)."""
    states, actions = demos
    steps = torch.arange(states.shape[1]).expand_as(states)               # [N, H]
    logp = torch.log_softmax(Q / alpha, dim=-1)                           # [H, S, A]
    return logp[steps, states, actions].sum()


def inverse_soft_q(mdp: TabularMDP, demos: Trajectories, alpha: float = 1.0,
                   smoothing: float = 0.1, method: str = "counts", steps: int = 500,
                   lr: float = 0.1, progress: bool = False) -> torch.Tensor:
    """Fit ``Q [H, S, A]`` to demonstrations by eq. 7; ``softmax(Q/α)`` is then the fitted policy.

    ``smoothing`` adds that many pseudo-observations of every action in every (h, s)
    (a Dirichlet prior), so Q stays finite. ``method`` is ``"counts"`` (closed form) or
    ``"gradient"`` (Adam, ``steps`` steps at learning rate ``lr``, from Q = 0).
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if smoothing <= 0:
        raise ValueError(f"smoothing must be > 0 (unvisited actions would get Q = -inf), got {smoothing}")
    counts = action_counts(mdp, demos) + smoothing                        # [H, S, A]
    if method == "counts":
        return alpha * torch.log(counts / counts.sum(-1, keepdim=True))
    if method != "gradient":
        raise ValueError(f"method must be 'counts' or 'gradient', got {method!r}")
    # Eq. 7 summed over demonstrations and pseudo-counts alike is Σ n·log softmax(Q/α);
    # dividing by the number of episodes keeps the step size independent of N.
    Q = torch.zeros(mdp.horizon, mdp.num_states, mdp.num_actions, dtype=DTYPE, requires_grad=True)
    opt = torch.optim.Adam([Q], lr=lr)
    n_episodes = demos[0].shape[0]
    for _ in tqdm(range(steps), desc="inverse soft-Q", disable=not progress):
        loss = -(counts * torch.log_softmax(Q / alpha, dim=-1)).sum() / n_episodes
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Q.detach()


def reward_from_q(mdp: TabularMDP, Q: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 8 with γ = 1: ``r̂_h(s, a) = Q_h(s, a) − V_Q,h+1(s')``, with ``V_Q,H+1 = 0``.

    Terminal states (``mdp.terminal``, the state after ``eos``) have V = 0 and r̂ = 0,
    as in the endogenous reward's contract (README, "The endogenous reward's contract").

    Q [H, S, A] -> r̂ [H, S, A]. By construction Q is the soft-Q of r̂ (the soft Bellman
    equation holds exactly), so ``soft_value_iteration(mdp, alpha, reward=r̂).policy ==
    softmax(Q/α)``: the recovered reward reproduces the fitted policy.
    """
    Q = torch.as_tensor(Q, dtype=DTYPE)
    shape = (mdp.horizon, mdp.num_states, mdp.num_actions)
    if Q.shape != shape:
        raise ValueError(f"Q must be [H, S, A] = {list(shape)}, got {tuple(Q.shape)}")
    V = torch.zeros(mdp.horizon + 1, mdp.num_states, dtype=DTYPE)
    V[:-1] = soft_value(Q, alpha)                                         # [H+1, S], V[H] = 0
    V[:, mdp.terminal] = 0.0                                              # after eos: V = 0
    r_hat = Q - V[1:][:, mdp.next_state]                                  # V[h+1][s'] for each (s, a)
    r_hat[:, mdp.terminal] = 0.0                                          # nothing is earned there
    return r_hat


def fit_potential(mdp: TabularMDP, r_true: torch.Tensor, r_hat: torch.Tensor,
                  mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares potential Φ with ``r̂ − r ≈ Φ_h(s) − Φ_{h+1}(s')`` on the masked (h, s, a).

    ``Φ_{H+1} = 0`` is fixed: a potential on the final state would change which final
    states are preferred, which is not shaping. So is ``Φ_h(terminal) = 0`` at every step
    (``mdp.terminal``, the state after ``eos``): a potential there would pay a bonus for
    ending early that no later step takes back, and change the optimal policy. ``mask`` is
    [H, S] or [H, S, A] bool, default: the reachable states, terminal ones included (a
    reward there is collected on the padding, so it must match too). Returns ``(Φ [H+1, S],
    residual [H, S, A])``, the residual being 0 outside the mask.
    """
    r_true, r_hat = reward_table(mdp, r_true), reward_table(mdp, r_hat)
    H, S, A = r_true.shape
    mask = reachable(mdp) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
    if mask.shape == (H, S):
        mask = mask[:, :, None].expand(H, S, A)
    if mask.shape != (H, S, A):
        raise ValueError(f"mask must be [H, S] or [H, S, A] = [{H}, {S}, {A}], got {tuple(mask.shape)}")
    h, s, a = mask.nonzero(as_tuple=True)                                 # one equation each
    s_next = mdp.next_state[s, a]
    # Unknowns: Φ_h(s) for h < H, flattened as h*S + s. Φ_H (the paper's Φ_{H+1}) is 0.
    design = torch.zeros(len(h), H * S, dtype=DTYPE)
    rows = torch.arange(len(h))
    design[rows, h * S + s] = 1.0
    inner = h + 1 < H
    design[rows[inner], (h[inner] + 1) * S + s_next[inner]] -= 1.0
    design[:, mdp.terminal.repeat(H)] = 0.0                     # Φ_h(terminal) is no unknown
    target = (r_hat - r_true)[h, s, a]
    phi = torch.linalg.lstsq(design, target[:, None], driver="gelsd").solution[:, 0]
    residual = torch.zeros(H, S, A, dtype=DTYPE)
    residual[h, s, a] = target - design @ phi
    phi = phi.reshape(H, S).masked_fill(mdp.terminal, 0.0)      # Φ_h(terminal) = 0
    return torch.cat([phi, torch.zeros(1, S, dtype=DTYPE)]), residual


def shaping_residual(mdp: TabularMDP, r_true: torch.Tensor, r_hat: torch.Tensor,
                     mask: torch.Tensor | None = None) -> float:
    """``max |r̂ − r − (Φ_h(s) − Φ_{h+1}(s'))|`` with the best Φ: 0 iff "equal up to shaping".

    Measured on ``mask`` (default: every reachable (h, s), all actions), with the
    potential of terminal states fixed at 0; see ``fit_potential``.
    """
    return float(fit_potential(mdp, r_true, r_hat, mask)[1].abs().max())

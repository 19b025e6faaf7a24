"""Finite-horizon MDPs with γ = 1: the token MDP of text generation, and small tabular ones.

docs/paper.md §1: generation is an MDP. The state ``s_h`` is the token sequence so far, the
action ``a_h`` the next token, transitions are deterministic (``s_{h+1} = s_h ⊕ a_h``),
and after ``<eos>`` the sequence sits in an absorbing state until the horizon ``H``.
The value of a policy is ``V^π = E_τ~π[Σ_h r(s_h, a_h)]`` (eq. 1).

Two views of the same object live here:

- ``TabularMDP``: states and actions are integers, ``next_state[s, a]`` says where an
  action leads (deterministic, like the token MDP). Soft value iteration (docs/paper.md §4)
  gives the soft-optimal "expert" ``π*(a|s) = softmax(Q*(s,·)/α)``; hard value
  iteration gives the RL optimum (α → 0).
- ``TokenMDP``: states are token tuples over a tiny vocabulary, so a policy can be any
  function ``prefix -> next-token probabilities`` (a real language model included).
  ``value_by_enumeration`` computes eq. 1 exactly by walking the tree of responses;
  ``value_by_monte_carlo`` estimates it by sampling. ``TokenMDP.to_tabular`` turns the
  tree into a ``TabularMDP`` so the tabular machinery runs on it unchanged.

Conventions: tensors are float64; time is the first axis and 0-based (``Q[h]`` is the
paper's ``Q_{h+1}``); shapes are ``[H, S, A]`` for Q, rewards and policies, ``[H+1, S]``
for V (``V[H] = 0``: nothing is collected after the horizon). Stochastic transitions are
deliberately left out: the token MDP is deterministic, and eq. 8 then needs no
expectation over ``s'``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

DTYPE = torch.float64


@dataclass
class TabularMDP:
    """A deterministic finite-horizon MDP with γ = 1 (the token MDP is one)."""

    next_state: torch.Tensor
    """[S, A] int64: the state reached by taking action a in state s."""
    reward: torch.Tensor
    """[S, A] (the same at every step) or [H, S, A] float64: r(s, a), or r_h(s, a)."""
    horizon: int
    """H: the number of actions taken in an episode."""
    initial: torch.Tensor
    """[S] float64: the distribution of the start state s_1 (sums to 1)."""
    terminal: torch.Tensor | None = None
    """[S] bool, optional: states where the episode is over (the padding after ``eos``):
    absorbing, reward 0, and ``V = 0`` (no choices are left, so no entropy either)."""

    def __post_init__(self):
        self.next_state = torch.as_tensor(self.next_state, dtype=torch.long)
        self.reward = torch.as_tensor(self.reward, dtype=DTYPE)
        self.initial = torch.as_tensor(self.initial, dtype=DTYPE)
        if self.next_state.dim() != 2:
            raise ValueError(f"next_state must be [S, A], got shape {tuple(self.next_state.shape)}")
        S, A = self.next_state.shape
        self.terminal = (torch.zeros(S, dtype=torch.bool) if self.terminal is None
                         else torch.as_tensor(self.terminal, dtype=torch.bool))
        if self.next_state.min() < 0 or self.next_state.max() >= S:
            raise ValueError(f"next_state holds states outside 0..{S - 1}")
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        reward_table(self)  # checks the reward's shape
        if self.initial.shape != (S,) or abs(float(self.initial.sum()) - 1.0) > 1e-9 \
                or bool((self.initial < 0).any()):
            raise ValueError(f"initial must be a distribution over {S} states, "
                             f"got shape {tuple(self.initial.shape)}, sum {float(self.initial.sum()):.4g}")
        if self.terminal.shape != (S,):
            raise ValueError(f"terminal must be [S] = [{S}] bool, got {tuple(self.terminal.shape)}")
        if not bool(self.terminal[self.next_state[self.terminal]].all()):
            raise ValueError("terminal states must be absorbing: their next_state must be terminal")
        if bool(reward_table(self)[:, self.terminal].ne(0).any()):
            raise ValueError("terminal states earn no reward: set reward[terminal] = 0")

    @property
    def num_states(self) -> int:
        return self.next_state.shape[0]

    @property
    def num_actions(self) -> int:
        return self.next_state.shape[1]


def reward_table(mdp: TabularMDP, reward: torch.Tensor | None = None) -> torch.Tensor:
    """``reward`` (default: the MDP's own) as a time-indexed table [H, S, A]."""
    reward = mdp.reward if reward is None else torch.as_tensor(reward, dtype=DTYPE)
    S, A, H = mdp.num_states, mdp.num_actions, mdp.horizon
    if reward.shape == (S, A):
        return reward.expand(H, S, A).clone()
    if reward.shape != (H, S, A):
        raise ValueError(f"reward must be [S, A] = [{S}, {A}] or [H, S, A] = [{H}, {S}, {A}], "
                         f"got {tuple(reward.shape)}")
    return reward


class SoftQ(NamedTuple):
    Q: torch.Tensor       # [H, S, A]
    V: torch.Tensor       # [H+1, S], V[H] = 0
    policy: torch.Tensor  # [H, S, A], rows sum to 1


def soft_value_iteration(mdp: TabularMDP, alpha: float, reward: torch.Tensor | None = None) -> SoftQ:
    """Soft Bellman backup from the horizon down (docs/paper.md §4, γ = 1).

    ``Q_h(s,a) = r_h(s,a) + V_{h+1}(s')``, ``V_h(s) = α logsumexp(Q_h(s,·)/α)``,
    ``V_{H+1} = 0`` and ``V = 0`` at terminal states; the soft-optimal policy is
    ``π_h(·|s) = softmax(Q_h(s,·)/α)`` (uniform, and irrelevant, at terminal states).
    ``reward`` overrides the MDP's (e.g. a recovered reward, eq. 8).
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0 (use hard_value_iteration for α → 0), got {alpha}")
    r = reward_table(mdp, reward)
    H, S, A = r.shape
    Q = torch.zeros(H, S, A, dtype=DTYPE)
    V = torch.zeros(H + 1, S, dtype=DTYPE)
    for h in reversed(range(H)):
        Q[h] = r[h] + V[h + 1][mdp.next_state]              # [S, A]
        V[h] = alpha * torch.logsumexp(Q[h] / alpha, dim=-1)
        V[h, mdp.terminal] = 0.0                             # the episode is over there
    return SoftQ(Q, V, torch.softmax(Q / alpha, dim=-1))


def hard_value_iteration(mdp: TabularMDP, reward: torch.Tensor | None = None) -> SoftQ:
    """Ordinary (α → 0) value iteration: ``V_h = max_a Q_h``; the policy is the argmax, one-hot.

    This is "RL" in Theorem 2 (docs/paper.md §6): the exact optimum of a reward. Ties go to
    the lowest action index, so the result is deterministic.
    """
    r = reward_table(mdp, reward)
    H, S, A = r.shape
    Q = torch.zeros(H, S, A, dtype=DTYPE)
    V = torch.zeros(H + 1, S, dtype=DTYPE)
    for h in reversed(range(H)):
        Q[h] = r[h] + V[h + 1][mdp.next_state]
        V[h] = Q[h].max(dim=-1).values                       # (0 at terminal states already)
    policy = torch.nn.functional.one_hot(Q.argmax(dim=-1), A).to(DTYPE)
    return SoftQ(Q, V, policy)


def _check_policy(mdp: TabularMDP, policy: torch.Tensor) -> torch.Tensor:
    policy = torch.as_tensor(policy, dtype=DTYPE)
    shape = (mdp.horizon, mdp.num_states, mdp.num_actions)
    if policy.shape != shape:
        raise ValueError(f"policy must be [H, S, A] = {list(shape)}, got {tuple(policy.shape)}")
    if bool((policy < 0).any()) or not torch.allclose(policy.sum(-1), torch.ones((), dtype=DTYPE)):
        raise ValueError("policy rows must be probability distributions (non-negative, sum 1)")
    return policy


def state_occupancy(mdp: TabularMDP, policy: torch.Tensor) -> torch.Tensor:
    """``d[h, s] = P(s_{h+1} = s)`` under ``policy`` ([H, S]), pushed forward from ``initial``."""
    policy = _check_policy(mdp, policy)
    H, S, A = policy.shape
    d = torch.zeros(H, S, dtype=DTYPE)
    d[0] = mdp.initial
    for h in range(H - 1):
        mass = d[h, :, None] * policy[h]                     # [S, A]: P(s_h = s, a_h = a)
        d[h + 1] = torch.zeros(S, dtype=DTYPE).index_add_(0, mdp.next_state.flatten(), mass.flatten())
    return d


def policy_value(mdp: TabularMDP, policy: torch.Tensor, reward: torch.Tensor | None = None) -> float:
    """Exact expected return ``V^π = E_τ~π[Σ_h r_h(s_h, a_h)]`` (eq. 1), by forward occupancy."""
    d = state_occupancy(mdp, policy)                         # [H, S]
    return float((d[:, :, None] * policy * reward_table(mdp, reward)).sum())


def reachable(mdp: TabularMDP) -> torch.Tensor:
    """[H, S] bool: states some policy can be in at each step (from the support of ``initial``)."""
    R = torch.zeros(mdp.horizon, mdp.num_states, dtype=torch.bool)
    R[0] = mdp.initial > 0
    for h in range(mdp.horizon - 1):
        R[h + 1, mdp.next_state[R[h]].flatten()] = True
    return R


class Trajectories(NamedTuple):
    states: torch.Tensor   # [N, H] int64: s_1..s_H
    actions: torch.Tensor  # [N, H] int64: a_1..a_H


def sample_trajectories(mdp: TabularMDP, policy: torch.Tensor, n: int,
                        generator: torch.Generator | None = None) -> Trajectories:
    """``n`` episodes of ``policy`` (``generator`` makes them reproducible)."""
    policy = _check_policy(mdp, policy)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    H = mdp.horizon
    states = torch.empty(n, H, dtype=torch.long)
    actions = torch.empty(n, H, dtype=torch.long)
    s = torch.multinomial(mdp.initial, n, replacement=True, generator=generator)
    for h in range(H):
        a = torch.multinomial(policy[h, s], 1, generator=generator).squeeze(1)
        states[:, h], actions[:, h] = s, a
        s = mdp.next_state[s, a]
    return Trajectories(states, actions)


def trajectory_return(reward: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``R(τ) = Σ_h r_h(s_h, a_h)`` for each trajectory: reward [H, S, A], states/actions [N, H] -> [N]."""
    H = states.shape[-1]
    if reward.dim() != 3 or reward.shape[0] != H:
        raise ValueError(f"reward must be [H, S, A] with H = {H}, got {tuple(reward.shape)}")
    steps = torch.arange(H).expand_as(states)
    return reward[steps, states, actions].sum(-1)


def random_mdp(num_states: int, num_actions: int, horizon: int, seed: int = 0,
               reward_scale: float = 1.0, single_start: bool = False) -> TabularMDP:
    """A random deterministic MDP: ``next_state`` uniform, rewards ``N(0, reward_scale²)``.

    With ``num_states`` small, many (s, a) lead to the same s', so rewards are *not* all
    equivalent up to shaping (in a tree they would be). ``initial`` is uniform, or all
    mass on state 0 with ``single_start``. Its exact soft-optimal expert is
    ``soft_value_iteration(mdp, alpha).policy``.
    """
    g = torch.Generator().manual_seed(seed)
    next_state = torch.randint(num_states, (num_states, num_actions), generator=g)
    reward = reward_scale * torch.randn(num_states, num_actions, generator=g, dtype=DTYPE)
    initial = torch.full((num_states,), 1.0 / num_states, dtype=DTYPE)
    if single_start:
        initial = torch.nn.functional.one_hot(torch.tensor(0), num_states).to(DTYPE)
    return TabularMDP(next_state, reward, horizon, initial)


# ---------------------------------------------------------------------------------------
# The token MDP over a tiny vocabulary: states are token tuples (the response so far).
# ---------------------------------------------------------------------------------------
PolicyFn = Callable[[tuple], "torch.Tensor"]   # prefix -> next-token probabilities [V]
RewardFn = Callable[[tuple, int], float]       # (prefix, token) -> r(s_h, a_h)


@dataclass(frozen=True)
class TokenMDP:
    """Generation as an MDP (docs/paper.md §1) for a vocabulary small enough to enumerate.

    A state is the response so far (a tuple of token ids; the prompt is whatever the
    policy conditions on). A response ends with ``eos`` or after ``horizon`` tokens;
    what follows is the absorbing state, so every response counts as padded to H.
    """

    vocab_size: int
    """V: tokens are 0..V-1."""
    eos: int
    """the end-of-response token id."""
    horizon: int
    """H: the maximum number of tokens in a response (``eos`` included)."""

    def __post_init__(self):
        if not 0 <= self.eos < self.vocab_size:
            raise ValueError(f"eos must be a token in 0..{self.vocab_size - 1}, got {self.eos}")
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")

    def is_terminal(self, prefix: tuple) -> bool:
        """True once the response ended (``eos``) or reached the horizon."""
        return len(prefix) >= self.horizon or (len(prefix) > 0 and prefix[-1] == self.eos)

    def prefixes(self) -> list[tuple]:
        """Every non-terminal state, shortest first: ``(V-1)^0 + ... + (V-1)^(H-1)`` of them."""
        words = [t for t in range(self.vocab_size) if t != self.eos]
        return [p for k in range(self.horizon) for p in itertools.product(words, repeat=k)]

    def to_tabular(self, reward_fn: RewardFn) -> tuple[TabularMDP, list[tuple]]:
        """The same MDP as a ``TabularMDP``; state i is ``prefixes[i]``, the last one absorbing.

        Taking a token in a non-terminal prefix earns ``reward_fn(prefix, token)`` and
        leads to the longer prefix, or to the absorbing state if the response is over;
        the absorbing state is ``terminal``: reward 0 and V = 0 (the padding after ``eos``).
        """
        prefixes = self.prefixes()
        index = {p: i for i, p in enumerate(prefixes)}
        done = len(prefixes)
        S, A = done + 1, self.vocab_size
        next_state = torch.full((S, A), done, dtype=torch.long)
        reward = torch.zeros(S, A, dtype=DTYPE)
        for p, i in index.items():
            for a in range(A):
                child = p + (a,)
                next_state[i, a] = done if self.is_terminal(child) else index[child]
                reward[i, a] = float(reward_fn(p, a))
        initial = torch.zeros(S, dtype=DTYPE)
        initial[index[()]] = 1.0
        terminal = torch.zeros(S, dtype=torch.bool)
        terminal[done] = True
        return TabularMDP(next_state, reward, self.horizon, initial, terminal), prefixes


def _probs(policy_fn: PolicyFn, prefix: tuple, vocab_size: int) -> torch.Tensor:
    probs = torch.as_tensor(policy_fn(prefix), dtype=DTYPE).flatten()
    if probs.shape != (vocab_size,) or not math.isclose(float(probs.sum()), 1.0, abs_tol=1e-6):
        raise ValueError(f"policy_fn{prefix} must return {vocab_size} probabilities summing to 1, "
                         f"got shape {tuple(probs.shape)}, sum {float(probs.sum()):.6g}")
    return probs


def response_distribution(tm: TokenMDP, policy_fn: PolicyFn) -> dict[tuple, float]:
    """``P(τ) = Π_h π(a_h | s_h)`` for every complete response τ with P(τ) > 0 (sums to 1).

    Calls ``policy_fn`` once per reachable non-terminal prefix (at most ``(V-1)^(H-1)``-ish).
    """
    out: dict[tuple, float] = {}
    stack = [((), 1.0)]
    while stack:
        prefix, p_prefix = stack.pop()
        for a, p in enumerate(_probs(policy_fn, prefix, tm.vocab_size).tolist()):
            if p == 0.0:
                continue
            child = prefix + (a,)
            if tm.is_terminal(child):
                out[child] = p_prefix * p
            else:
                stack.append((child, p_prefix * p))
    return out


def response_return(reward_fn: RewardFn, response: tuple) -> float:
    """``R(τ) = Σ_h r(s_h, a_h)`` along one response (s_h = the first h-1 tokens)."""
    return sum(float(reward_fn(response[:h], a)) for h, a in enumerate(response))


def value_by_enumeration(tm: TokenMDP, policy_fn: PolicyFn, reward_fn: RewardFn) -> float:
    """Eq. 1 exactly: ``V^π = Σ_τ P(τ) R(τ)`` over every complete response."""
    return sum(p * response_return(reward_fn, tau)
               for tau, p in response_distribution(tm, policy_fn).items())


class MonteCarloEstimate(NamedTuple):
    mean: float
    stderr: float  # standard error of the mean: the estimate's ±1σ
    n: int


def value_by_monte_carlo(tm: TokenMDP, policy_fn: PolicyFn, reward_fn: RewardFn, n: int,
                         generator: torch.Generator | None = None) -> MonteCarloEstimate:
    """Eq. 1 by sampling ``n`` responses from ``policy_fn``; converges to ``value_by_enumeration``.

    ``policy_fn`` is called once per distinct prefix (results are cached), which matters
    when it is a language model's forward pass.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 to estimate a standard error, got {n}")
    cache: dict[tuple, torch.Tensor] = {}
    returns = torch.empty(n, dtype=DTYPE)
    for i in range(n):
        prefix: tuple = ()
        while not tm.is_terminal(prefix):
            if prefix not in cache:
                cache[prefix] = _probs(policy_fn, prefix, tm.vocab_size)
            a = int(torch.multinomial(cache[prefix], 1, generator=generator))
            prefix = prefix + (a,)
        returns[i] = response_return(reward_fn, prefix)
    return MonteCarloEstimate(float(returns.mean()), float(returns.std() / math.sqrt(n)), n)

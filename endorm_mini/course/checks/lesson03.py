"""Checks for lesson 03 (MaxEnt IRL and inverse soft-Q, eq. 6–8) on tabular MDPs.

Every case is a small seeded MDP (``random_mdp``, or a token tree with its absorbing
``terminal`` state after eos) with demonstrations or a Q-table; the mistakes are the
wrong versions a learner is likely to write, each named by what it gets wrong.
"""
from __future__ import annotations

import torch

from ... import irl, mdp as tabular, reward
from ...mdp import DTYPE, SoftQ, TabularMDP, TokenMDP, Trajectories
from . import case, exercise


# ---------------------------------------------------------------- random inputs
def _seed(rng: torch.Generator) -> int:
    return int(torch.randint(2**31 - 1, (1,), generator=rng))


def _random_mdp(rng, S=5, A=3, H=4, **kw) -> TabularMDP:
    return tabular.random_mdp(S, A, H, seed=_seed(rng), **kw)


def _token_mdp(rng, horizon=3) -> TabularMDP:
    """A token tree (vocabulary 3, eos = 0) with random rewards and a terminal state."""
    table = torch.randn(horizon, 3, 3, generator=rng, dtype=DTYPE)   # [length, last token, a]
    mdp, _ = TokenMDP(vocab_size=3, eos=0, horizon=horizon).to_tabular(
        lambda p, a: float(table[len(p), p[-1] if p else 0, a]))
    return mdp


def _demos(mdp: TabularMDP, n: int, rng) -> Trajectories:
    """``n`` episodes of a uniformly random policy: every (s, a) gets visited, some twice."""
    uniform = torch.full((mdp.horizon, mdp.num_states, mdp.num_actions), 1 / mdp.num_actions,
                         dtype=DTYPE)
    return tabular.sample_trajectories(mdp, uniform, n, rng)


def _random_q(mdp: TabularMDP, rng, scale=1.0) -> torch.Tensor:
    return scale * torch.randn(mdp.horizon, mdp.num_states, mdp.num_actions, generator=rng, dtype=DTYPE)


# ---------------------------------------------------------------- 3.1 soft value iteration
def _svi(mdp, alpha, reward=None, *, backup="soft", next_value="next", terminal=True,
         policy_alpha=True):
    """Soft value iteration with one deliberate mistake (named by the flags)."""
    r = tabular.reward_table(mdp, reward)
    H, S, A = r.shape
    Q = torch.zeros(H, S, A, dtype=DTYPE)
    V = torch.zeros(H + 1, S, dtype=DTYPE)
    for h in reversed(range(H)):
        if next_value == "next":
            Q[h] = r[h] + V[h + 1][mdp.next_state]
        elif next_value == "none":
            Q[h] = r[h]
        else:                                            # "current": V_{h+1}(s), not V_{h+1}(s')
            Q[h] = r[h] + V[h + 1][:, None]
        if backup == "soft":
            V[h] = alpha * torch.logsumexp(Q[h] / alpha, -1)
        elif backup == "no alpha":
            V[h] = torch.logsumexp(Q[h], -1)
        elif backup == "naive":
            V[h] = alpha * torch.log(torch.exp(Q[h] / alpha).sum(-1))
        else:                                            # "hard"
            V[h] = Q[h].amax(-1)
        if terminal:
            V[h, mdp.terminal] = 0.0
    return SoftQ(Q, V, torch.softmax(Q / alpha if policy_alpha else Q, -1))


@exercise(
    "3.1", "soft_value_iteration", reference=tabular.soft_value_iteration,
    equation="docs/paper.md §4 (soft Bellman, γ = 1): Q_h(s,a) = r_h(s,a) + V_{h+1}(s'), "
             "V_h(s) = α logsumexp(Q_h(s,·)/α), V_{H+1} = 0; π_h = softmax(Q_h/α)",
    concept="work backwards from the last step: a state's soft value is a soft maximum (α-temperature "
            "logsumexp) of its Q, and Q adds the reward to the value of the state the action leads "
            "to; nothing is earned after the horizon or after eos",
    hint="loop h = H-1, …, 0; s' for every (s, a) at once is mdp.next_state, so "
         "V[h + 1][mdp.next_state] is [S, A]; set V[h, mdp.terminal] = 0 after each backup",
    outputs=("Q", "V", "policy"),
    mistakes={
        "a hard max in the backup (V = max_a Q is the α → 0 limit, hard_value_iteration)":
            lambda mdp, alpha, reward=None: _svi(mdp, alpha, reward, backup="hard"),
        "forgot the temperature: V = logsumexp(Q) instead of α logsumexp(Q/α)":
            lambda mdp, alpha, reward=None: _svi(mdp, alpha, reward, backup="no alpha"),
        "log(Σ exp(Q/α)) overflows for large Q/α: use torch.logsumexp (lesson 00's max trick)":
            lambda mdp, alpha, reward=None: _svi(mdp, alpha, reward, backup="naive"),
        "the policy is softmax(Q/α), not softmax(Q)":
            lambda mdp, alpha, reward=None: _svi(mdp, alpha, reward, policy_alpha=False),
        "Q_h = r_h alone: the backup adds the next state's value V_{h+1}(s')":
            lambda mdp, alpha, reward=None: _svi(mdp, alpha, reward, next_value="none"),
        "added V_{h+1}(s) of the current state; the next state is s' = mdp.next_state[s, a]":
            lambda mdp, alpha, reward=None: _svi(mdp, alpha, reward, next_value="current"),
        "forgot V = 0 at terminal states (the episode is over after eos)":
            lambda mdp, alpha, reward=None: _svi(mdp, alpha, reward, terminal=False),
    },
)
def soft_value_iteration_cases(rng: torch.Generator):
    yield case("random MDP (S=5, A=3, H=4), α = 1", _random_mdp(rng), 1.0)
    yield case("random MDP (S=6, A=4, H=5), α = 0.3", _random_mdp(rng, S=6, A=4, H=5), 0.3)
    m = _random_mdp(rng, S=4, A=3, H=3)
    yield case("a time-varying reward [H, S, A] passed as `reward`, α = 2", m, 2.0,
               reward=_random_q(m, rng))
    yield case("token tree with a terminal state (after eos V = 0), α = 0.5", _token_mdp(rng), 0.5)
    yield case("large rewards at α = 0.1 (exp(Q/α) overflows)",
               _random_mdp(rng, S=4, A=3, H=4, reward_scale=50.0), 0.1)
    yield case("horizon 1: Q = r", _random_mdp(rng, S=3, A=2, H=1), 1.0)


# ---------------------------------------------------------------- 3.2 eq. 7's log-likelihood
def _loglik(Q, demos, alpha, *, scale=True, temperature=True, steps=True, reduce="sum"):
    states, actions = demos
    z = Q / alpha if temperature else Q
    logp = z - torch.logsumexp(z, -1, keepdim=True)
    if not scale:
        logp = alpha * logp                              # Σ [Q − α logsumexp(Q/α)]
    h = torch.arange(states.shape[1]).expand_as(states) if steps else torch.zeros_like(states)
    picked = logp[h, states, actions]
    return picked.sum() if reduce == "sum" else picked.mean()


def _random_demos(rng, N, H, S, A) -> Trajectories:
    return Trajectories(torch.randint(S, (N, H), generator=rng), torch.randint(A, (N, H), generator=rng))


@exercise(
    "3.2", "log_likelihood", reference=irl.log_likelihood,
    equation="eq. 7: Σ_i Σ_h [Q_h(s_h,a_h) − α log Σ_a exp(Q_h(s_h,a)/α)] / α "
             "= Σ_i Σ_h log softmax(Q_h(s_h,·)/α)[a_h]",
    concept="eq. 7 divided by α is a log-likelihood: the log-probability that the policy "
            "softmax(Q_h/α) gives each demonstrated action, in the state and at the step where it was "
            "taken, added up",
    hint="log π = Q/α − logsumexp(Q/α) over the actions; pick entry [h, s_h^i, a_h^i] with "
         "h = torch.arange(H) broadcast against states [N, H]; sum over i and h",
    mistakes={
        "forgot to divide by α: Σ [Q − α logsumexp(Q/α)] is α times the log-likelihood":
            lambda Q, demos, alpha: _loglik(Q, demos, alpha, scale=False),
        "forgot the temperature: softmax(Q) instead of softmax(Q/α)":
            lambda Q, demos, alpha: _loglik(Q, demos, alpha, temperature=False),
        "used the step-0 table Q[0] at every step; Q is indexed by time h too":
            lambda Q, demos, alpha: _loglik(Q, demos, alpha, steps=False),
        "a mean instead of a sum over demonstrations and steps":
            lambda Q, demos, alpha: _loglik(Q, demos, alpha, reduce="mean"),
    },
    # The exercise is eq. 7 written out: library log-softmax / cross-entropy would do it.
    forbid=("log_softmax", "cross_entropy_loss", "nll_loss"),
)
def log_likelihood_cases(rng: torch.Generator):
    yield case("random Q [4, 5, 3], 6 demonstrations, α = 1",
               torch.randn(4, 5, 3, generator=rng, dtype=DTYPE), _random_demos(rng, 6, 4, 5, 3), 1.0)
    yield case("α = 0.5, 20 demonstrations", torch.randn(3, 4, 6, generator=rng, dtype=DTYPE),
               _random_demos(rng, 20, 3, 4, 6), 0.5)
    yield case("large Q at α = 0.1 (exp(Q/α) overflows)",
               100 * torch.randn(2, 3, 4, generator=rng, dtype=DTYPE), _random_demos(rng, 5, 2, 3, 4), 0.1)
    yield case("one demonstration of one step, α = 3",
               torch.randn(1, 2, 3, generator=rng, dtype=DTYPE), _random_demos(rng, 1, 1, 2, 3), 3.0)


# ---------------------------------------------------------------- 3.3 counts
def _counts_no_accumulate(mdp, demos):
    states, actions = demos
    n = torch.zeros(mdp.horizon, mdp.num_states, mdp.num_actions, dtype=DTYPE)
    n[torch.arange(states.shape[1]).expand_as(states), states, actions] += 1
    return n


def _counts_no_time(mdp, demos):
    states, actions = demos
    n = torch.zeros(mdp.num_states * mdp.num_actions, dtype=DTYPE)
    n.index_add_(0, (states * mdp.num_actions + actions).flatten(), torch.ones(states.numel(), dtype=DTYPE))
    return n.reshape(mdp.num_states, mdp.num_actions)


@exercise(
    "3.3", "action_counts", reference=irl.action_counts,
    equation="eq. 7 splits into one softmax likelihood per (h, s); its data are the counts "
             "n_h(s, a) = #{i : s_h^i = s, a_h^i = a}",
    concept="count how often each (step, state, action) triple occurs in the demonstrations; the same "
            "triple can occur many times",
    hint="a float64 tensor [H, S, A] of zeros, then add 1 at [h, s_h^i, a_h^i] for every i, h; "
         "index_put_((h, s, a), ones, accumulate=True) or torch.bincount on a flat index do it",
    mistakes={
        "counts[h, s, a] += 1 with repeated index triples adds 1 only once: "
        "use index_put_(..., accumulate=True) or bincount": _counts_no_accumulate,
        "forgot the time axis: counts are per step h, shape [H, S, A]": _counts_no_time,
    },
)
def action_counts_cases(rng: torch.Generator):
    m = _random_mdp(rng, S=4, A=3, H=3)
    yield case("8 random episodes (S=4, A=3, H=3)", m, _demos(m, 8, rng))
    m = _random_mdp(rng, S=3, A=2, H=4)
    yield case("200 episodes, many repeated (h, s, a)", m, _demos(m, 200, rng))
    m = _random_mdp(rng, S=6, A=3, H=2)
    yield case("a single episode", m, _demos(m, 1, rng))


# ---------------------------------------------------------------- 3.4 inverse soft-Q by counts
def _isq(mdp, demos, alpha=1.0, smoothing=0.1, *, normalise=True, temperature=True, prior=True):
    n = irl.action_counts(mdp, demos) + (smoothing if prior else 0.0)
    p = n / n.sum(-1, keepdim=True) if normalise else n
    return (alpha if temperature else 1.0) * torch.log(p)


def _isq_smooth_after(mdp, demos, alpha=1.0, smoothing=0.1):
    n = irl.action_counts(mdp, demos)
    p = n / n.sum(-1, keepdim=True).clamp(min=1)
    return alpha * torch.log(p + smoothing)


@exercise(
    "3.4", "inverse_soft_q", reference=irl.inverse_soft_q,
    equation="eq. 7's maximiser, per (h, s): softmax(Q_h(s,·)/α) = p̂_h(·|s), so "
             "Q_h(s,a) = α log p̂_h(a|s) with p̂ = (n + smoothing) / Σ_a (n + smoothing)",
    concept="a softmax likelihood is maximised by the empirical frequencies, so the best Q makes "
            "softmax(Q/α) equal the smoothed action frequencies of each (h, s); invert the softmax",
    hint="counts from your action_counts, plus `smoothing` in every entry; normalise over the "
         "last (action) axis; multiply the log by α",
    mistakes={
        "unnormalised: α log(n + smoothing) also maximises eq. 7 (Q is only defined up to a "
        "per-state constant), but this exercise asks for α log p̂, the normalised one":
            lambda mdp, demos, alpha=1.0, smoothing=0.1: _isq(mdp, demos, alpha, smoothing, normalise=False),
        "forgot α: Q = α log p̂, not log p̂":
            lambda mdp, demos, alpha=1.0, smoothing=0.1: _isq(mdp, demos, alpha, smoothing, temperature=False),
        "forgot the smoothing pseudo-counts (unseen actions get log 0 = -inf)":
            lambda mdp, demos, alpha=1.0, smoothing=0.1: _isq(mdp, demos, alpha, smoothing, prior=False),
        "added the smoothing after normalising; add it to the counts, then normalise":
            _isq_smooth_after,
    },
    forbid=(irl.action_counts,),   # use your own from exercise 3.3
)
def inverse_soft_q_cases(rng: torch.Generator):
    m = _random_mdp(rng, S=5, A=3, H=4)
    expert = tabular.soft_value_iteration(m, 1.0).policy
    yield case("50 expert episodes, α = 1", m, tabular.sample_trajectories(m, expert, 50, rng), 1.0)
    m = _random_mdp(rng, S=4, A=4, H=3)
    yield case("α = 0.5, smoothing = 1", m, _demos(m, 30, rng), 0.5, smoothing=1.0)
    m = _random_mdp(rng, S=6, A=3, H=3)
    yield case("3 episodes: most (h, s) unvisited (uniform there), α = 2", m, _demos(m, 3, rng), 2.0)


# ---------------------------------------------------------------- 3.5 reward from Q (eq. 8)
def _r_from_q(mdp, Q, alpha, *, which="next", temperature=True, terminal=True):
    H, S = mdp.horizon, mdp.num_states
    V = torch.zeros(H + 1, S, dtype=DTYPE)
    V[:-1] = alpha * torch.logsumexp(Q / alpha, -1) if temperature else torch.logsumexp(Q, -1)
    if terminal:
        V[:, mdp.terminal] = 0.0
    if which == "next":
        r = Q - V[1:][:, mdp.next_state]
    elif which == "same step":                           # V_h(s') instead of V_{h+1}(s')
        r = Q - V[:-1][:, mdp.next_state]
    elif which == "current":                             # V_h(s): that is α log π
        r = Q - V[:-1][:, :, None]
    else:                                                # "none": r̂ = Q
        r = Q.clone()
    if terminal:
        r[:, mdp.terminal] = 0.0
    return r


@exercise(
    "3.5", "reward_from_q", reference=irl.reward_from_q,
    equation="eq. 8 (γ = 1): r̂_h(s,a) = Q_h(s,a) − V_Q,h+1(s'), V_Q,h(s) = α logsumexp(Q_h(s,·)/α), "
             "V_Q,H+1 = 0, and V = 0, r̂ = 0 at terminal states",
    concept="invert the soft Bellman equation: the reward is what Q credits beyond the value of the "
            "next state at the next step; a terminal state has no value and earns nothing",
    hint="build V [H+1, S] with V[H] = 0 and V[:, mdp.terminal] = 0; V[1:][:, mdp.next_state] "
         "is V_{h+1}(s') as [H, S, A]; zero r̂ at terminal states",
    mistakes={
        "subtracted V_h(s'), the same step's value; eq. 8 needs V_{h+1}(s')":
            lambda mdp, Q, alpha: _r_from_q(mdp, Q, alpha, which="same step"),
        "subtracted V_h(s) of the current state: Q − V_h(s) = α log π, which is r̂ only up to "
        "shaping, not eq. 8": lambda mdp, Q, alpha: _r_from_q(mdp, Q, alpha, which="current"),
        "forgot α: V = α logsumexp(Q/α), not logsumexp(Q)":
            lambda mdp, Q, alpha: _r_from_q(mdp, Q, alpha, temperature=False),
        "r̂ = Q: eq. 8 subtracts the next state's value":
            lambda mdp, Q, alpha: _r_from_q(mdp, Q, alpha, which="none"),
        "forgot the terminal state: after eos V = 0 and r̂ = 0":
            lambda mdp, Q, alpha: _r_from_q(mdp, Q, alpha, terminal=False),
    },
)
def reward_from_q_cases(rng: torch.Generator):
    m = _random_mdp(rng, S=5, A=3, H=4)
    yield case("random Q on a random MDP, α = 1", m, _random_q(m, rng), 1.0)
    m = _random_mdp(rng, S=4, A=5, H=3)
    yield case("large Q at α = 0.2 (exp(Q/α) overflows)", m, _random_q(m, rng, scale=40.0), 0.2)
    m = _token_mdp(rng)
    yield case("token tree with a terminal state (after eos), α = 0.7", m, _random_q(m, rng), 0.7)
    m = _random_mdp(rng, S=3, A=2, H=2)
    yield case("horizon 2, α = 3", m, _random_q(m, rng), 3.0)


# ---------------------------------------------------------------- 3.6 eq. 7 is eq. 2 (a derivation)
def _next_token_case(rng, N, H, S, A, alpha, scale=1.0):
    """(the mean cross-entropy of softmax(Q/α) on N random demonstrations of H steps, N·H, α)."""
    Q = scale * torch.randn(H, S, A, generator=rng, dtype=DTYPE)
    states, actions = _random_demos(rng, N, H, S, A)
    logits = (Q / alpha)[torch.arange(H).expand_as(states), states]      # [N, H, A]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, A), actions.reshape(-1))
    return loss, N * H, alpha


@exercise(
    "3.6", "eq7_from_next_token_loss", reference=reward.eq7_from_next_token_loss,
    equation="eq. 7 at Q = f̂: Σ_i Σ_h [f̂(s,a) − α logsumexp(f̂(s,·)/α)] and eq. 2: Σ_i Σ_h log π̂(a|s), "
             "π̂ = softmax(f̂/α) (eq. 10); the usual loss is the mean of −log π̂ over the tokens",
    concept="write one term of eq. 7 as a multiple of log π̂(a|s): f̂(s,a) − α logsumexp(f̂(s,·)/α) = α·(…); "
            "then undo the mean and the minus sign of the loss",
    hint="one term is α log π̂(a|s); Σ log π̂ = −num_tokens · loss; so eq. 7 = −α · num_tokens · loss",
    mistakes={
        "forgot α: eq. 7's terms are α log π̂, so eq. 7 = α × eq. 2's log-likelihood":
            lambda loss, num_tokens, alpha=1.0: -num_tokens * torch.as_tensor(loss, dtype=DTYPE),
        "divided by α: f̂ − α logsumexp(f̂/α) = α log π̂, a factor α, not 1/α":
            lambda loss, num_tokens, alpha=1.0: -num_tokens * torch.as_tensor(loss, dtype=DTYPE) / alpha,
        "the loss is a mean over tokens: multiply by num_tokens to get the sum of eq. 2":
            lambda loss, num_tokens, alpha=1.0: -alpha * torch.as_tensor(loss, dtype=DTYPE),
        "the sign: the loss is −log π̂ averaged; eq. 7 is maximised, the loss minimised":
            lambda loss, num_tokens, alpha=1.0: alpha * num_tokens * torch.as_tensor(loss, dtype=DTYPE),
    },
)
def eq7_from_next_token_loss_cases(rng: torch.Generator):
    loss, n, alpha = _next_token_case(rng, 6, 4, 5, 3, 0.5)
    yield case("6 demonstrations × 4 steps, α = 0.5", loss, n, alpha=alpha)
    loss, n, alpha = _next_token_case(rng, 20, 3, 4, 6, 2.0)
    yield case("20 demonstrations × 3 steps, α = 2", loss, n, alpha=alpha)
    loss, n, alpha = _next_token_case(rng, 1, 1, 2, 3, 3.0, scale=5.0)
    yield case("one demonstrated token, α = 3", loss, n, alpha=alpha)
    loss, n, alpha = _next_token_case(rng, 4, 5, 3, 4, 1.0)
    yield case("α = 1 (the model's own sampling temperature)", loss, n, alpha=alpha)

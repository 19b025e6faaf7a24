"""Checks for lesson 01 (generation as an MDP, docs/paper.md §1 and eq. 1) on tiny token MDPs.

Every case is a ``TokenMDP`` over a vocabulary of 3–4 tokens with a seeded random policy
and reward, both functions of the state (the prefix) and the token, so that a response
enumerated, cut or scored one step off gives a different number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ... import mdp
from ...mdp import DTYPE, MonteCarloEstimate, TokenMDP
from . import case, exercise


# ---------------------------------------------------------------- random policies and rewards
@dataclass(eq=False)   # compared field by field by the checks (tensors have no plain ==)
class TablePolicy:
    """π(a | prefix) = softmax(logits[len(prefix), last token]): depends on the state."""

    logits: torch.Tensor                            # [H, V+1, V]: step, last token (V = none), a

    def __call__(self, prefix: tuple) -> torch.Tensor:
        last = prefix[-1] if prefix else self.logits.shape[1] - 1
        return torch.softmax(self.logits[len(prefix), last], -1)

    def __repr__(self):
        return f"TablePolicy(H={self.logits.shape[0]}, V={self.logits.shape[2]})"


@dataclass(eq=False)
class TableReward:
    """r(prefix, a) = table[len(prefix), last token, a]: depends on the state and the action."""

    table: torch.Tensor                             # [H+1, V+1, V]

    def __call__(self, prefix: tuple, token: int) -> float:
        last = prefix[-1] if prefix else self.table.shape[1] - 1
        return float(self.table[len(prefix), last, token])

    def __repr__(self):
        return f"TableReward(H={self.table.shape[0]}, V={self.table.shape[2]})"


def _policy(rng, tm: TokenMDP, scale=1.5, never=None) -> TablePolicy:
    logits = scale * torch.randn(tm.horizon, tm.vocab_size + 1, tm.vocab_size, generator=rng, dtype=DTYPE)
    if never is not None:
        logits[..., never] = float("-inf")          # a token this policy never emits
    return TablePolicy(logits)


def _reward(rng, tm: TokenMDP) -> TableReward:
    return TableReward(torch.randn(tm.horizon + 1, tm.vocab_size + 1, tm.vocab_size, generator=rng, dtype=DTYPE))


def _response(rng, tm: TokenMDP, length: int, end: bool) -> tuple:
    words = [t for t in range(tm.vocab_size) if t != tm.eos]
    body = tuple(words[int(i)] for i in torch.randint(len(words), (length,), generator=rng))
    return body + ((tm.eos,) if end else ())


# ---------------------------------------------------------------- 1.1 when is a response over?
def _terminal(tm, prefix, *, horizon=True, eos=True, off_by_one=False):
    if horizon and (len(prefix) > tm.horizon if off_by_one else len(prefix) >= tm.horizon):
        return True
    return bool(eos and prefix and prefix[-1] == tm.eos)


@exercise(
    "1.1", "is_terminal", reference=TokenMDP.is_terminal,
    equation="docs/paper.md §1: a response ends with eos or after H tokens; from then on the state "
             "is absorbing (the padding up to the horizon)",
    hint="two conditions joined by `or`: the prefix has H tokens already, or its last token is "
         "tm.eos (an empty prefix has no last token)",
    mistakes={
        "forgot the horizon: a response of H tokens is over even without eos":
            lambda tm, prefix: _terminal(tm, prefix, horizon=False),
        "forgot eos: after eos the response is over, however short":
            lambda tm, prefix: _terminal(tm, prefix, eos=False),
        "off by one: H tokens is the maximum, so len(prefix) >= H is terminal":
            lambda tm, prefix: _terminal(tm, prefix, off_by_one=True),
    },
)
def is_terminal_cases(rng: torch.Generator):
    tm = TokenMDP(vocab_size=4, eos=0, horizon=3)
    yield case("the empty response (the prompt alone): H = 3", tm, ())
    yield case("two tokens, no eos: H = 3", tm, _response(rng, tm, 2, end=False))
    yield case("one token then eos", tm, _response(rng, tm, 1, end=True))
    yield case("three tokens, no eos: the horizon H = 3", tm, _response(rng, tm, 3, end=False))
    yield case("eos as the very first token", tm, (0,))
    tm = TokenMDP(vocab_size=3, eos=2, horizon=1)
    yield case("horizon 1, one token that is not eos", tm, (1,))
    tm = TokenMDP(vocab_size=5, eos=4, horizon=6)
    yield case("H = 6, eos = 4, five tokens then eos", tm, _response(rng, tm, 5, end=True))


# ---------------------------------------------------------------- 1.2 the return of one response
def _return(reward_fn, response, *, shift=0, drop_last=False):
    steps = response[:-1] if drop_last else response
    return sum(float(reward_fn(response[:h + shift], a)) for h, a in enumerate(steps))


@exercise(
    "1.2", "response_return", reference=mdp.response_return,
    equation="eq. 1: R(τ) = Σ_h r(s_h, a_h), where s_h is the prompt plus the tokens before a_h "
             "(s_1 = the prompt alone: here the empty tuple) and a_h = response[h]",
    hint="for h, a in enumerate(response): the state is response[:h], the tokens before a; "
         "sum reward_fn(response[:h], a) as a Python float",
    mistakes={
        "off by one: the state before token h is response[:h]; response[:h+1] already holds a_h":
            lambda reward_fn, response: _return(reward_fn, response, shift=1),
        "left out the last action; ending the response (eos) is an action with a reward too":
            lambda reward_fn, response: _return(reward_fn, response, drop_last=True),
    },
)
def response_return_cases(rng: torch.Generator):
    tm = TokenMDP(vocab_size=4, eos=0, horizon=5)
    yield case("four tokens then eos", _reward(rng, tm), _response(rng, tm, 4, end=True))
    yield case("cut at the horizon, no eos", _reward(rng, tm), _response(rng, tm, 5, end=False))
    yield case("eos alone: one action", _reward(rng, tm), (0,))
    tm = TokenMDP(vocab_size=3, eos=2, horizon=3)
    yield case("vocabulary 3, two tokens then eos", _reward(rng, tm), _response(rng, tm, 2, end=True))


# ---------------------------------------------------------------- 1.3 every response and its probability
def _distribution(tm, policy_fn, *, absorb=True, skip_zero=True):
    out, stack = {}, [((), 1.0)]
    while stack:
        prefix, p_prefix = stack.pop()
        for a, p in enumerate(torch.as_tensor(policy_fn(prefix), dtype=DTYPE).tolist()):
            if skip_zero and p == 0.0:
                continue
            child = prefix + (a,)
            over = tm.is_terminal(child) if absorb else len(child) >= tm.horizon
            if over:
                out[child] = p_prefix * p
            else:
                stack.append((child, p_prefix * p))
    return out


@exercise(
    "1.3", "response_distribution", reference=mdp.response_distribution,
    equation="docs/paper.md §1: deterministic transitions s_{h+1} = s_h ⊕ a_h, so "
             "P(τ) = Π_h π(a_h | s_h); a response is complete once it is terminal (eos or H tokens)",
    hint="walk the tree from the empty prefix, with a stack or a recursion of (prefix, P(prefix)); "
         "for each token a with π(a | prefix) > 0 the child is prefix + (a,): store it in the "
         "dict if it is terminal, else expand it. Keys are tuples of Python ints",
    mistakes={
        "kept expanding after eos: the state after eos is absorbing, the response is complete":
            lambda tm, policy_fn: _distribution(tm, policy_fn, absorb=False),
        "kept responses of probability 0; leave them out":
            lambda tm, policy_fn: _distribution(tm, policy_fn, skip_zero=False),
    },
)
def response_distribution_cases(rng: torch.Generator):
    tm = TokenMDP(vocab_size=3, eos=0, horizon=3)
    yield case("vocabulary 3, eos = 0, H = 3", tm, _policy(rng, tm))
    tm = TokenMDP(vocab_size=4, eos=3, horizon=2)
    yield case("vocabulary 4, eos = 3, H = 2", tm, _policy(rng, tm))
    tm = TokenMDP(vocab_size=3, eos=1, horizon=4)
    yield case("a policy that never emits token 2 (probability 0)", tm, _policy(rng, tm, never=2))
    tm = TokenMDP(vocab_size=2, eos=0, horizon=1)
    yield case("horizon 1: responses of one token", tm, _policy(rng, tm))


# ---------------------------------------------------------------- 1.4 eq. 1 exactly
def _value_unweighted(tm, policy_fn, reward_fn):
    taus = mdp.response_distribution(tm, policy_fn)
    return sum(mdp.response_return(reward_fn, t) for t in taus) / len(taus)


def _value_last_reward(tm, policy_fn, reward_fn):
    return sum(p * float(reward_fn(t[:-1], t[-1])) for t, p in mdp.response_distribution(tm, policy_fn).items())


@exercise(
    "1.4", "value_by_enumeration", reference=mdp.value_by_enumeration,
    equation="eq. 1: V^π = E_τ~π[Σ_h r(s_h, a_h)] = Σ_τ P(τ) R(τ), over every complete response τ",
    hint="your response_distribution gives P(τ) for every τ, your response_return gives R(τ); "
         "return Σ P(τ) R(τ) as a float",
    mistakes={
        "averaged R(τ) over responses without weighting by their probability P(τ)": _value_unweighted,
        "counted only the last action's reward; R(τ) sums the reward of every step":
            _value_last_reward,
    },
    forbid=(mdp.response_distribution, mdp.response_return),   # use yours from 1.2 and 1.3
)
def value_by_enumeration_cases(rng: torch.Generator):
    tm = TokenMDP(vocab_size=3, eos=0, horizon=3)
    yield case("vocabulary 3, H = 3", tm, _policy(rng, tm), _reward(rng, tm))
    tm = TokenMDP(vocab_size=4, eos=2, horizon=3)
    yield case("vocabulary 4, eos = 2, H = 3", tm, _policy(rng, tm), _reward(rng, tm))
    tm = TokenMDP(vocab_size=3, eos=0, horizon=4)
    yield case("a nearly greedy policy (large logits), H = 4", tm, _policy(rng, tm, scale=6.0),
               _reward(rng, tm))


# ---------------------------------------------------------------- 1.5 eq. 1 by sampling
def _mc(tm, policy_fn, reward_fn, n, generator=None, *, ddof=1, stderr=True):
    returns = []
    for _ in range(n):
        prefix = ()
        while not tm.is_terminal(prefix):
            probs = torch.as_tensor(policy_fn(prefix), dtype=DTYPE)
            prefix = prefix + (int(torch.multinomial(probs, 1, generator=generator)),)
        returns.append(mdp.response_return(reward_fn, prefix))
    r = torch.tensor(returns, dtype=DTYPE)
    spread = r.std(correction=ddof)
    return MonteCarloEstimate(float(r.mean()), float(spread / math.sqrt(n)) if stderr else float(spread), n)


@exercise(
    "1.5", "value_by_monte_carlo", reference=mdp.value_by_monte_carlo,
    equation="eq. 1 estimated: V^π ≈ (1/n) Σ_i R(τ_i), τ_i ~ π; standard error = std(R) / √n",
    hint="n times: start from (), and until tm.is_terminal(prefix) draw "
         "a = int(torch.multinomial(probs, 1, generator=generator)) with probs = policy_fn(prefix); "
         "then return MonteCarloEstimate(mean, R.std() / math.sqrt(n), n) (std with n − 1)",
    outputs=("mean", "stderr", "n"),
    mistakes={
        "the standard error is std / √n, not the standard deviation of the returns":
            lambda tm, policy_fn, reward_fn, n, generator=None:
                _mc(tm, policy_fn, reward_fn, n, generator, stderr=False),
        "the sample standard deviation divides by n − 1 (torch's default), not n":
            lambda tm, policy_fn, reward_fn, n, generator=None:
                _mc(tm, policy_fn, reward_fn, n, generator, ddof=0),
    },
    forbid=(mdp.response_return,),   # use yours from 1.2
)
def value_by_monte_carlo_cases(rng: torch.Generator):
    # No generator is passed: the check seeds torch's global generator before each call,
    # so generator=None draws the same tokens in your function and the reference.
    tm = TokenMDP(vocab_size=3, eos=0, horizon=3)
    yield case("200 samples, vocabulary 3, H = 3", tm, _policy(rng, tm), _reward(rng, tm), 200)
    tm = TokenMDP(vocab_size=4, eos=1, horizon=4)
    yield case("50 samples, vocabulary 4, eos = 1, H = 4", tm, _policy(rng, tm), _reward(rng, tm), 50)
    tm = TokenMDP(vocab_size=2, eos=0, horizon=2)
    yield case("n = 2, the fewest with a standard error", tm, _policy(rng, tm), _reward(rng, tm), 2)

"""Checks for lesson 04 (the endogenous reward, eq. 9–12) on seeded random logits.

Logits ``[B, T+1, V]`` stand for ``f̂`` at the states ``s_1 … s_{T+1}`` of a response of
``T`` tokens; ``terminal[b]`` says that response ``b`` ended with eos (``V(s_{T+1}) = 0``).
The mistakes are the wrong versions a learner is likely to write, each named.
"""
from __future__ import annotations

import torch

from ... import reward, theory
from . import case, exercise


# ---------------------------------------------------------------- random inputs
def _logits(rng, B, T, V, scale=1.0, shift=0.0) -> torch.Tensor:
    return shift + scale * torch.randn(B, T + 1, V, generator=rng)


def _actions(rng, B, T, V) -> torch.Tensor:
    return torch.randint(V, (B, T), generator=rng)


# ---------------------------------------------------------------- 4.1 soft value (unnumbered in the paper)
@exercise(
    "4.1", "soft_value", reference=reward.soft_value,
    equation="the soft value (docs/paper.md §5, unnumbered in the paper): V(s) = α log Σ_a exp(f(s,a)/α), over the last (vocabulary) dimension",
    hint="torch.logsumexp(logits / alpha, dim=-1) is stable; multiply it by α",
    mistakes={
        "forgot the temperature: V = logsumexp(f), not α logsumexp(f/α)":
            lambda logits, alpha=1.0: torch.logsumexp(logits, -1),
        "divided by α inside the log-sum-exp but forgot the factor α outside":
            lambda logits, alpha=1.0: torch.logsumexp(logits / alpha, -1),
        "a hard max: V = max_a f is only the α → 0 limit of the soft value":
            lambda logits, alpha=1.0: logits.amax(-1),
        "reduced over a state dimension; the actions (vocabulary) are the last one":
            lambda logits, alpha=1.0: alpha * torch.logsumexp(logits / alpha, 0),
        "log Σ exp without the max trick overflows for large logits: use torch.logsumexp":
            lambda logits, alpha=1.0: alpha * torch.log(torch.exp(logits / alpha).sum(-1)),
    },
)
def soft_value_cases(rng: torch.Generator):
    yield case("logits of 2 responses, 4 states, 9 tokens [2, 4, 9]", _logits(rng, 2, 3, 9))
    yield case("α = 0.5, [3, 3, 6]", _logits(rng, 3, 2, 6, scale=3.0), alpha=0.5)
    yield case("α = 4 (a high temperature), [2, 5, 7]", _logits(rng, 2, 4, 7, scale=5.0), alpha=4.0)
    yield case("large logits, as a real LM's (exp overflows without the max trick)",
               _logits(rng, 2, 2, 8, scale=10.0, shift=120.0))
    masked = _logits(rng, 2, 3, 5)
    masked[..., 1::2] = float("-inf")            # masked tokens have probability 0
    yield case("-inf logits (masked tokens)", masked, alpha=2.0)


# ---------------------------------------------------------------- 4.2 per-token rewards (eq. 12)
def _rewards(logits, actions, alpha=1.0, terminal=None, *, temperature=True, next_value=True,
             use_terminal=True, shaping=True, shift=0):
    """eq. 12 with one deliberate mistake (named by the flags)."""
    f = logits.float()
    V = alpha * torch.logsumexp(f / alpha, -1)                           # [B, T+1]
    if terminal is not None and use_terminal:
        V = V.clone()
        V[terminal.bool(), -1] = 0.0                                     # after eos: terminal
    q = f[:, shift:f.shape[1] - 1 + shift].gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # [B, T]
    z = f / alpha if temperature else f
    logp_all = z - torch.logsumexp(z, -1, keepdim=True)
    logprobs = logp_all[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    if not shaping:
        rewards = alpha * logprobs
    elif next_value:
        rewards = q - V[:, 1:]
    else:
        rewards = q - V[:, :-1]
    return logprobs, V, rewards


def _rewards_all_terminal(logits, actions, alpha=1.0, terminal=None):
    logprobs, V, _ = _rewards(logits, actions, alpha, None)
    V[:, -1] = 0.0                                                       # every row, ended or not
    q = logits.float()[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    return logprobs, V, q - V[:, 1:]


@exercise(
    "4.2", "endogenous_rewards", reference=reward.endogenous_rewards,
    equation="eq. 10–12: log π̂(a|s) = (f(s,a) − V(s))/α, V = α logsumexp(f/α) (the soft value), "
             "r̂(s_h,a_h) = f(s_h,a_h) − V(s_{h+1}) with V(s_{T+1}) = 0 after eos",
    hint="values = soft_value(logits, alpha) is [B, T+1]; zero values[b, -1] where terminal[b]; "
         "q = logits[:, :-1].gather(-1, actions[..., None])[..., 0] is f(s_h, a_h) [B, T]; "
         "then logprobs = (q − values[:, :-1]) / α and rewards = q − values[:, 1:]",
    outputs=("logprobs", "values", "rewards"),
    mistakes={
        "r̂ = f(s_h,a_h) − V(s_h) uses the current state's value: that is α log π̂, not eq. 12, "
        "which subtracts the NEXT state's value V(s_{h+1})":
            lambda logits, actions, alpha=1.0, terminal=None:
                _rewards(logits, actions, alpha, terminal, next_value=False),
        "forgot the terminal state: after eos V(s_{T+1}) = 0 (where terminal is True)":
            lambda logits, actions, alpha=1.0, terminal=None:
                _rewards(logits, actions, alpha, terminal, use_terminal=False),
        "set V(s_{T+1}) = 0 for every response; only those that ended (terminal True) are over":
            _rewards_all_terminal,
        "log π̂ without the temperature: π̂ = softmax(f/α), not softmax(f)":
            lambda logits, actions, alpha=1.0, terminal=None:
                _rewards(logits, actions, alpha, terminal, temperature=False),
        "r̂ = α log π̂ drops the shaping terms V(s_h) − V(s_{h+1}) of eq. 12":
            lambda logits, actions, alpha=1.0, terminal=None:
                _rewards(logits, actions, alpha, terminal, shaping=False),
        "off by one: action a_h is chosen in state s_h, so its logit is logits[:, h], not logits[:, h+1]":
            lambda logits, actions, alpha=1.0, terminal=None:
                _rewards(logits, actions, alpha, terminal, shift=1),
    },
    forbid=(reward.soft_value,),   # use your own from exercise 4.1
)
def endogenous_rewards_cases(rng: torch.Generator):
    yield case("2 responses of 4 tokens, vocabulary 7, no terminal given",
               _logits(rng, 2, 4, 7), _actions(rng, 2, 4, 7))
    yield case("α = 0.5, the first and third responses ended with eos",
               _logits(rng, 3, 5, 6, scale=2.0), _actions(rng, 3, 5, 6), 0.5,
               terminal=torch.tensor([True, False, True]))
    yield case("α = 2, none ended (cut at max length: V(s_{T+1}) is kept)",
               _logits(rng, 2, 3, 8, scale=3.0), _actions(rng, 2, 3, 8), 2.0,
               terminal=torch.tensor([False, False]))
    yield case("a one-token response that ended (T = 1)", _logits(rng, 1, 1, 5),
               _actions(rng, 1, 1, 5), terminal=torch.tensor([True]))
    yield case("large logits, as a real LM's", _logits(rng, 2, 6, 10, scale=8.0, shift=60.0),
               _actions(rng, 2, 6, 10), terminal=torch.tensor([True, True]))


# ---------------------------------------------------------------- 4.3 the telescoping total
def response_total(logits, actions, alpha=1.0, terminal=None):
    """The reference: Σ_h r̂_h of eq. 12 (the package's per-token rewards, summed) [B]."""
    return reward.endogenous_rewards(logits, actions, alpha, terminal)[2].sum(-1)


def _total(logits, actions, alpha=1.0, terminal=None, *, first=True, scale=True, last="right"):
    f = logits.float()
    V = alpha * torch.logsumexp(f / alpha, -1)                           # [B, T+1]
    logp = (f[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1) - V[:, :-1]) / alpha
    ended = torch.zeros(actions.shape[0], dtype=torch.bool) if terminal is None else terminal.bool()
    total = (alpha if scale else 1.0) * logp.sum(-1)
    if first:
        total = total + V[:, 0]
    if last == "right":
        total = total - torch.where(ended, 0.0, V[:, -1])
    elif last == "always":
        total = total - V[:, -1]
    return total


@exercise(
    "4.3", "response_total", reference=response_total,
    equation="eq. 12 telescoped: Σ_h r̂_h = α Σ_h log π̂(a_h|s_h) + V(s_1) − V(s_{T+1}), "
             "with V(s_{T+1}) = 0 when the response ended with eos",
    hint="log π̂ from logits at s_1..s_T; V(s_1) = soft value of logits[:, 0]; subtract "
         "V(s_{T+1}) (from logits[:, -1]) only where terminal is False (or None)",
    mistakes={
        "forgot V(s_1): α Σ log π̂ is the sequence log-likelihood; the total adds V(s_1)":
            lambda logits, actions, alpha=1.0, terminal=None:
                _total(logits, actions, alpha, terminal, first=False),
        "forgot α: the total is α Σ log π̂ + V(s_1) − V(s_{T+1})":
            lambda logits, actions, alpha=1.0, terminal=None:
                _total(logits, actions, alpha, terminal, scale=False),
        "subtracted V(s_{T+1}) after eos too; the state after eos is terminal, V = 0":
            lambda logits, actions, alpha=1.0, terminal=None:
                _total(logits, actions, alpha, terminal, last="always"),
        "forgot − V(s_{T+1}) for a response cut before eos (terminal False or None)":
            lambda logits, actions, alpha=1.0, terminal=None:
                _total(logits, actions, alpha, terminal, last="never"),
    },
    # The point is the telescoped form: summing the package's per-token rewards is off limits.
    forbid=(reward.endogenous_rewards,),
)
def response_total_cases(rng: torch.Generator):
    yield case("2 responses that ended with eos, α = 1", _logits(rng, 2, 5, 7, scale=2.0),
               _actions(rng, 2, 5, 7), terminal=torch.tensor([True, True]))
    yield case("α = 0.5, the second response was cut (no eos)", _logits(rng, 2, 4, 6, scale=2.0),
               _actions(rng, 2, 4, 6), 0.5, terminal=torch.tensor([True, False]))
    yield case("terminal None: no response ended, α = 3", _logits(rng, 3, 3, 5, scale=4.0),
               _actions(rng, 3, 3, 5), 3.0)
    yield case("a one-token response that ended", _logits(rng, 1, 1, 9), _actions(rng, 1, 1, 9),
               terminal=torch.tensor([True]))


# ---------------------------------------------------------------- 4.4 Bradley–Terry on totals
def _sigmoid_naive(r_tau, r_tau2):
    x = torch.as_tensor(r_tau, dtype=torch.float64) - torch.as_tensor(r_tau2, dtype=torch.float64)
    return torch.exp(x) / (1 + torch.exp(x))


@exercise(
    "4.4", "bt_preference", reference=theory.bt_preference,
    equation="eq. 3 / eq. 13 (Bradley–Terry): P(τ ≻ τ') = σ(r(τ) − r(τ')) = 1 / (1 + exp(−(r(τ) − r(τ'))))",
    hint="a probability from the difference of the totals, by a sigmoid that cannot overflow, "
         "in float64 (long responses have large totals)",
    mistakes={
        "the difference is the wrong way round: P(τ ≻ τ') = σ(r(τ) − r(τ'))":
            lambda r_tau, r_tau2: theory.bt_preference(r_tau2, r_tau),
        "forgot the sigmoid: r(τ) − r(τ') is a log-odds, not a probability":
            lambda r_tau, r_tau2: torch.as_tensor(r_tau, dtype=torch.float64) - torch.as_tensor(r_tau2, dtype=torch.float64),
        "exp(x)/(1 + exp(x)) overflows to nan for large x: use torch.sigmoid": _sigmoid_naive,
        "computed in float32: totals of 2^24 and more lose their units digit; convert to "
        "float64 first": lambda r_tau, r_tau2: torch.sigmoid(
            torch.as_tensor(r_tau, dtype=torch.float32) - torch.as_tensor(r_tau2, dtype=torch.float32)),
    },
)
def bt_preference_cases(rng: torch.Generator):
    yield case("totals of 5 response pairs", torch.randn(5, generator=rng, dtype=torch.float64),
               torch.randn(5, generator=rng, dtype=torch.float64))
    yield case("two python floats", 2.5, -1.25)
    yield case("totals of a real LM (-40 … -5 nats)", -40 + 35 * torch.rand(4, generator=rng, dtype=torch.float64),
               -40 + 35 * torch.rand(4, generator=rng, dtype=torch.float64))
    yield case("a huge gap (exp overflows)", torch.tensor([800.0, -3.0], dtype=torch.float64),
               torch.tensor([-2.0, 900.0], dtype=torch.float64))
    # float32 has 24 bits of mantissa: 2^24 + 1 and 2^24 are one float32, two float64s.
    yield case("long responses' totals, 1 nat apart (float64 needed)", float(2**24 + 1), float(2**24))

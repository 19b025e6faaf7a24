"""Checks for lesson 00 (start here): the warm-up, a numerically stable soft value."""
from __future__ import annotations

import torch

from ... import reward
from . import case, exercise


def _no_max_trick(logits, alpha=1.0):
    return alpha * torch.log(torch.exp(logits / alpha).sum(-1))


def _one_max_for_the_tensor(logits, alpha=1.0):
    z = logits / alpha
    return alpha * (z.max() + torch.log(torch.exp(z - z.max()).sum(-1)))


@exercise(
    "0.1", "soft_value", reference=reward.soft_value,
    equation="the soft value (docs/paper.md §5, unnumbered in the paper): V(s) = α log Σ_a exp(f(s,a)/α), over the last dimension",
    concept="exp of a large f/α overflows: take the largest term out of the sum before "
            "exponentiating, and add it back after the log",
    hint="with m = the max of f/α over the last dimension, "
         "log Σ exp(f/α) = m + log Σ exp(f/α − m), and every exp is then ≤ 1",
    rtol=1e-5, atol=1e-5,
    mistakes={
        "exponentiating before subtracting the max: exp overflows to inf for large logits "
        "(or underflows to 0 and log gives -inf for very negative ones)": _no_max_trick,
        "forgot the temperature α (f/α inside the log-sum-exp, times α outside)":
            lambda logits, alpha=1.0: torch.logsumexp(logits, -1),
        "divided by α inside but forgot the factor α outside":
            lambda logits, alpha=1.0: torch.logsumexp(logits / alpha, -1),
        "a hard max: that is only the α → 0 limit of the soft value":
            lambda logits, alpha=1.0: logits.amax(-1),
        "reduced over the first dimension; the actions (vocabulary) are the last one":
            lambda logits, alpha=1.0: alpha * torch.logsumexp(logits / alpha, 0),
        "one max over the whole tensor: each state needs its own (max over the last dimension, "
        "keepdim=True), or a row far below the overall max underflows":
            _one_max_for_the_tensor,
    },
    # The exercise is the max trick itself, so the library's log-sum-exps are off limits.
    forbid=("logsumexp", "special_logsumexp", "softmax", "log_softmax"),
)
def soft_value_cases(rng: torch.Generator):
    yield case("random logits [4, 7]", torch.randn(4, 7, generator=rng))
    yield case("a batch of states [2, 3, 5], α = 0.5", 3 * torch.randn(2, 3, 5, generator=rng),
               alpha=0.5)
    yield case("large logits (exp overflows without the max trick)",
               500 + 100 * torch.randn(3, 6, generator=rng))
    yield case("very negative logits (exp underflows without the max trick)",
               -1000 + torch.randn(2, 4, generator=rng))
    masked = torch.randn(3, 5, generator=rng)
    masked[:, ::2] = float("-inf")  # masked actions have probability 0
    yield case("-inf logits (masked actions)", masked)
    yield case("a single action: V = f", torch.randn(5, 1, generator=rng), alpha=2.0)
    yield case("α = 10 (high temperature)", 20 * torch.randn(2, 8, generator=rng), alpha=10.0)
    scales = torch.tensor([[0.0], [-2000.0], [1500.0]])        # one state each: far apart
    yield case("states of very different scale (a max per state, not one for the tensor)",
               scales + torch.randn(3, 4, generator=rng))

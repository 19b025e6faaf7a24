"""Checks for lesson 10 (limits): the KL-regularised optimum, the exact sequence mode, the
accuracy of a sharpened model, and the verifier weight a hybrid reward needs."""
from __future__ import annotations

import heapq
import math

import torch

from ... import limits
from ...mdp import TokenMDP, response_distribution
from . import case, exercise


def _logp(rng, n, r, pad=0):
    """Log-probabilities [n, r] of listed responses (rows sum to ≤ 1), the last ``pad`` columns −inf."""
    x = torch.log_softmax(2 * torch.randn(n, r, generator=rng, dtype=torch.float64), -1) - 0.05
    if pad:
        x[:, -pad:] = -math.inf
    return x


# ---------------------------------------------------------------- 10.1 the KL optimum
@exercise(
    "10.1", "kl_optimum", reference=limits.kl_optimum,
    equation="docs/paper.md §6: argmax_π E_π[r̂] − β KL(π ‖ π̂) is π ∝ π̂^{1+α/β} (r̂(τ) = α log π̂(τ) + V(s_1))",
    concept="the KL optimum reweights π̂ by exp(r̂/β), and r̂ is α log π̂ plus a per-prompt constant: "
            "a power of π̂, renormalised over the responses",
    hint="multiply log π̂ by 1 + α/β, then normalise over the last dimension with log_softmax",
    mistakes={
        "exponent α/β: that is the entropy-bonus optimum (max E[r̂] + β H(π)), not the KL one":
            lambda logp, alpha=1.0, beta=0.01: torch.log_softmax(alpha / beta * logp, -1),
        "not normalised: (1 + α/β)·log π̂ is log π̂^{1+α/β}, which does not sum to 1":
            lambda logp, alpha=1.0, beta=0.01: (1 + alpha / beta) * logp,
        "exponent 1 + β/α: α and β swapped":
            lambda logp, alpha=1.0, beta=0.01: torch.log_softmax((1 + beta / alpha) * logp, -1),
    },
)
def kl_optimum_cases(rng: torch.Generator):
    yield case("5 prompts × 6 responses, α = 1, β = 0.5", _logp(rng, 5, 6), alpha=1.0, beta=0.5)
    yield case("the paper's β = 0.01 (almost the mode)", _logp(rng, 3, 4), alpha=1.0, beta=0.01)
    yield case("α = 0.5, β = 2, one response vector", _logp(rng, 1, 7)[0], alpha=0.5, beta=2.0)
    yield case("padding: the last 2 responses have π̂ = 0 (−inf)", _logp(rng, 4, 5, pad=2), alpha=1.0, beta=0.3)


# ---------------------------------------------------------------- 10.5 the KL optimum's value (a derivation)
def _lse(x):
    return torch.logsumexp(x, -1)


def _kl_value(logp, alpha=1.0, beta=0.01, first_value=0.0, *, how="ok"):
    k = 1 + alpha / beta
    v = torch.as_tensor(first_value, dtype=logp.dtype)
    if how == "no beta":
        return _lse(k * logp) + v
    if how == "no value":
        return beta * _lse(k * logp)
    if how == "entropy":
        return beta * _lse(alpha / beta * logp) + v
    if how == "reward only":                             # E_π*[r̂] without the KL cost
        q = limits.kl_optimum(logp, alpha, beta).exp()
        return (q * torch.where(q > 0, alpha * logp, 0.0)).sum(-1) + v
    return beta * _lse(k * logp) + v


@exercise(
    "10.5", "kl_optimal_value", reference=limits.kl_optimal_value,
    equation="docs/paper.md §6: max_π E_π[r̂] − β KL(π ‖ π̂) with r̂(τ) = α log π̂(τ) + V(s_1) (eq. 12 telescoped); "
             "the maximiser is π* = π̂^{1+α/β} / Z, Z = Σ_τ π̂(τ)^{1+α/β}",
    concept="put π* = π̂^{1+α/β}/Z into the objective and simplify: log π* = (1 + α/β) log π̂ − log Z, "
            "and most terms cancel; what is left depends on Z and V(s_1) only",
    hint="β · torch.logsumexp((1 + alpha / beta) * logp, dim=-1) + first_value",
    mistakes={
        "forgot β: the objective at π* is β log Z + V(s_1), not log Z + V(s_1)":
            lambda logp, alpha=1.0, beta=0.01, first_value=0.0: _kl_value(logp, alpha, beta, first_value, how="no beta"),
        "forgot V(s_1): r̂(τ) = α log π̂(τ) + V(s_1), and E_π[V(s_1)] = V(s_1)":
            lambda logp, alpha=1.0, beta=0.01, first_value=0.0: _kl_value(logp, alpha, beta, first_value, how="no value"),
        "exponent α/β: that is the entropy-bonus optimum's value (max E[r̂] + β H(π)), not the KL one":
            lambda logp, alpha=1.0, beta=0.01, first_value=0.0: _kl_value(logp, alpha, beta, first_value, how="entropy"),
        "E_π*[r̂] alone: the value of the objective subtracts β KL(π* ‖ π̂)":
            lambda logp, alpha=1.0, beta=0.01, first_value=0.0: _kl_value(logp, alpha, beta, first_value, how="reward only"),
    },
    forbid=(limits.kl_optimum,),   # derive the closed form: no distribution needed
)
def kl_optimal_value_cases(rng: torch.Generator):
    yield case("5 prompts × 6 responses, α = 1, β = 0.5", _logp(rng, 5, 6), alpha=1.0, beta=0.5,
               first_value=torch.randn(5, generator=rng, dtype=torch.float64))
    yield case("the paper's β = 0.01 (almost the mode)", _logp(rng, 3, 4), alpha=1.0, beta=0.01,
               first_value=torch.randn(3, generator=rng, dtype=torch.float64))
    yield case("α = 0.5, β = 2, one response vector, V(s_1) a number", _logp(rng, 1, 7)[0], alpha=0.5, beta=2.0,
               first_value=1.5)
    yield case("padding: the last 2 responses have π̂ = 0 (−inf)", _logp(rng, 4, 5, pad=2), alpha=1.0, beta=0.3,
               first_value=torch.randn(4, generator=rng, dtype=torch.float64))


# ---------------------------------------------------------------- 10.2 the exact mode
def _greedy(tm, policy_fn):
    return limits.greedy_response(tm, policy_fn)


def _beam(tm, policy_fn, width=2):
    """Beam search: keep the ``width`` likeliest prefixes at each depth."""
    beams, done = [(0.0, ())], []
    while beams:
        grown = []
        for lp, prefix in beams:
            for a, p in enumerate(policy_fn(prefix).tolist()):
                child = (lp + math.log(p), prefix + (a,))
                (done if tm.is_terminal(child[1]) else grown).append(child)
        beams = heapq.nlargest(width, grown)
    lp, best = max(done)
    return best, math.exp(lp)


def _first_complete(tm, policy_fn):
    """Best-first search that stops at the first complete response it generates, not pops."""
    heap = [(0.0, ())]
    while heap:
        neg, prefix = heapq.heappop(heap)
        for a, p in enumerate(policy_fn(prefix).tolist()):
            child = (neg - math.log(p), prefix + (a,))
            if tm.is_terminal(child[1]):
                return child[1], math.exp(-child[0])
            heapq.heappush(heap, child)


def _flipped_sign(tm, policy_fn):
    """Best-first search keyed by +log P: heapq pops the smallest key, the least likely."""
    heap = [(0.0, ())]
    while heap:
        key, prefix = heapq.heappop(heap)
        if prefix and tm.is_terminal(prefix):
            return prefix, math.exp(key)
        for a, p in enumerate(policy_fn(prefix).tolist()):
            if p > 0:
                heapq.heappush(heap, (key + math.log(p), prefix + (a,)))


def _tree(rng, vocab, horizon, eos, scale, want_beam_wrong=False):
    """A random policy tree whose mode greedy decoding misses (and beam-2 too, if asked)."""
    tm = TokenMDP(vocab, eos, horizon)
    while True:
        policy = limits.random_policy(vocab, int(torch.randint(10**6, (1,), generator=rng)), scale)
        mode = limits.best_first_mode(tm, policy)[0]
        if _greedy(tm, policy)[0] != mode and (not want_beam_wrong or _beam(tm, policy)[0] != mode):
            return tm, policy


@exercise(
    "10.2", "best_first_mode", reference=limits.best_first_mode,
    equation="docs/paper.md §6: without regularisation π_RL puts all its mass on argmax_τ π̂(τ|s_1), "
             "P(τ) = Π_h π(a_h|s_h) (what exact beam search approximates)",
    concept="probabilities only shrink as a prefix grows, so always expand the likeliest prefix so "
            "far; the first complete response taken out is the likeliest of all",
    hint="a heap of (−log P(prefix), prefix), starting from ((0.0, ())); pop the likeliest; if it is complete "
         "(tm.is_terminal and non-empty) it is the mode; else push its children with p > 0",
    mistakes={
        "greedy decoding: the likeliest token at each step is not the likeliest response": _greedy,
        "beam search (width 2) is an approximation; the exact search keeps every prefix above the best": _beam,
        "returned the first complete response pushed; only the first one POPPED is the likeliest":
            _first_complete,
        "the heap's key has the wrong sign: heapq pops the SMALLEST key, so push −log P(prefix) "
        "to pop the likeliest prefix first": _flipped_sign,
    },
    forbid=(response_distribution,),   # enumerating every response is not a search
)
def best_first_mode_cases(rng: torch.Generator):
    yield case("V = 4 (eos = 0), H = 4: greedy misses the mode", *_tree(rng, 4, 4, 0, 1.0))
    yield case("V = 3 (eos = 2), H = 5: greedy and beam-2 both miss it", *_tree(rng, 3, 5, 2, 1.0, True))
    yield case("V = 5 (eos = 1), H = 3, a peaked policy", *_tree(rng, 5, 3, 1, 2.5))


# ---------------------------------------------------------------- 10.3 sharpened accuracy
def _sharp(logp, correct, power, how):
    p = torch.exp(power * logp.double())
    if how == "prompts axis":
        p = (p / p.sum(0, keepdim=True)).nan_to_num(0.0)   # a padding column is 0/0
    elif how != "unnormalised":
        p = p / p.sum(-1, keepdim=True)
    acc = (p * correct.double())
    return float(acc.sum(-1).mean()) if how != "flat mean" else float(acc.mean())


@exercise(
    "10.3", "sharpened_accuracy", reference=limits.sharpened_accuracy,
    equation="docs/paper.md §6: PPO with KL β to π̂ converges to π ∝ π̂^{1+α/β}; accuracy = mean over prompts of "
             "Σ_τ π(τ)·1[τ correct]",
    concept="sharpen each prompt's distribution by a power, renormalise it, and add up the "
            "probability of the correct responses; then average over prompts",
    hint="probs = softmax(power · logp) over each prompt's responses (dim -1), in float64; padding (−inf) "
         "gets probability 0 by itself",
    mistakes={
        "π̂^power not renormalised over each prompt's responses":
            lambda logp, correct, power: _sharp(logp, correct, power, "unnormalised"),
        "normalised over the prompts (dim 0) instead of each prompt's responses (dim -1)":
            lambda logp, correct, power: _sharp(logp, correct, power, "prompts axis"),
        "mean over all (prompt, response) cells instead of a sum over responses, mean over prompts":
            lambda logp, correct, power: _sharp(logp, correct, power, "flat mean"),
    },
)
def sharpened_accuracy_cases(rng: torch.Generator):
    logp = _logp(rng, 6, 5, pad=1)
    correct = torch.rand(6, 5, generator=rng) < 0.4
    correct[:, -1] = False
    yield case("6 prompts, power 1 (the model itself)", logp, correct, 1.0)
    yield case("power 3", logp.clone(), correct.clone(), 3.0)
    logp = _logp(rng, 8, 4)
    correct = torch.rand(8, 4, generator=rng) < 0.5
    yield case("power 101 (β = 0.01)", logp, correct, 101.0)
    yield case("power 10⁴: practically the sequence mode", logp.clone(), correct.clone(), 1e4)


# ---------------------------------------------------------------- 10.4 verifier margin
def _margin(logp, correct, alpha=1.0, how=""):
    neg = torch.tensor(-math.inf, dtype=logp.dtype)
    right = torch.where(correct, logp, neg).amax(-1)
    wrong = (logp if how == "all" else torch.where(~correct, logp, neg)).amax(-1)
    m = wrong - right
    return -m if how == "sign" else m if how == "no alpha" else alpha * m


@exercise(
    "10.4", "verifier_margin", reference=limits.verifier_margin,
    equation="hybrid reward r̂(τ) + c·1[τ correct], r̂(τ) = α log π̂(τ) + V(s_1): its best response per prompt "
             "is correct iff c > α (max_wrong log π̂ − max_correct log π̂)",
    concept="the hybrid's best response is correct when the verifier's bonus c outweighs how much "
            "likelier (in α log π̂) the best wrong response is than the best correct one",
    hint="torch.where(correct, logp, -inf).amax(-1) is the best correct response; the same with ~correct for "
         "the best wrong one; V(s_1) cancels within a prompt",
    mistakes={
        "forgot α (r̂ = α log π̂ + V(s_1))": lambda logp, correct, alpha=1.0: _margin(logp, correct, alpha, "no alpha"),
        "sign flipped: best wrong minus best correct": lambda logp, correct, alpha=1.0: _margin(logp, correct, alpha, "sign"),
        "the best of ALL responses instead of the best wrong one":
            lambda logp, correct, alpha=1.0: _margin(logp, correct, alpha, "all"),
    },
)
def verifier_margin_cases(rng: torch.Generator):
    logp = _logp(rng, 7, 5)
    correct = torch.zeros(7, 5, dtype=torch.bool)
    correct[torch.arange(7), torch.randint(5, (7,), generator=rng)] = True
    yield case("7 prompts, one correct response each, α = 1", logp, correct, alpha=1.0)
    logp = _logp(rng, 4, 6, pad=2)
    correct = torch.tensor([[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0]],
                           dtype=torch.bool)
    yield case("α = 0.5; a prompt with no correct response (+inf), one with no wrong one (−inf), padding",
               logp, correct, alpha=0.5)

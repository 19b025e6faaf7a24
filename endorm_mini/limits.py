"""Limits of RL on a model's own reward, and what lies beyond text (docs/paper.md §6, §8).

1. **The sequence-level facts of §6.** With ``r̂(τ) = α log π̂(τ) + V(s_1)``, maximising
   ``E_π[r̂] − β KL(π ‖ π̂)`` gives ``π ∝ π̂^{1+α/β}`` (``kl_optimum``); an entropy bonus
   ``β H(π)`` instead gives ``π ∝ π̂^{α/β}`` (``entropy_optimum``: π̂ itself when β = α);
   without regularisation all mass goes to ``argmax_τ π̂(τ)``, the β → 0 end point (not a
   bound on accuracy: a stronger KL penalty can beat the mode's accuracy). These optima are
   the course's derivation; the paper's Section 3.3 only says re-extracting gives r̂ again.
2. **The sequence mode, exactly.** ``best_first_mode`` on a ``TokenMDP`` and, for a causal
   LM, ``enumerate_responses`` / ``sequence_modes``: every complete response above a
   probability (a branch-and-bound search: a prefix is never likelier than its extensions'
   parent, so pruning by the bound loses nothing). Short answers make it exact, where beam
   search only approximates it.
3. **A wrong reward.** ``carry_slip_demos``: a demonstrator who forgets the carry more often
   than not; a model cloned on it rewards the slip, and RL on that reward exploits it.
4. **RL distillation.** ``layer_subset_student``: a smaller student initialised from some of
   the teacher's layers (DistilBERT's recipe), to train on the teacher's endogenous reward.
A non-text autoregressive model and its endogenous reward live in ``endorm_mini.walks``.
"""
from __future__ import annotations

import copy
import heapq
import math
import random
import zlib
from typing import NamedTuple

import torch

from .chat import ensure_pad_token, left_pad, prompt_ids
from .device import resolve_device
from .mdp import PolicyFn, TokenMDP, _probs
from .bc import Demo
from .worlds.arith import arith_answer, arith_demos, slips


# ================================================================ 1. §6 at the sequence level
def kl_optimum(logp: torch.Tensor, alpha: float = 1.0, beta: float = 0.01) -> torch.Tensor:
    """log π of ``argmax_π E_π[r̂] − β KL(π ‖ π̂)``: ``π ∝ π̂^{1+α/β}`` over the last dim (docs/paper.md §6).

    ``logp`` [..., R]: log π̂(τ) of the responses (``-inf`` for padding). Sampling π̂ at
    sequence-level temperature ``β/(α+β)``; with the paper's β = 0.01, α = 1 almost the mode.
    """
    return torch.log_softmax((1 + _ratio(alpha, beta)) * logp, dim=-1)


def entropy_optimum(logp: torch.Tensor, alpha: float = 1.0, beta: float = 1.0) -> torch.Tensor:
    """log π of ``argmax_π E_π[r̂] + β H(π)``: ``π ∝ π̂^{α/β}``; β = α returns π̂ (docs/paper.md §6)."""
    return torch.log_softmax(_ratio(alpha, beta) * logp, dim=-1)


def kl_optimal_value(logp: torch.Tensor, alpha: float = 1.0, beta: float = 0.01,
                     first_value: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``max_π E_π[r̂] − β KL(π ‖ π̂)`` over the last dim, ``r̂(τ) = α log π̂(τ) + V(s_1)``.

    Evaluated at the optimum ``kl_optimum`` (docs/paper.md §6); the closed form the learner
    derives is ``β log Σ_τ π̂(τ)^{1+α/β} + V(s_1)``. ``logp`` [..., R] (``-inf`` pads),
    ``first_value`` V(s_1) [...] or a number.
    """
    logq = kl_optimum(logp, alpha, beta)
    q = logq.exp()
    live = q > 0                                                   # padding: 0·(−inf) is 0 here
    reward = torch.where(live, alpha * logp, 0.0)                  # r̂(τ) − V(s_1)
    kl = torch.where(live, logq - logp, 0.0)
    return (q * (reward - beta * kl)).sum(-1) + torch.as_tensor(first_value, dtype=logp.dtype)


def _ratio(alpha: float, beta: float) -> float:
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"alpha and beta must be > 0, got {alpha}, {beta}")
    return alpha / beta


def sharpened_accuracy(logp: torch.Tensor, correct: torch.Tensor, power: float) -> float:
    """Mean over prompts of ``P(correct)`` under ``π ∝ π̂^power``: logp, correct [N, R] (-inf/False pads).

    ``power = 1 + α/β`` is where PPO with a KL penalty β to π̂ converges (``kl_optimum``);
    ``power = math.inf``: the share of prompts whose sequence mode is correct (the β → 0 end point).
    """
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    _check_table(logp, correct)
    if math.isinf(power):                                                   # the sequence mode
        probs = torch.nn.functional.one_hot(logp.argmax(-1), logp.shape[-1]).double()
    else:
        probs = torch.softmax(power * logp.double(), dim=-1)               # N, R
    return float((probs * correct.double()).sum(-1).mean())


def _check_table(logp, correct):
    if logp.shape != correct.shape or logp.dim() != 2:
        raise ValueError(f"logp and correct must both be [N, R], got {list(logp.shape)}, {list(correct.shape)}")


def verifier_margin(logp: torch.Tensor, correct: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Per prompt, ``α (max_wrong log π̂ − max_correct log π̂)`` [N]: the verifier weight c a hybrid
    reward ``r̂ + c·1[correct]`` needs (c > margin) for its best response to be correct.

    ``+inf`` where no listed response is correct, ``-inf`` where none is wrong. ``V(s_1)``
    cancels within a prompt, so only log π̂ matters.
    """
    _check_table(logp, correct)
    neg_inf = torch.tensor(-math.inf, dtype=logp.dtype)
    best_right = torch.where(correct, logp, neg_inf).amax(-1)             # N
    best_wrong = torch.where(~correct & (logp > -math.inf), logp, neg_inf).amax(-1)
    return alpha * (best_wrong - best_right)


# ================================================================ 2. the sequence mode, exactly
def best_first_mode(tm: TokenMDP, policy_fn: PolicyFn) -> tuple[tuple, float]:
    """``argmax_τ P(τ)`` over complete responses and its probability, exactly.

    Best-first (uniform-cost) search: pop the likeliest prefix; extending a prefix only
    lowers its probability, so the first complete response popped is the mode. Greedy
    decoding and beam search are the approximations of this search.
    """
    heap = [(0.0, ())]                                   # (−log P(prefix), prefix)
    while heap:
        neg_logp, prefix = heapq.heappop(heap)
        if prefix and tm.is_terminal(prefix):
            return prefix, math.exp(-neg_logp)
        for a, p in enumerate(_probs(policy_fn, prefix, tm.vocab_size).tolist()):
            if p > 0:
                heapq.heappush(heap, (neg_logp - math.log(p), prefix + (a,)))
    raise ValueError("the policy gives no complete response a positive probability")


def greedy_response(tm: TokenMDP, policy_fn: PolicyFn) -> tuple[tuple, float]:
    """Greedy decoding: the likeliest token at each step; returns (response, its probability)."""
    prefix, p = (), 1.0
    while not (prefix and tm.is_terminal(prefix)):
        probs = _probs(policy_fn, prefix, tm.vocab_size)
        a = int(probs.argmax())
        prefix, p = prefix + (a,), p * float(probs[a])
    return prefix, p


def random_policy(vocab_size: int, seed: int = 0, scale: float = 2.0) -> PolicyFn:
    """A fixed random policy: prefix -> softmax(scale·N(0, 1)) over ``vocab_size`` tokens, seeded by the prefix."""
    def policy(prefix: tuple) -> torch.Tensor:
        g = torch.Generator().manual_seed(zlib.crc32(repr((seed, tuple(prefix))).encode()))
        return torch.softmax(scale * torch.randn(vocab_size, generator=g, dtype=torch.float64), -1)
    return policy


class Responses(NamedTuple):
    """The complete responses found for one prompt, likeliest first."""
    texts: list[str]            # decoded, eos dropped
    token_ids: list[tuple]      # eos included when the response ended
    logprobs: torch.Tensor      # [R] log π̂(τ | prompt), descending

    @property
    def mass(self) -> float:
        """Σ π̂(τ) over the listed responses (1 when all are listed)."""
        return float(self.logprobs.exp().sum())


@torch.no_grad()
def _next_logprobs(model, rows: list[list[int]], pad: int, device) -> torch.Tensor:
    """log π(·|s) [N, V] after each left-padded row of token ids (one forward, last position only)."""
    ids, mask = left_pad(rows, pad, device)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)     # left padding: 0 at the first real token
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False,
                logits_to_keep=1)
    return torch.log_softmax(out.logits[:, -1].float(), -1).cpu()


MAX_PREFIXES = 1_000_000   # prefixes and responses one step of the search may keep, all prompts together


def _search(model, tokenizer, prompts, min_logprob, max_new_tokens, system, batch_size, device, greedy=False,
            max_prefixes: int = MAX_PREFIXES):
    """Breadth-first over prefixes, keeping a child only if its log-probability ≥ its prompt's bound.

    A step that would keep more than ``max_prefixes`` children raises ``ValueError``: the bound
    prunes too little (a flat distribution, such as an untrained model's) for an exact search."""
    if not prompts:
        raise ValueError("prompts is empty")
    ensure_pad_token(tokenizer)
    device = resolve_device(device)
    model.to(device).eval()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    contexts = [prompt_ids(tokenizer, p, system) for p in prompts]
    bound = None if greedy else torch.as_tensor(min_logprob, dtype=torch.float32).expand(len(prompts))
    frontier, found = [(i, (), 0.0) for i in range(len(prompts))], [{} for _ in prompts]
    for depth in range(max_new_tokens):
        grown, kept = [], 0
        for start in range(0, len(frontier), batch_size):
            chunk = frontier[start:start + batch_size]
            total = _next_logprobs(model, [contexts[i] + list(p) for i, p, _ in chunk], pad, device)
            total += torch.tensor([lp for _, _, lp in chunk])[:, None]      # N, V: log π(prefix ⊕ a)
            keep = total == total.amax(-1, keepdim=True) if greedy else \
                total >= bound[[i for i, _, _ in chunk]][:, None]
            kept += int(keep.sum())
            if kept > max_prefixes:
                raise ValueError(f"step {depth + 1} of the search keeps more than {max_prefixes:,} prefixes above "
                                 "the bound: the model's distribution is too flat (untrained?) for an exact "
                                 "search; shorten max_new_tokens, raise min_prob or max_prefixes")
            for row, a in keep.nonzero().tolist():
                i, prefix, _ = chunk[row]
                child, lp = prefix + (a,), float(total[row, a])
                if a == eos or depth + 1 == max_new_tokens:   # complete: ended, or cut at the horizon
                    found[i][child] = lp
                else:
                    grown.append((i, child, lp))
        frontier = grown
    out = []
    for table in found:
        order = sorted(table, key=lambda t: (-table[t], t))
        texts = [tokenizer.decode([t for t in ids if t != eos], skip_special_tokens=True) for ids in order]
        out.append(Responses(texts, order, torch.tensor([table[t] for t in order], dtype=torch.float64)))
    return out


def enumerate_responses(model, tokenizer, prompts, min_prob: float = 1e-3, max_new_tokens: int = 4,
                        system: str | None = None, batch_size: int = 1024, device="auto",
                        max_prefixes: int = MAX_PREFIXES) -> list[Responses]:
    """Every complete response with ``π̂(τ | prompt) ≥ min_prob`` (temperature 1), per prompt.

    Exact: a prefix is at least as likely as any of its completions, so a prefix below the
    bound has no completion above it. A response cut at ``max_new_tokens`` counts as complete
    (the horizon of ``TokenMDP``). Prompts go through the chat template (``chat.prompt_ids``).
    A step keeping more than ``max_prefixes`` prefixes (all prompts) raises ``ValueError``.
    """
    if not 0 < min_prob <= 1:
        raise ValueError(f"min_prob must be in (0, 1], got {min_prob}")
    return _search(model, tokenizer, prompts, math.log(min_prob), max_new_tokens, system, batch_size, device,
                   max_prefixes=max_prefixes)


def sequence_modes(model, tokenizer, prompts, max_new_tokens: int = 4, system: str | None = None,
                   batch_size: int = 1024, device="auto", max_prefixes: int = MAX_PREFIXES) -> list[tuple[str, float]]:
    """``(argmax_τ π̂(τ | prompt), its log-probability)`` per prompt, exactly.

    Greedy decoding gives a complete response; its probability bounds the mode from below,
    and the enumeration above that bound contains the mode. Each step keeps at most
    ``1/P(greedy)`` prefixes per prompt; more than ``max_prefixes`` in all raises ``ValueError``
    (a flat model, e.g. a random one, whose greedy answer is as unlikely as any other).
    """
    greedy = _search(model, tokenizer, prompts, None, max_new_tokens, system, batch_size, device, greedy=True)
    # A looser bound only lists more; the slack covers round-off between differently padded batches.
    bound = torch.tensor([float(g.logprobs[0]) for g in greedy]) - 1e-3
    found = _search(model, tokenizer, prompts, bound, max_new_tokens, system, batch_size, device,
                    max_prefixes=max_prefixes)
    return [(r.texts[0], float(r.logprobs[0])) if r.texts else (g.texts[0], float(g.logprobs[0]))
            for r, g in zip(found, greedy)]


def response_table(found: list[Responses], prompts, is_correct) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp [N, R], correct [N, R])``, padded with ``-inf`` / False, from ``enumerate_responses``."""
    R = max(len(r.texts) for r in found)
    logp = torch.full((len(found), R), -math.inf, dtype=torch.float64)
    correct = torch.zeros(len(found), R, dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, found)):
        logp[i, :len(r.texts)] = r.logprobs
        correct[i, :len(r.texts)] = torch.tensor([bool(is_correct(p, t)) for t in r.texts], dtype=torch.bool)
    return logp, correct


# ================================================================ 3. a wrong reward: forgetting the carry
def has_carry(prompt: str) -> bool:
    """``"a+b"`` whose units digits sum to 10 or more (the answer carries a ten)."""
    a, b = (int(x) for x in prompt.split("+"))
    return a % 10 + b % 10 >= 10


def carry_slip_demos(n: int, p_correct: float = 0.35, p_forgot: float = 0.55, p: float = 0.6,
                     seed: int = 0) -> list[Demo]:
    """Noisy arithmetic (``worlds.arith_demos``, right with probability ``p``) whose demonstrator
    forgets the carry: on carry problems the answer is right with probability ``p_correct``,
    ``c − 10`` with ``p_forgot`` (> ``p_correct``: the slip is the sequence mode), else a slip."""
    if min(p_correct, p_forgot) < 0 or p_correct + p_forgot > 1:
        raise ValueError(f"p_correct, p_forgot must be ≥ 0 with a sum ≤ 1, got {p_correct}, {p_forgot}")
    rng, out = random.Random(f"carry-{seed}"), []
    for demo in arith_demos(n, p, seed):
        if has_carry(demo.prompt):
            c, u = arith_answer(demo.prompt), rng.random()
            answer = c if u < p_correct else c - 10 if u < p_correct + p_forgot else rng.choice(slips(c))
            demo = Demo(demo.prompt, str(answer))
        out.append(demo)
    return out


# ================================================================ 4. RL distillation: a smaller student
def _layer_list(model) -> tuple[object, str]:
    for owner, name in (("model", "layers"), ("transformer", "h")):   # Llama/Qwen-style, GPT-2-style
        if hasattr(getattr(model, owner, None), name):
            return getattr(model, owner), name
    raise ValueError(f"{type(model).__name__}: no model.layers or transformer.h to take layers from")


def layer_subset_student(teacher, keep=(0,)):
    """A copy of ``teacher`` with only the decoder layers ``keep`` (DistilBERT's initialisation):
    the embeddings, final norm and head are the teacher's; the layers are renumbered 0…k−1."""
    owner, name = _layer_list(teacher)
    n = len(getattr(owner, name))
    if not keep or any(not 0 <= i < n for i in keep):
        raise ValueError(f"keep must name layers in 0..{n - 1}, got {keep}")
    student = copy.deepcopy(teacher)
    owner, name = _layer_list(student)
    layers = torch.nn.ModuleList([getattr(owner, name)[i] for i in keep])
    for j, layer in enumerate(layers):
        for module in layer.modules():  # the KV cache is indexed by layer_idx
            if hasattr(module, "layer_idx"):
                module.layer_idx = j
    setattr(owner, name, layers)
    student.config.num_hidden_layers = len(keep)
    if hasattr(student.config, "layer_types") and student.config.layer_types is not None:
        student.config.layer_types = [student.config.layer_types[i] for i in keep]
    return student.eval()

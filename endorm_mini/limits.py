"""Limits of RL on a model's own reward, and what lies beyond text (PAPER.md §6, §8).

1. **The sequence-level facts of §6.** With ``r̂(τ) = α log π̂(τ) + V(s_1)``, maximising
   ``E_π[r̂] − β KL(π ‖ π̂)`` gives ``π ∝ π̂^{1+α/β}`` (``kl_optimum``); an entropy bonus
   ``β H(π)`` instead gives ``π ∝ π̂^{α/β}`` (``entropy_optimum``: π̂ itself when β = α);
   without regularisation all mass goes to ``argmax_τ π̂(τ)``: the ceiling.
2. **The sequence mode, exactly.** ``best_first_mode`` on a ``TokenMDP`` and, for a causal
   LM, ``enumerate_responses`` / ``sequence_modes``: every complete response above a
   probability (a branch-and-bound search: a prefix is never likelier than its extensions'
   parent, so pruning by the bound loses nothing). Short answers make it exact, where beam
   search only approximates it.
3. **A wrong reward.** ``carry_slip_demos``: a demonstrator who forgets the carry more often
   than not; a model cloned on it rewards the slip, and RL on that reward exploits it.
4. **RL distillation.** ``layer_subset_student``: a smaller student initialised from some of
   the teacher's layers (DistilBERT's recipe), to train on the teacher's endogenous reward.
5. **A non-text autoregressive model.** Walks on a grid as token sequences (cells, then
   ``END``); a tiny causal transformer trained on an expert's walks by next-token prediction
   (eq. 2); ``sequence_returns`` reads its endogenous reward with ``reward.endogenous_rewards``.
"""
from __future__ import annotations

import copy
import heapq
import math
import random
import zlib
from typing import NamedTuple

import torch

from .bc import collate, next_token_loss
from .chat import ensure_pad_token, prompt_ids
from .device import resolve_device
from .mdp import PolicyFn, TokenMDP, _probs
from .reward import endogenous_rewards
from .tasks import Demo, arith_answer, arith_demos, slips


# ================================================================ 1. §6 at the sequence level
def kl_optimum(logp: torch.Tensor, alpha: float = 1.0, beta: float = 0.01) -> torch.Tensor:
    """log π of ``argmax_π E_π[r̂] − β KL(π ‖ π̂)``: ``π ∝ π̂^{1+α/β}`` over the last dim (PAPER.md §6).

    ``logp`` [..., R]: log π̂(τ) of the responses (``-inf`` for padding). Sampling π̂ at
    sequence-level temperature ``β/(α+β)``; with the paper's β = 0.01, α = 1 almost the mode.
    """
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"alpha and beta must be > 0, got {alpha}, {beta}")
    return torch.log_softmax((1 + alpha / beta) * logp, dim=-1)


def entropy_optimum(logp: torch.Tensor, alpha: float = 1.0, beta: float = 1.0) -> torch.Tensor:
    """log π of ``argmax_π E_π[r̂] + β H(π)``: ``π ∝ π̂^{α/β}``; β = α returns π̂ (PAPER.md §6)."""
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"alpha and beta must be > 0, got {alpha}, {beta}")
    return torch.log_softmax((alpha / beta) * logp, dim=-1)


def sharpened_accuracy(logp: torch.Tensor, correct: torch.Tensor, power: float) -> float:
    """Mean over prompts of ``P(correct)`` under ``π ∝ π̂^power``: logp, correct [N, R] (-inf/False pads).

    ``power = 1 + α/β`` is where PPO with a KL penalty β to π̂ converges (``kl_optimum``);
    as power → ∞ it is the share of prompts whose sequence mode is correct: the ceiling.
    """
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    if logp.shape != correct.shape or logp.dim() != 2:
        raise ValueError(f"logp and correct must both be [N, R], got {list(logp.shape)}, {list(correct.shape)}")
    probs = torch.softmax(power * logp.double(), dim=-1)                   # N, R
    return float((probs * correct.double()).sum(-1).mean())


def verifier_margin(logp: torch.Tensor, correct: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Per prompt, ``α (max_wrong log π̂ − max_correct log π̂)`` [N]: the verifier weight c a hybrid
    reward ``r̂ + c·1[correct]`` needs (c > margin) for its best response to be correct.

    ``+inf`` where no listed response is correct, ``-inf`` where none is wrong. ``V(s_1)``
    cancels within a prompt, so only log π̂ matters.
    """
    if logp.shape != correct.shape or logp.dim() != 2:
        raise ValueError(f"logp and correct must both be [N, R], got {list(logp.shape)}, {list(correct.shape)}")
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


def random_policy(vocab_size: int, seed: int = 0, scale: float = 2.0) -> PolicyFn:
    """A fixed random policy over ``vocab_size`` tokens: prefix -> softmax(scale·N(0, 1)), seeded by the prefix."""
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
    L = max(map(len, rows))
    ids = torch.tensor([[pad] * (L - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in rows], device=device)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)     # left padding: 0 at the first real token
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False,
                logits_to_keep=1)
    return torch.log_softmax(out.logits[:, -1].float(), -1).cpu()


def _search(model, tokenizer, prompts, min_logprob, max_new_tokens, system, batch_size, device, greedy=False):
    """Breadth-first over prefixes, keeping a child only if its log-probability ≥ its prompt's bound."""
    ensure_pad_token(tokenizer)
    device = resolve_device(device)
    model.to(device).eval()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    contexts = [prompt_ids(tokenizer, p, system) for p in prompts]
    bound = None if greedy else torch.as_tensor(min_logprob, dtype=torch.float32).expand(len(prompts))
    frontier, found = [(i, (), 0.0) for i in range(len(prompts))], [dict() for _ in prompts]
    for depth in range(max_new_tokens):
        grown = []
        for start in range(0, len(frontier), batch_size):
            chunk = frontier[start:start + batch_size]
            total = _next_logprobs(model, [contexts[i] + list(p) for i, p, _ in chunk], pad, device)
            total += torch.tensor([lp for _, _, lp in chunk])[:, None]      # N, V: log π(prefix ⊕ a)
            keep = total == total.amax(-1, keepdim=True) if greedy else \
                total >= bound[[i for i, _, _ in chunk]][:, None]
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
                        system: str | None = None, batch_size: int = 1024, device="auto") -> list[Responses]:
    """Every complete response with ``π̂(τ | prompt) ≥ min_prob`` (temperature 1), per prompt.

    Exact: a prefix is at least as likely as any of its completions, so a prefix below the
    bound has no completion above it. A response cut at ``max_new_tokens`` counts as complete
    (the horizon of ``TokenMDP``). Prompts go through the chat template (``chat.prompt_ids``).
    """
    if not prompts:
        raise ValueError("prompts is empty")
    if not 0 < min_prob <= 1:
        raise ValueError(f"min_prob must be in (0, 1], got {min_prob}")
    return _search(model, tokenizer, prompts, math.log(min_prob), max_new_tokens, system, batch_size, device)


def sequence_modes(model, tokenizer, prompts, max_new_tokens: int = 4, system: str | None = None,
                   batch_size: int = 1024, device="auto") -> list[tuple[str, float]]:
    """``(argmax_τ π̂(τ | prompt), its log-probability)`` per prompt, exactly.

    Greedy decoding gives a complete response; its probability bounds the mode from below,
    and the enumeration above that bound contains the mode.
    """
    if not prompts:
        raise ValueError("prompts is empty")
    greedy = _search(model, tokenizer, prompts, None, max_new_tokens, system, batch_size, device, greedy=True)
    bound = torch.tensor([float(g.logprobs[0]) for g in greedy]) - 1e-5   # float32 round-off
    found = _search(model, tokenizer, prompts, bound, max_new_tokens, system, batch_size, device)
    return [(r.texts[0], float(r.logprobs[0])) for r in found]


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
    """Noisy arithmetic (``tasks.arith_demos``, right with probability ``p``) whose demonstrator
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


# ================================================================ 5. a non-text world: walks on a grid
GRID_SIZE = 5                     # cells 0..24, row-major; token c is cell c
END = GRID_SIZE ** 2              # "stop here": the eos of a walk
PAD = END + 1
GOAL = END - 1                    # the bottom-right cell


def neighbours(cell: int, size: int = GRID_SIZE) -> list[int]:
    """Cells one step up, down, left or right of ``cell`` (inside the grid)."""
    r, c = divmod(cell, size)
    return [(r + dr) * size + c + dc for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
            if 0 <= r + dr < size and 0 <= c + dc < size]


def distance(cell: int, goal: int = GOAL, size: int = GRID_SIZE) -> int:
    """Manhattan distance: the number of moves of a shortest walk."""
    (r, c), (gr, gc) = divmod(cell, size), divmod(goal, size)
    return abs(r - gr) + abs(c - gc)


def walk_return(walk, size: int = GRID_SIZE, goal: int = GOAL) -> float:
    """The true reward r*(τ) of a walk ``[start, cell, …, END?]``: −1 per move; −10 more if a move
    is not to a neighbour, or the walk does not stop (``END``) at the goal."""
    cells = [int(x) for x in walk]
    stopped = len(cells) > 1 and cells[-1] == size * size
    path = cells[:-1] if stopped else cells
    legal = all(b in neighbours(a, size) for a, b in zip(path, path[1:]))
    return -float(len(path) - 1) - 10.0 * (not (legal and stopped and path[-1] == goal))


def grid_walks(n: int, skill: float = 0.8, seed: int = 0, size: int = GRID_SIZE, goal: int = GOAL,
               max_moves: int = 16) -> list[list[int]]:
    """``n`` expert walks from uniform starts ≠ goal: with probability ``skill`` a move that
    gets closer to the goal, else any neighbour; ``END`` on reaching the goal. Walks that
    are not home within ``max_moves`` are dropped (so fewer than ``n`` may come back)."""
    rng, walks = random.Random(seed), []
    starts = [c for c in range(size * size) if c != goal]
    for _ in range(n):
        walk = [rng.choice(starts)]
        while walk[-1] != goal and len(walk) <= max_moves:
            options = neighbours(walk[-1], size)
            closer = [c for c in options if distance(c, goal, size) < distance(walk[-1], goal, size)]
            walk.append(rng.choice(closer if rng.random() < skill else options))
        if walk[-1] == goal:
            walks.append(walk + [size * size])
    return walks


def walk_model(seed: int = 0, size: int = GRID_SIZE, n_embd: int = 32, n_layer: int = 2):
    """A tiny GPT-2 over the ``size² + 2`` walk tokens (cells, END, PAD): no text anywhere."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    vocab = size * size + 2
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=n_embd, n_layer=n_layer, n_head=2,
                                      n_positions=32, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                      bos_token_id=vocab - 2, eos_token_id=vocab - 2, pad_token_id=vocab - 1))


def train_walk_model(model, walks, steps: int = 400, batch_size: int = 64, lr: float = 3e-3,
                     seed: int = 0) -> list[float]:
    """Next-token prediction (eq. 2) on walks: the start cell is the prompt, every later cell and
    ``END`` an action. AdamW, seeded minibatches; returns the loss per step."""
    if not walks:
        raise ValueError("walks is empty")
    pad = model.config.pad_token_id
    data = [(list(w), 1) for w in walks]                  # (ids, prompt length)
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(data), (batch_size,), generator=g).tolist()
        ids, attn, actions = collate([data[i] for i in idx], pad)     # B, L
        loss = next_token_loss(model(input_ids=ids, attention_mask=attn).logits, ids, actions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def sequence_returns(logits: torch.Tensor, tokens: torch.Tensor, prompt_len: int, end: int, pad: int,
                     alpha: float = 1.0) -> torch.Tensor:
    """Σ_h r̂ of each right-padded sequence [B, L] from a causal model's logits [B, L, V] (eq. 12).

    The first ``prompt_len`` tokens are the prompt (state s_1 is after them); the rest are
    actions up to ``pad``; a sequence whose last action is ``end`` ended (V = 0 after it).
    """
    if logits.shape[:2] != tokens.shape or not 1 <= prompt_len < tokens.shape[1]:
        raise ValueError(f"need logits [B, L, V] and tokens [B, L] with 1 ≤ prompt_len < L; got "
                         f"{list(logits.shape)}, {list(tokens.shape)}, prompt_len={prompt_len}")
    actions = tokens[:, prompt_len:]                                       # B, T
    mask = actions != pad
    last = actions.gather(1, (mask.sum(1, keepdim=True) - 1).clamp(min=0)).squeeze(1)
    _, _, rewards = endogenous_rewards(logits[:, prompt_len - 1:], actions, alpha, terminal=last == end,
                                       mask=mask)                          # f̂ at s_1 … s_{T+1}
    return rewards.sum(-1)


@torch.no_grad()
def score_walks(model, walks, alpha: float = 1.0) -> torch.Tensor:
    """The endogenous return r̂(τ) [B] of each walk (start cell = prompt) under ``model``."""
    pad, end = model.config.pad_token_id, model.config.eos_token_id
    ids, attn, _ = collate([(list(w), 1) for w in walks], pad)
    return sequence_returns(model(input_ids=ids, attention_mask=attn).logits, ids, 1, end, pad, alpha)


def pairwise_accuracy(good: torch.Tensor, bad: torch.Tensor) -> float:
    """Share of pairs scored ``good > bad``; a tie counts one half."""
    good, bad = torch.as_tensor(good, dtype=torch.float64), torch.as_tensor(bad, dtype=torch.float64)
    if good.shape != bad.shape or good.numel() == 0:
        raise ValueError(f"good and bad must be non-empty and the same shape, got {list(good.shape)}, "
                         f"{list(bad.shape)}")
    return float(((good > bad).double() + 0.5 * (good == bad).double()).mean())


def walk_pairs(n: int = 200, seed: int = 0, size: int = GRID_SIZE, goal: int = GOAL) -> dict[str, list]:
    """Pairs (good, bad) from the same start, by kind of flaw. good: a shortest walk; bad:

    - ``detour``: a shortest walk with one step away and back inserted (+2 moves);
    - ``stops early``: the shortest walk stopping one cell short of the goal;
    - ``jumps``: the shortest walk with two moves merged into one diagonal (illegal) jump.
    """
    rng, pairs = random.Random(f"pairs-{seed}"), {"detour": [], "stops early": [], "jumps": []}
    starts = [c for c in range(size * size) if c != goal and distance(c, goal, size) >= 2]
    for _ in range(n):
        walk = [rng.choice(starts)]
        while walk[-1] != goal:
            walk.append(rng.choice([c for c in neighbours(walk[-1], size)
                                    if distance(c, goal, size) < distance(walk[-1], goal, size)]))
        good = walk + [size * size]
        k = rng.randrange(len(walk) - 1)
        away = rng.choice(neighbours(walk[k], size))
        pairs["detour"].append((good, walk[:k + 1] + [away] + walk[k:] + [size * size]))
        pairs["stops early"].append((good, walk[:-1] + [size * size]))
        pairs["jumps"].append((good, walk[:k + 1] + walk[k + 2:] + [size * size]))
    return pairs

"""A non-text autoregressive model has an endogenous reward too (docs/paper.md §8).

Walks on a 5×5 grid are token sequences: the start cell (the prompt), the cells visited,
then ``END`` (the eos of a walk). An expert walks toward the goal, mostly by a shortest
route. A tiny causal transformer trained on its walks by next-token prediction (eq. 2,
``train_walk_model``) is a policy ``π̂ = softmax(f̂)`` over cells; its logits give the
endogenous reward (eq. 12) through the same ``reward.endogenous_rewards`` as text
(``sequence_returns``), and it ranks good walks above bad ones (``walk_pairs``) though it
never saw the true reward (``walk_return``) nor a bad walk.
"""
from __future__ import annotations

import itertools
import random

import torch

from .bc import collate, next_token_loss
from .reward import endogenous_rewards

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
    legal = all(b in neighbours(a, size) for a, b in itertools.pairwise(path))
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
    """Share of pairs scored ``good > bad``; a tie counts as wrong, as in RM-Bench and every
    other accuracy of the kit (``bench.rmbench``, ``bench.methods.pairwise_accuracy``)."""
    good, bad = torch.as_tensor(good, dtype=torch.float64), torch.as_tensor(bad, dtype=torch.float64)
    if good.shape != bad.shape or good.numel() == 0:
        raise ValueError(f"good and bad must be non-empty and the same shape, got {list(good.shape)}, "
                         f"{list(bad.shape)}")
    return float((good > bad).double().mean())


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

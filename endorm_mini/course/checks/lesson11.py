"""Checks for lesson 11 (beyond text): the grid world's true reward, the endogenous return of
a non-text causal model, and pairwise ranking accuracy."""
from __future__ import annotations

import itertools

import torch

from ... import walks
from ...reward import endogenous_rewards
from . import case, exercise

E = walks.END


# ---------------------------------------------------------------- 11.1 the true reward
def _walk_return(walk, size=walks.GRID_SIZE, goal=walks.GOAL, how=""):
    cells = [int(x) for x in walk]
    stopped = len(cells) > 1 and cells[-1] == size * size
    path = cells[:-1] if stopped else cells
    legal = all(b in walks.neighbours(a, size) for a, b in itertools.pairwise(path))
    moves = len(cells) - 1 if how == "END is a move" else len(path) - 1
    ok = {"no legality": stopped and path[-1] == goal,
          "no END needed": legal and path[-1] == goal}.get(how, legal and stopped and path[-1] == goal)
    return -float(moves) - 10.0 * (not ok)


@exercise(
    "11.1", "walk_return", reference=walks.walk_return,
    equation="the grid world's r*(τ): −1 per move; −10 more unless every move is to a neighbour and the walk "
             "says END at the goal",
    hint="split off a final END (token size²); moves = len(path) − 1; walks.neighbours(cell) lists the legal "
         "next cells",
    mistakes={
        "counted END as a move (it is the stop action, not a step)":
            lambda walk, size=5, goal=24: _walk_return(walk, size, goal, "END is a move"),
        "did not check that every move goes to a neighbour (a jump is not a move)":
            lambda walk, size=5, goal=24: _walk_return(walk, size, goal, "no legality"),
        "a walk that never says END has not stopped at the goal, even if it stands on it":
            lambda walk, size=5, goal=24: _walk_return(walk, size, goal, "no END needed"),
    },
)
def walk_return_cases(rng: torch.Generator):
    yield case("a shortest walk from 12", [12, 13, 18, 19, 24, E])
    yield case("a detour (+2 moves)", [18, 19, 14, 19, 24, E])
    yield case("a diagonal jump", [12, 18, 19, 24, E])
    yield case("stands on the goal but never says END", [22, 23, 24])
    yield case("stops short of the goal", [6, 7, 8, 13, E])
    yield case("a 4×4 grid with its goal at 0", [5, 4, 0, 16], size=4, goal=0)


# ---------------------------------------------------------------- 11.2 endogenous return
def _returns(logits, tokens, prompt_len, end, pad, alpha=1.0, how=""):
    actions = tokens[:, prompt_len:]
    mask = actions != pad
    if how == "no mask":
        mask = torch.ones_like(mask)
    last = actions.gather(1, (mask.sum(1, keepdim=True) - 1).clamp(min=0)).squeeze(1)
    terminal = None if how == "no terminal" else last == end
    logp, _, rewards = endogenous_rewards(logits[:, prompt_len - 1:], actions, alpha, terminal=terminal,
                                          mask=mask)
    return alpha * logp.sum(-1) if how == "logp only" else rewards.sum(-1)


def _sequences(rng, B, L, V, prompt_len, end, pad, ended):
    tokens = torch.randint(0, min(end, pad), (B, L), generator=rng)
    for b, n in enumerate(ended):        # n actions then END then padding; None: cut at the horizon
        if n is not None:
            tokens[b, prompt_len + n] = end
            tokens[b, prompt_len + n + 1:] = pad
    return 3 * torch.randn(B, L, V, generator=rng), tokens


@exercise(
    "11.2", "sequence_returns", reference=walks.sequence_returns,
    equation="eq. 12: r̂(s_h, a_h) = f̂(s_h, a_h) − V(s_{h+1}), V(s) = α logsumexp(f̂(s,·)/α); V = 0 after END; "
             "the state s_1 is after the prompt, so f̂(s_1,·) is the logits at position prompt_len − 1",
    hint="actions = tokens[:, prompt_len:]; mask = actions != pad; ended = the last valid action is end; "
         "then endogenous_rewards(logits[:, prompt_len − 1:], actions, alpha, terminal=ended, mask=mask)",
    mistakes={
        "no terminal: after END the walk is over and V(s_{T+1}) = 0":
            lambda logits, tokens, prompt_len, end, pad, alpha=1.0:
                _returns(logits, tokens, prompt_len, end, pad, alpha, "no terminal"),
        "padding counted as actions: mask out the tokens equal to pad":
            lambda logits, tokens, prompt_len, end, pad, alpha=1.0:
                _returns(logits, tokens, prompt_len, end, pad, alpha, "no mask"),
        "only α Σ log π̂: the return also has V(s_1) (the rewards telescope to α Σ log π̂ + V(s_1))":
            lambda logits, tokens, prompt_len, end, pad, alpha=1.0:
                _returns(logits, tokens, prompt_len, end, pad, alpha, "logp only"),
    },
)
def sequence_returns_cases(rng: torch.Generator):
    logits, tokens = _sequences(rng, 4, 9, 27, 1, walks.END, walks.PAD, [2, 4, 7, None])
    yield case("walk-like: 4 sequences of 27 tokens, prompt = 1 token, one cut", logits, tokens, 1,
               walks.END, walks.PAD)
    logits, tokens = _sequences(rng, 3, 8, 6, 3, 4, 5, [0, 2, None])
    yield case("prompt of 3 tokens, α = 0.5, END as the first action", logits, tokens, 3, 4, 5, alpha=0.5)


# ---------------------------------------------------------------- 11.3 pairwise accuracy
def _pairwise(good, bad, how):
    good, bad = torch.as_tensor(good, dtype=torch.float64), torch.as_tensor(bad, dtype=torch.float64)
    wins = (good >= bad) if how == ">=" else (good > bad)
    if how == "half":
        return float((wins.double() + 0.5 * (good == bad).double()).mean())
    return float(wins.double().sum()) if how == "count" else float(wins.double().mean())


@exercise(
    "11.3", "pairwise_accuracy", reference=walks.pairwise_accuracy,
    equation="the share of pairs (good, bad) a reward orders correctly, r(good) > r(bad); a tie is "
             "wrong, as in RM-Bench's 3×3 matrix",
    hint="mean of (good > bad), as a Python float; inputs may be lists or tensors",
    mistakes={
        "a tie counted as ½ (a tie is wrong here, as in RM-Bench and every accuracy of the kit)":
            lambda good, bad: _pairwise(good, bad, "half"),
        "a tie counted as right (a reward that cannot tell them apart has not ordered them)":
            lambda good, bad: _pairwise(good, bad, ">="),
        "a count of wins, not a share": lambda good, bad: _pairwise(good, bad, "count"),
    },
)
def pairwise_accuracy_cases(rng: torch.Generator):
    good = torch.randint(0, 4, (40,), generator=rng).double()
    yield case("40 integer scores with ties", good, torch.randint(0, 4, (40,), generator=rng).double())
    yield case("lists of floats", [0.5, -1.0, 2.0, 3.0, 1.5], [0.4, -1.0, 2.5, -2.0, 1.5])
    yield case("every pair tied", torch.ones(6), torch.ones(6))

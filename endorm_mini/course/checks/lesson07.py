"""Checks for lesson 07 (promptable rewards: the domain diagonal, docs/paper.md §7 Q2).

7.1 conditions a reward method on one system prompt and measures it on every persona's
pairs: one row of the accuracy matrix. Its cases use toy judges (frozen dataclasses, so
the grader can copy and compare them) that follow the reward-method interface
``judge(prompt, responses, system=None) -> list[float]``: a keyword judge whose favourite
word depends on the system prompt, and a seeded coin rounded so that ties happen.
7.2 reads the diagonal off a matrix.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ... import worlds
from ...bench import diagonal, methods
from . import case, exercise


# ---------------------------------------------------------------- toy judges
@dataclass(frozen=True)
class KeywordJudge:
    """Reward = how often the keyword of the system prompt occurs in the response (0 with
    no keyword for that system: a tie)."""
    keywords: tuple = tuple((worlds.persona_system(p), w) for p, w in
                            (("Academy", "study"), ("Business", "market"),
                             ("Entertainment", "fun"), ("Literature", "poem")))

    def __call__(self, prompt, responses, system=None) -> list[float]:
        word = dict(self.keywords).get(system)
        return [float(r.lower().count(word)) if word else 0.0 for r in responses]


@dataclass(frozen=True)
class CoinJudge:
    """A seeded coin per (system, prompt, response), rounded to one decimal: ties happen."""
    seed: int = 0

    def __call__(self, prompt, responses, system=None) -> list[float]:
        return [round(x, 1) for x in methods.RandomReward(self.seed)(prompt, responses, system)]


def _pairs(rng: torch.Generator, personas, n: int) -> dict[str, list[dict]]:
    seed = int(torch.randint(1000, (1,), generator=rng))
    return {p: worlds.persona_pairs(p, n=n, seed=seed) for p in personas}


# ---------------------------------------------------------------- 7.1 one row of the matrix
def accuracy_row(method, system, pairs):
    """The reference: ``{persona: pairwise accuracy}`` (a tie is wrong) of ``method``
    conditioned on ``system`` on each persona's pairs, whatever system prompt the pairs came
    with: row ``system`` of ``bench.diagonal.diagonal_matrix``."""
    row = diagonal.diagonal_matrix(method, {"row": system}, pairs, progress=False)[0]
    return {persona: float(acc) for persona, acc in zip(pairs, row)}


def _row(method, system, pairs, *, own=False, ties=False, reverse=False):
    row = {}
    for persona, column in pairs.items():
        wins = 0
        for p in column:
            c, r = method(p["prompt"], [p["chosen"], p["rejected"]], system=p["system"] if own else system)
            c, r = (r, c) if reverse else (c, r)
            wins += (c >= r) if ties else (c > r)
        row[persona] = wins / len(column)
    return row


@exercise(
    "7.1", "accuracy_row", reference=accuracy_row,
    equation="docs/paper.md §7 Q2: a system prompt is part of the state s_1, so r̂(τ | system, x) = "
             "α log π̂(τ | system, x) + V(s_1); matrix[i][j] = accuracy of the reward under system i "
             "on persona j's pairs (a tie is wrong)",
    hint="for each persona's list of pairs: wins += c > r where c, r = method(p['prompt'], "
         "[p['chosen'], p['rejected']], system=system); return {persona: wins / len(pairs[persona])}",
    mistakes={
        "used each pair's own system prompt: the whole row is ONE judge, conditioned on `system`, "
        "for every persona's pairs":
            lambda method, system, pairs: _row(method, system, pairs, own=True),
        "a tie counted as right (>=): a judge that cannot tell the answers apart gets no credit":
            lambda method, system, pairs: _row(method, system, pairs, ties=True),
        "the comparison is the wrong way round: a pair is won when the CHOSEN answer gets the higher reward":
            lambda method, system, pairs: _row(method, system, pairs, reverse=True),
    },
    forbid=(diagonal.diagonal_matrix, methods.pairwise_accuracy),
)
def accuracy_row_cases(rng: torch.Generator):
    personas = list(worlds.PERSONAS)
    yield case("a keyword judge under Academy's system prompt, 4 personas × 6 pairs (ties where "
               "neither answer has 'study')", KeywordJudge(), worlds.persona_system("Academy"),
               _pairs(rng, personas, 6))
    yield case("a seeded coin rounded to 0.1 (some ties), Business's system prompt",
               CoinJudge(int(torch.randint(1000, (1,), generator=rng))), worlds.persona_system("Business"),
               _pairs(rng, personas, 8))
    yield case("a keyword judge under Literature's system prompt, personas in another order",
               KeywordJudge(), worlds.persona_system("Literature"), _pairs(rng, personas[::-1], 5))
    yield case("a keyword judge with no system prompt (None): every pair a tie", KeywordJudge(), None,
               _pairs(rng, personas[:2], 4))
    yield case("a seeded coin under an unseen system prompt, 2 personas × 3 pairs",
               CoinJudge(int(torch.randint(1000, (1,), generator=rng))), "You write for children.",
               _pairs(rng, ["Entertainment", "Academy"], 3))


# ---------------------------------------------------------------- 7.2 the diagonal
def _dominates(matrix, rows, columns, *, ties=False, by_position=False, down_column=False, unseen=False):
    out = {}
    for i, name in enumerate(rows):
        if name not in columns:
            if unseen:
                out[name] = False
            continue
        j = i if by_position else columns.index(name)
        line = matrix[:, j] if down_column else matrix[i]
        k = i if down_column else j
        others = np.delete(line, k)
        out[name] = bool(others.size == 0 or (line[k] >= others.max() if ties else line[k] > others.max()))
    return out


@exercise(
    "7.2", "diagonal_dominates", reference=diagonal.diagonal_dominates,
    equation="docs/paper.md §7 Q2: 'each domain's reward does best on its own domain': row i's own cell "
             "(the column with row i's name) strictly above every other cell of row i",
    hint="for each row name that is also a column: j = columns.index(name); compare matrix[i, j] "
         "with np.delete(matrix[i], j).max() (strictly); skip rows that are not columns",
    mistakes={
        "a tie counted as best (>=): the own cell must be strictly above the others":
            lambda matrix, rows, columns: _dominates(matrix, rows, columns, ties=True),
        "matched row i with column i by position: find the row's persona among the columns by name":
            lambda matrix, rows, columns: _dominates(matrix, rows, columns, by_position=True),
        "compared down the column: the question is whether a reward does best on its own pairs, "
        "across its row":
            lambda matrix, rows, columns: _dominates(matrix, rows, columns, down_column=True),
        "a row with no column of its own (an unseen persona) has no diagonal cell: leave it out":
            lambda matrix, rows, columns: _dominates(matrix, rows, columns, unseen=True),
    },
)
def diagonal_dominates_cases(rng: torch.Generator):
    names = list(worlds.PERSONAS)

    def matrix(r, c, boost=0.0):
        m = torch.rand(r, c, generator=rng, dtype=torch.float64).numpy().round(2)
        for i in range(min(r, c)):
            m[i, i] = min(1.0, m[i, i] + boost)
        return m

    yield case("a random 4×4 matrix, diagonal raised a little", matrix(4, 4, 0.3), names, names)
    m = matrix(4, 4, 0.5)
    m[1, 3] = m[1, 1]
    m[3, 0] = m[3, 3] = 0.85
    yield case("ties: a row whose own cell equals another cell", m, names, names)
    yield case("two unseen personas as extra rows (6 × 4)", matrix(6, 4, 0.4), names + ["Science", "(no system)"],
               names)
    yield case("columns in another order than the rows", matrix(4, 4, 0.2), names, [names[k] for k in (2, 0, 3, 1)])
    yield case("one column", np.array([[0.9], [0.4]]), ["Academy", "Children"], ["Academy"])

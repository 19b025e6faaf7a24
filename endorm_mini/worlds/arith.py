"""Noisy arithmetic ("12+7" → "19"): the world lessons 02, 08–10 train and measure on.

Demonstrations are correct with probability ``p`` and otherwise a plausible slip (±1, ±2,
±10), each slip far less likely than the truth. A model that imitates them well (eq. 2) is
right when it decodes greedily and right only ~``p`` of the time when it samples at T = 1:
the gap RL on the endogenous reward closes. The verifier is ``verifiers.is_correct``.
"""
from __future__ import annotations

import random
import re

from ..bc import Demo

ARITH_MAX = 19                    # operands 0..19: 400 problems, answers ≤ 2 characters
SLIPS = (-1, 1, -2, 2, -10, 10)   # plausible wrong answers: off by one, two, or a carry


def arith_problems(max_operand: int = ARITH_MAX) -> list[str]:
    """Every prompt ``"a+b"`` with ``0 ≤ a, b ≤ max_operand``, in a fixed order."""
    return [f"{a}+{b}" for a in range(max_operand + 1) for b in range(max_operand + 1)]


def arith_answer(prompt: str) -> int:
    """The true answer of ``"a+b"`` / ``"a-b"`` / ``"a*b"`` (spaces allowed)."""
    m = re.fullmatch(r"\s*(\d+)\s*([-+*])\s*(\d+)\s*(=\s*\??)?\s*", prompt)
    if not m:
        raise ValueError(f"not an arithmetic prompt like '12+7': {prompt!r}")
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    return a + b if op == "+" else a - b if op == "-" else a * b


def extract_answer(response: str) -> int | None:
    """The first integer in ``response`` (``None`` if there is none)."""
    m = re.search(r"-?\d+", response)
    return int(m.group()) if m else None


def slips(correct: int) -> list[int]:
    """The wrong answers a demonstrator makes for ``correct`` (non-negative only)."""
    return [correct + d for d in SLIPS if correct + d >= 0]


def arith_demos(n: int, p: float = 0.6, seed: int = 0, problems: list[str] | None = None) -> list[Demo]:
    """``n`` demonstrations: right with probability ``p``, else a uniformly chosen slip.

    Problems are visited in shuffled rounds so each is seen ``n / len(problems)`` times.
    With ``p > 0.5`` the most likely answer (and every prefix of it) is the correct one.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p is a probability, got {p}")
    problems = problems or arith_problems()
    rng = random.Random(seed)
    demos, order = [], []
    for _ in range(n):
        if not order:
            order = problems[:]
            rng.shuffle(order)
        prompt = order.pop()
        c = arith_answer(prompt)
        answer = c if rng.random() < p else rng.choice(slips(c))
        demos.append(Demo(prompt, str(answer)))
    return demos

"""What a notebook calls: ``check`` after each exercise, ``claim`` after each measured claim.

``check("4.2", endogenous_rewards)`` runs the learner's function and the package's
reference on the same seeded cases (:mod:`.checks`), judges them with :mod:`.judge` (the
same judge ``endorm-mini grade`` uses) and prints one line, ``✔ 4.2 endogenous_rewards:
passed``, or raises an :class:`ExerciseError` naming what differed, the likely mistake and
the equation. Returning an input fails and calling the reference is refused (watched with
``sys.setprofile``).

Hints are tiered, per exercise, over the kernel session (:data:`FAILURES`): the first
failed check gives the idea to use (the exercise's ``concept``), the second adds the shape
of the expected answer, and only from the third on the code-level ``hint``. The "likely
mistake" lines and the equation to re-read come every time. ``endorm-mini grade`` is not
tiered: it shows the instructor the full hint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
from typing import Callable

import torch

from . import checks, judge
from .compare import compare, describe


#: Failed checks per exercise id in this kernel session (a pass resets its count).
FAILURES: dict[str, int] = {}
#: From which failed check of an exercise on its code-level hint is shown.
CODE_HINT_AFTER = 3
_NO_CONCEPT = ("say in words what each symbol of the equation below is, and which axis of the "
               "tensors it runs over, before changing the code")


def tiered_hint(ex: checks.Exercise, failures: int, want=None) -> str:
    """The hint for the ``failures``-th failed check of ``ex``: the concept (1st), then the
    expected answer's shape (2nd), then the code-level hint (from :data:`CODE_HINT_AFTER`)."""
    parts = [ex.concept or _NO_CONCEPT]
    if failures >= 2 and want is not None:
        parts.append(f"the answer on this case is {describe(want)}")
    if failures >= CODE_HINT_AFTER and ex.hint:
        parts.append(f"in code ({failures} failed checks of {ex.id}): {ex.hint}")
    elif ex.hint:
        left = CODE_HINT_AFTER - failures
        parts.append(f"code-level help after {left} more failed check{'s' * (left > 1)}")
    return "; ".join(parts)


def _failed_want(ex: checks.Exercise, wants: list, outcomes: list):
    """The reference's answer on the first case the learner's function failed (else None)."""
    for want, outcome in zip(wants, outcomes):
        if isinstance(outcome, BaseException) or compare(outcome[0], want, ex.rtol, ex.atol) is not None:
            return want
    return None


class ExerciseError(AssertionError):
    """A check failed: the message says what differed and what to re-read."""


class ExerciseNotImplemented(ExerciseError, NotImplementedError):
    """The exercise still raises the stub's ``NotImplementedError``."""


@contextlib.contextmanager
def _earlier_exercises_finished(ex: checks.Exercise, fn: Callable):
    """Exercises are checked independently: while ``fn`` runs, an earlier exercise of the
    lesson whose function in ``fn``'s globals is still the stub is the package's reference.
    Yields the names replaced."""
    scope = getattr(inspect.unwrap(fn), "__globals__", {})
    saved, replaced = {}, []
    for other in checks.lesson_exercises(int(ex.id.split(".")[0])):
        if other.id != ex.id and checks.is_stub(scope.get(other.name), other.id):
            saved[other.name] = scope[other.name]
            scope[other.name] = judge.stand_in(other.reference)
            replaced.append(f"{other.name} ({other.id})")
    try:
        yield replaced
    finally:
        scope.update(saved)


def check(exercise_id: str, fn: Callable) -> None:
    """Compare the learner's ``fn`` with exercise ``exercise_id``'s reference on its cases:
    print ``✔ <id> <name>: passed``, or raise :class:`ExerciseError` (wrong, or a shortcut)
    or :class:`ExerciseNotImplemented` (the stub is still there)."""
    ex = checks.get(exercise_id)
    tag = f"{ex.id} {ex.name}"
    if not callable(fn):
        raise ExerciseError(f"✘ {tag}: pass the function itself, as in check({ex.id!r}, "
                            f"{ex.name}); got {describe(fn)}")
    codes, c_names = judge.forbidden(ex)
    seen: list[str] = []  # shortcuts taken; refused after the cases, so a wrong value shows first
    cases, wants, outcomes = [], [], []
    with _earlier_exercises_finished(ex, fn) as replaced:
        for case in ex.cases(torch.Generator().manual_seed(ex.seed)):
            cases.append(case)
            wants.append(judge.call(ex.reference, case, ex.seed)[0])
            outcomes.append(judge.run_case(fn, case, ex.seed, codes, c_names, seen))
            if isinstance(outcomes[-1], KeyboardInterrupt):
                raise outcomes[-1]   # the learner stopped the cell: not a verdict
            if judge.failed(outcomes[-1]):
                break
    verdict = judge.verdict(ex, cases, wants, outcomes, seen, traceback_shown=True)
    if verdict.result == "failed":
        FAILURES[ex.id] = FAILURES.get(ex.id, 0) + 1
        tiered = dataclasses.replace(ex, hint=tiered_hint(ex, FAILURES[ex.id], _failed_want(ex, wants, outcomes)))
        verdict = judge.verdict(tiered, cases, wants, outcomes, seen, traceback_shown=True)
    if verdict.result == "not attempted":
        raise ExerciseNotImplemented(
            f"✘ {tag}: not implemented yet (NotImplementedError: {verdict.error}). Replace the "
            f"`raise NotImplementedError` line of `{ex.name}` with your code, run that "
            "cell, then this one.") from None
    if verdict.result != "passed":
        raise ExerciseError(verdict.detail) from verdict.error
    FAILURES.pop(ex.id, None)
    note = f" (with the package's {', '.join(replaced)} standing in: not finished yet)" \
        if replaced else ""
    print(f"✔ {tag}: passed{note}")


class ClaimError(AssertionError):
    """A claim the lesson makes from its measured numbers does not hold on this run."""


def claim(statement: str, holds: bool, measured: str) -> None:
    """Check a claim the prose makes from numbers of training, sampling or long reductions.

    Those numbers differ in their last digits between CPUs (``ATEN_CPU_CAPABILITY``
    kernels), so the notebook tests do not compare them digit by digit; the claim is
    checked instead, with a tolerance measured across seeds and kernels. Prints one line,
    ``✔ <statement>``, that is the same on every machine, or raises :class:`ClaimError`
    with the numbers ``measured`` on this run.
    """
    if not holds:
        raise ClaimError(f"✘ this lesson claims: {statement}; but this run measured {measured}. "
                         "If you changed the code above, that may be why; otherwise please "
                         "report it, with your CPU and torch version.")
    print(f"✔ {statement}")

"""The judge: one way to run an exercise function on its cases and say whether it passed.

``check()`` in a notebook (:mod:`.api`) and ``endorm-mini grade``'s re-test (:mod:`.retest`)
both call :func:`run_case` for each case and :func:`verdict` on the outcomes, so the two can
never judge the same function differently. The verdict, in order: the stub is still there
(not attempted); a case raised, gave a wrong answer or changed its input (the first such
case, with the likely mistake, the hint and the equation); the function called what the
exercise forbids (it does the work). Otherwise: passed.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import sys
import textwrap
import threading
from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import checks, paper
from .compare import compare, describe


class TooSlow(BaseException):
    """The learner's function ran past the per-exercise time limit (the re-test's ``SIGALRM``)."""


@dataclass(frozen=True)
class Verdict:
    result: str                       # passed · not attempted · failed
    detail: str = ""                  # why, for anything but passed
    error: BaseException | None = None  # what the learner's function raised, if that is why


def code_objects(fn: Any) -> set:
    """The Python code objects whose execution means ``fn`` was called."""
    if isinstance(fn, functools.partial):
        return code_objects(fn.func)
    fn = getattr(fn, "__func__", fn)      # bound methods
    fn = inspect.unwrap(fn) if callable(fn) else fn
    if inspect.isfunction(fn):
        return {fn.__code__}
    if inspect.isclass(fn):               # a class reference: any of its own methods
        return {f.__code__ for f in vars(fn).values() if inspect.isfunction(f)}
    return set()


def forbidden(ex: checks.Exercise) -> tuple[set, set]:
    """``(code objects, C function names)`` the learner's function may not call: the
    reference and the exercise's ``forbid`` list."""
    codes = code_objects(ex.reference) | set().union(*(code_objects(f) for f in ex.forbid))
    c_names = {f if isinstance(f, str) else f.__name__ for f in ex.forbid
               if isinstance(f, str) or not code_objects(f)}
    if not code_objects(ex.reference):
        c_names.add(ex.reference.__name__)
    return codes, c_names


@contextlib.contextmanager
def watch_calls(codes: set, c_names: set, seen: list, switched_off: list | None = None):
    """Record calls of the given Python code objects or C functions while the block runs.
    With ``switched_off`` (the re-test), threads started in the block are watched too, and
    whether the block removed the profiler is appended to it."""
    previous = sys.getprofile()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            code = frame.f_code  # co_qualname is Python ≥ 3.11
            seen.append(f"{frame.f_globals.get('__name__')}."
                        f"{getattr(code, 'co_qualname', code.co_name)}")
        elif event == "c_call" and getattr(arg, "__name__", None) in c_names:
            seen.append(arg.__name__)
        if previous is not None:
            previous(frame, event, arg)
    sys.setprofile(profile)
    if switched_off is not None:
        threading.setprofile(profile)
    try:
        yield seen
    finally:
        if switched_off is not None:
            switched_off.append(sys.getprofile() is not profile)
            threading.setprofile(None)
        sys.setprofile(previous)


def call(fn: Callable, case: checks.Case, seed: int, watch=contextlib.nullcontext()):
    """``fn`` on fresh copies of the case's inputs, with the global RNG seeded and restored.
    Returns ``(output, (args, kwargs) after the call)``."""
    args, kwargs = copy.deepcopy((case.args, case.kwargs))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with watch:
            return fn(*args, **kwargs), (args, kwargs)


def run_case(fn: Callable, case: checks.Case, seed: int, codes: set, c_names: set, seen: list,
             switched_off: list | None = None):
    """One case of the learner's function, forbidden calls watched (:func:`watch_calls`):
    ``(output, inputs after)`` or the exception it raised."""
    try:
        return call(fn, case, seed, watch_calls(codes, c_names, seen, switched_off))
    except BaseException as err:  # noqa: BLE001 - judged by verdict()
        return err


def stand_in(reference: Callable) -> Callable:
    """An exercise's reference compiled afresh from its source (same globals, same file name):
    it stands in for a learner's unfinished earlier exercise without counting as a call of the
    reference itself, which a later exercise may forbid (4.2 must not call the package's
    soft_value, yet may rest on 4.1's)."""
    fn = inspect.unwrap(reference)
    if not inspect.isfunction(fn) or fn.__code__.co_freevars:
        return reference
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return reference
    defined: dict[str, Any] = {}
    exec(compile(source, fn.__code__.co_filename, "exec"), fn.__globals__, defined)
    return defined.get(fn.__name__, reference)


def _named_inputs(ex: checks.Exercise, case: checks.Case) -> dict[str, Any]:
    try:
        return dict(inspect.signature(ex.reference).bind(*case.args, **case.kwargs).arguments)
    except (TypeError, ValueError):
        return {f"arg{i}": a for i, a in enumerate(case.args)} | dict(case.kwargs)


def _notes_suffix(equation: str) -> str:
    """Where the cited notes are, for a ``re-read`` line that cites them (or an eq./§)."""
    return f" (notes: {paper.notes_location()})" if paper.CITES_NOTES.search(equation) else ""


def failure(ex: checks.Exercise, case: checks.Case, problem: str, got: Any = None,
            what: str = "wrong answer") -> str:
    """The message of a failed case: what differed, the likely mistake, hint, equation."""
    inputs = _named_inputs(ex, case)
    lines = [f"✘ {ex.id} {ex.name}: {what} on case {case.label!r} "
             f"({', '.join(f'{k}={describe(v)}' for k, v in inputs.items())})", f"  {problem}"]
    for name, value in inputs.items():
        if got is not None and (got is value or compare(got, value, 0, 0) is None):
            lines.append(f"  your function returned its input `{name}` unchanged.")
    for mistake, wrong in ex.mistakes.items():
        try:
            if compare(got, call(wrong, case, ex.seed)[0], ex.rtol, ex.atol) is None:
                lines.append(f"  likely mistake: {mistake}")
        except Exception:  # a mistake that cannot even run on this case is not the one
            pass
    lines += [f"  hint: {ex.hint}"] if ex.hint else []
    lines += [f"  re-read: {ex.equation}{_notes_suffix(ex.equation)}"] if ex.equation else []
    return "\n".join(lines)


def verdict(ex: checks.Exercise, cases: list[checks.Case], wants: list, outcomes: list,
            seen: list[str], traceback_shown: bool = False) -> Verdict:
    """Judge the learner's ``outcomes`` (from :func:`run_case`) against the reference's
    ``wants`` on ``cases`` (as many outcomes as were run: the judging stops at the first
    that fails). ``seen``: forbidden calls recorded while they ran."""
    tag = f"{ex.id} {ex.name}"
    for case, want, outcome in zip(cases, wants, outcomes):
        if isinstance(outcome, NotImplementedError):
            return Verdict("not attempted", "the exercise still raises NotImplementedError", outcome)
        if isinstance(outcome, TooSlow):
            return Verdict("failed", f"✘ {tag}: did not finish within {outcome} s on case "
                                     f"{case.label!r}", outcome)
        if isinstance(outcome, BaseException):
            shown = " (traceback above)" if traceback_shown else ""
            problem = f"{type(outcome).__name__}: {outcome}{shown}"
            return Verdict("failed", failure(ex, case, problem, what="your function raised"),
                           outcome)
        got, (args, kwargs) = outcome
        if (problem := compare(got, want, ex.rtol, ex.atol, names=ex.outputs)) is not None:
            also = f"\n  also: your function calls `{seen[0]}`, which is off limits" if seen else ""
            return Verdict("failed", failure(ex, case, problem, got) + also)
        if compare((args, kwargs), (case.args, case.kwargs), 0, 0, "input") is not None:
            return Verdict("failed", failure(ex, case, "work on a copy (e.g. `x = x.clone()`)",
                                             what="your function changed its input in place"))
    if seen:
        return Verdict("failed", f"✘ {tag}: your function calls `{seen[0]}`, which does the work "
                                 "of this exercise: write it yourself.")
    return Verdict("passed")


def failed(outcome) -> bool:
    """Whether a :func:`run_case` outcome already decides the verdict (no need for more cases)."""
    return isinstance(outcome, BaseException)

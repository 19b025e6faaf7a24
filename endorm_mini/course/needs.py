"""What a lesson's Jupyter kernel does beyond plain Python; the first cell installs it.

- ``%%needs 4.2`` as a cell's first line: while exercise 4.2's function is still the stub
  (or not defined yet), the cell prints one line naming the exercise and runs nothing else,
  so an unfinished notebook run top to bottom shows no knock-on tracebacks. Once the exercise
  is written the line is dropped before the cell runs: the cell behaves as if it were not
  there (its tracebacks, its displayed value). It is an input transformer, not a cell magic,
  for exactly that reason.
- A check that fails (an unfinished exercise, a wrong answer: ``ExerciseError``; a claim the
  run does not bear out: ``ClaimError``) shows its message alone, not a traceback through
  the grading code. The cell still fails: ``Run all`` stops there (what follows a failed
  check would build on a wrong or missing answer), and nbval counts it.

Outside IPython (a script, ``endorm-mini grade``'s re-test) nothing is installed; the re-test
drops ``%`` lines like any other magic.
"""
from __future__ import annotations

import re
from typing import Any

from . import checks

NEEDS_RE = re.compile(r"^%%needs(?P<ids>(?:[ \t]+\d+\.\d+)+)[ \t]*$")


def unfinished(exercise_ids: list[str], namespace: dict[str, Any]) -> list[str]:
    """``"4.2 endogenous_rewards"`` for each exercise whose function in ``namespace`` is
    missing or still the stub (:func:`endorm_mini.course.checks.is_stub`)."""
    out = []
    for exercise_id in exercise_ids:
        ex = checks.get(exercise_id)
        fn = namespace.get(ex.name)
        if fn is None or checks.is_stub(fn, ex.id):
            out.append(f"{ex.id} {ex.name}")
    return out


def skip_line(missing: list[str]) -> str:
    """The one line a ``%%needs`` cell prints instead of running."""
    which = " and ".join(f"exercise {m}" for m in missing)
    it = "it" if len(missing) == 1 else "them"
    return (f"⏭ skipped: this cell needs {which}, not finished yet "
            f"(write {it}, run the check, then run this cell again)")


def needs_transformer(shell):
    """An IPython input transformer for ``%%needs N.M ...`` (see the module's docstring)."""
    def transform(lines: list[str]) -> list[str]:
        if not lines or not (match := NEEDS_RE.match(lines[0].rstrip("\n"))):
            return lines
        missing = unfinished(match["ids"].split(), shell.user_ns)
        if missing:
            return [f"print({skip_line(missing)!r})\n"]
        return ["\n"] + lines[1:]  # keep line numbers: tracebacks point at the learner's lines
    transform.endorm_mini_needs = True
    return transform


def one_line_error(shell, etype, value, tb, tb_offset=None):
    """Show a failed check as its message alone (the cell still fails)."""
    shell._showtraceback(etype, value, [f"\x1b[0;31m{value}\x1b[0m"])


def install(quiet: tuple[type, ...] = ()) -> bool:
    """Install ``%%needs`` and the one-line display of ``quiet`` exceptions in the running
    IPython kernel; a no-op (False) outside IPython. Safe to call again."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    cleanup = shell.input_transformers_cleanup
    cleanup[:] = [t for t in cleanup if not getattr(t, "endorm_mini_needs", False)]
    cleanup.append(needs_transformer(shell))
    if quiet:
        shell.set_custom_exc(quiet, one_line_error)
    return True

"""Every notebook, found automatically: solutions pass strict nbval with their stored
outputs, untouched lessons fail at their first check, a filled exercise passes its check,
and lessons/ is what build-lessons would write from solutions/.

Notebooks run on CPU (``CUDA_VISIBLE_DEVICES=""``) in kernels of this environment, each
in its own process with a time limit.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from conftest import without_real_model_sections
from endorm_mini import cli
from endorm_mini.course import cells, nbrun, needs

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")
NOTEBOOK_LIMIT_S = 300   # a guard against a hung kernel; each lesson is meant to take ≤ 120 s
CPU_ONLY = nbrun.kernel_env(CUDA_VISIBLE_DEVICES="")
names = [p.name for p in SOLUTIONS]


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _first_exercise(nb):
    """(exercise id, index of its exercise cell, index of its check cell) among code cells."""
    code = _code(nb)
    for i, cell in enumerate(code):
        if ids := cells.exercise_ids(cell.source):
            check_at = next(j for j, c in enumerate(code) if ids[0] in cells.check_ids(c.source))
            return ids[0], i, check_at
    pytest.skip("this notebook has no exercise")


def _run_cpu(nb, cwd):
    return nbrun.run(nb, cwd, timeout=NOTEBOOK_LIMIT_S, env=CPU_ONLY)


def test_lessons_are_up_to_date_with_solutions(capsys):
    """The drift check: `endorm-mini build-lessons --check` finds nothing to change."""
    assert SOLUTIONS, "no solutions/NN_*.ipynb found"
    code = cli.main(["build-lessons", "--check", "--solutions", str(ROOT / "solutions"),
                     "--lessons", str(ROOT / "lessons")])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err


def _strict_nbval(path: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", str(path), "--nbval", "--nbval-current-env",
           f"--nbval-sanitize-with={SANITIZE}", f"--nbval-cell-timeout={NOTEBOOK_LIMIT_S}",
           "-p", "no:cacheprovider", "-p", "no:benchmark", "-q", "--rootdir", str(path.parent)]
    return subprocess.run(cmd, capture_output=True, text=True, env=CPU_ONLY, cwd=path.parent,
                          timeout=NOTEBOOK_LIMIT_S)


@pytest.mark.parametrize("master", SOLUTIONS, ids=names)
def test_solution_passes_strict_nbval_with_its_stored_outputs(master):
    result = _strict_nbval(master)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_strict_nbval_catches_a_changed_stored_output():
    """The test above can fail: lesson 00 with one printed word changed is rejected."""
    nb = nbformat.read(ROOT / "solutions" / "00_start_here.ipynb", as_version=4)
    cell = next(c for c in _code(nb) if "V computed literally" in "".join(
        o.get("text", "") for o in c.outputs))
    cell.outputs[0].text = cell.outputs[0].text.replace("literally", "by hand")
    copy = ROOT / "solutions" / ".changed_00_start_here.ipynb"   # same folder: same cwd
    try:
        nbformat.write(nb, copy)
        result = _strict_nbval(copy)
    finally:
        copy.unlink(missing_ok=True)
    assert result.returncode != 0 and "by hand" in result.stdout


def _run_to_the_end(nb) -> float:
    """Run ``nb`` on CPU top to bottom with errors allowed (Run all, going on past errors, as
    ``pytest --nbval-lax`` and ``endorm-mini grade`` do); returns the wall time in seconds."""
    for cell in _code(nb):
        cell.metadata["tags"] = [*cell.metadata.get("tags", []), "raises-exception"]
    start = time.perf_counter()
    _run_cpu(nb, ROOT / "lessons")
    return time.perf_counter() - start


def _needs(cell):
    """The ``%%needs N.M ...`` first line of a cell, matched (None without one)."""
    return needs.NEEDS_RE.match(cell.source.split("\n", 1)[0])


def _unclear(nb) -> list[str]:
    """What is wrong with an untouched lesson that has been run to the end: every error should
    be the one-line `ExerciseNotImplemented` of an unfinished exercise's check, exactly one per
    check, and every `%%needs` cell should print its one skip line and nothing else."""
    problems, check_at = [], {}
    for i, cell in enumerate(_code(nb)):
        for eid in cells.check_ids(cell.source):
            check_at.setdefault(eid, i)        # an exercise's check: the first cell calling it
    for i, cell in enumerate(_code(nb)):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        got = [(e.ename, e.evalue) for e in errors]
        if checked := [eid for eid, at in check_at.items() if at == i]:
            tag = f"✘ {checked[0]} "
            if [(e.ename, len(e.traceback), tag in e.traceback[0]) for e in errors] \
                    != [("ExerciseNotImplemented", 1, True)]:
                problems.append(f"code cell {i}, the check of {checked[0]}: expected one "
                                f"one-line ExerciseNotImplemented, got {got}")
        elif errors:
            problems.append(f"code cell {i}: {got[0][0]}: {got[0][1]} "
                            f"(its first line: {cell.source.splitlines()[0]!r})")
        elif match := _needs(cell):
            line = needs.skip_line(needs.unfinished(match["ids"].split(), {}))
            outputs = [dict(o) for o in cell.outputs]
            # one print may reach the notebook as several stdout messages (its text, then its
            # newline: seen on a loaded machine); what counts is that stdout is that one line
            printed = "".join(o.get("text", "") for o in outputs)
            if {(o["output_type"], o.get("name")) for o in outputs} != {("stream", "stdout")} \
                    or printed != line + "\n":
                problems.append(f"code cell {i} ({match[0]}): expected only the skip line, "
                                f"got {outputs}")
    if not any(map(_needs, _code(nb))):
        problems.append("no cell is marked %%needs: nothing here rests on an exercise?")
    return problems


@pytest.mark.parametrize("master", SOLUTIONS, ids=names)
def test_untouched_lesson_fails_only_at_its_checks(master):
    """Run to the end, an untouched lesson fails first at its first exercise's check, and
    then only at the other checks, each with one line; the cells that need an unfinished
    exercise say so in one line and skip (``%%needs``, endorm_mini.course.needs). Its
    real-model sections are left out: they rest on no exercise (refused otherwise) and the
    strict nbval test runs them."""
    lesson = nbformat.read(ROOT / "lessons" / master.name, as_version=4)
    without_real_model_sections(lesson)
    eid, _, check_at = _first_exercise(lesson)
    _run_to_the_end(lesson)
    failed = [i for i, c in enumerate(_code(lesson))
              if any(o.output_type == "error" for o in c.outputs)]
    assert failed[0] == check_at, f"the first failing cell should be the check of {eid}"
    assert _unclear(lesson) == []


def test_a_missing_needs_line_is_caught():
    """The test above can fail: lesson 00 with its one `%%needs 0.1` line removed shows the
    stub's NotImplementedError in that cell, and is rejected."""
    lesson = nbformat.read(ROOT / "lessons" / "00_start_here.ipynb", as_version=4)
    [cell] = [c for c in _code(lesson) if c.source.startswith("%%needs 0.1\n")]
    cell.source = cell.source.split("\n", 1)[1]
    _run_to_the_end(lesson)
    problems = _unclear(lesson)
    assert len(problems) == 2 and "NotImplementedError: exercise 0.1" in problems[0], problems
    assert "no cell is marked %%needs" in problems[1]


@pytest.mark.parametrize("master", SOLUTIONS, ids=names)
def test_lesson_with_its_first_exercise_filled_passes_that_check(master):
    lesson = nbformat.read(ROOT / "lessons" / master.name, as_version=4)
    solution = nbformat.read(master, as_version=4)
    eid, at, check_at = _first_exercise(lesson)
    _, sol_at, _ = _first_exercise(solution)
    code = _code(lesson)
    code[at].source = _code(solution)[sol_at].source          # the learner's answer
    lesson.cells = lesson.cells[: lesson.cells.index(code[check_at]) + 1]  # run up to its check
    _run_cpu(lesson, ROOT / "lessons")
    out = "".join(o.get("text", "") for o in code[check_at].outputs)
    assert out.startswith(f"✔ {eid} ") and out.endswith(": passed\n"), out

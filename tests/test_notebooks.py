"""Every notebook, found automatically: solutions pass strict nbval with their stored
outputs, untouched lessons fail at their first check, a filled exercise passes its check,
and lessons/ is what build-lessons would write from solutions/.

Notebooks run on CPU (``CUDA_VISIBLE_DEVICES=""``) in kernels of this environment, each
in its own process with a time limit.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from endorm_mini import cli, notebooks

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")
NOTEBOOK_LIMIT_S = 300   # a guard against a hung kernel; each lesson is meant to take ≤ 120 s
CPU_ONLY = notebooks.kernel_env(CUDA_VISIBLE_DEVICES="")
names = [p.name for p in SOLUTIONS]


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _first_exercise(nb):
    """(exercise id, index of its exercise cell, index of its check cell) among code cells."""
    code = _code(nb)
    for i, cell in enumerate(code):
        if ids := notebooks.exercise_ids(cell.source):
            check_at = next(j for j, c in enumerate(code) if ids[0] in notebooks.check_ids(c.source))
            return ids[0], i, check_at
    pytest.skip("this notebook has no exercise")


def _run_cpu(nb, cwd):
    return notebooks.run(nb, cwd, timeout=NOTEBOOK_LIMIT_S, env=CPU_ONLY)


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


@pytest.mark.parametrize("master", SOLUTIONS, ids=names)
def test_untouched_lesson_fails_at_its_first_check(master):
    lesson = nbformat.read(ROOT / "lessons" / master.name, as_version=4)
    eid, _, check_at = _first_exercise(lesson)
    with pytest.raises(CellExecutionError) as err:
        _run_cpu(lesson, ROOT / "lessons")
    failed = [i for i, c in enumerate(_code(lesson))
              if any(o.output_type == "error" for o in c.get("outputs", []))]
    assert failed == [check_at], f"the first failing cell should be the check of {eid}"
    assert err.value.ename in ("ExerciseNotImplemented", "NotImplementedError")
    assert f"exercise {eid}" in err.value.evalue


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

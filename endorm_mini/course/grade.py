"""``endorm-mini grade``: run a learner's notebook under nbval and re-test each exercise out of it.

The notebook runs under ``pytest --nbval-lax`` so that its code runs in context; at the same
time each exercise function is re-tested out of it (:mod:`.retest`: fresh seeded cases) by
the same judge that ``check()`` uses (:mod:`.judge`), in a process that runs no learner
code; the function itself runs in a sandbox process that sees only each case's inputs
(:mod:`.sandbox`). Only the
re-test scores: what the notebook's own check cells printed does not count.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple
from xml.etree import ElementTree

from . import checks, nbrun
from .cells import BUILD_KEY, check_ids, clean, exercise_ids, lesson_number


# nbval's pytest without jsonschema's IRI format checker: rfc3987_syntax builds a grammar when
# imported (2-3 s, more than lesson 00 takes to run); no notebook schema uses the "iri" format.
PYTEST = "import sys; sys.modules['rfc3987_syntax'] = None; import pytest; sys.exit(pytest.main(sys.argv[1:]))"


class Row(NamedTuple):
    exercise: str
    name: str
    result: str   # passed · failed · not attempted · missing · not run
    detail: str   # why, for anything but passed
    similarity: float | None = None  # of the exercise's AST to the reference's (names canonicalised), 0-1

    @property
    def points(self) -> int:
        return int(self.result == "passed")


class NotebookError(ValueError):
    """The file is not a notebook that grade can run: one line naming it."""


class GradeReport(NamedTuple):
    path: str
    lesson: int | None
    rows: list[Row]
    others: list[str]      # failures of the notebook itself, one line each
    status: str = "ran"    # ran · timed out · error
    seconds: float = 0.0
    understanding: int = 0  # questions of "## Check your understanding": shown, never scored

    @property
    def points(self) -> int:
        return sum(r.points for r in self.rows)


UNDERSTANDING = "## Check your understanding"
QUESTION_RE = re.compile(r"^\*\*\d+\.\*\*", re.M)


def understanding_questions(nb) -> int:
    """How many questions the notebook's "## Check your understanding" cell asks (lines
    starting ``**N.**``); 0 without that cell. They are for the learner, with their answers
    in the notebook: grade lists them as ungraded and scores none of them."""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith(UNDERSTANDING):
            return len(QUESTION_RE.findall(cell.source))
    return 0


def _error_line(text: str) -> str:
    """The check's ``✘ …`` line of a failed cell's report, else its last exception line."""
    text = re.sub(r"(\x1b|#x1B)\[[0-9;]*m", "", text or "")  # ANSI colours, raw or XML-escaped
    for line in text.splitlines():
        if "✘ " in line:
            return line[line.index("✘ "):].strip()
    errors = [l.strip() for l in text.splitlines() if re.match(r"\s*\w*(Error|Exception|Interrupt)\b", l)]
    return errors[-1] if errors else (text.strip().splitlines() or ["failed"])[-1]


def read_notebook(path: str | Path):
    """The notebook at ``path``, or :class:`NotebookError` in one line naming the file."""
    import json

    import nbformat
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise NotebookError(f"{path}: not a notebook (not JSON: {str(err).splitlines()[0]})") from None
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, list) or not all(
            isinstance(c, dict) and c.get("cell_type") in ("code", "markdown", "raw")
            and isinstance(c.get("source", ""), (str, list)) for c in cells):
        raise NotebookError(f"{path}: not a notebook (it needs a list of cells, each with a cell_type "
                            "and a source)")
    for i, cell in enumerate(cells):       # a hand-written notebook may leave these out
        cell.setdefault("metadata", {})
        cell.setdefault("id", f"cell-{i}")
        if cell["cell_type"] == "code":
            cell.setdefault("outputs", [])
            cell.setdefault("execution_count", None)
    data.setdefault("nbformat", 4)
    data.setdefault("nbformat_minor", 5)
    data.setdefault("metadata", {})
    try:
        return nbformat.reads(json.dumps(data), as_version=4)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad notebook
        raise NotebookError(f"{path}: not a notebook ({type(err).__name__}: {err})") from None


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _nbval_cells(junit: Path) -> dict[int, tuple[str, str]]:
    cells = {}
    if not junit.exists():
        return cells
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        m = re.search(r"Cell (\d+)", case.get("name", ""))
        bad = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        outcome = "passed" if bad is None else "skipped" if bad.tag == "skipped" else "failed"
        if m:
            cells[int(m.group(1))] = (outcome, "" if bad is None else (bad.text or "") + (bad.get("message") or ""))
    return cells


def _expected_exercises(nb, path: Path) -> tuple[int | None, list[str], list[str]]:
    """The lesson, the exercises to grade (the registry's for the lesson named by the
    notebook's metadata, else its file name, else its exercise headers) and notes."""
    meta = nb.metadata.get(BUILD_KEY, {}) if isinstance(nb.metadata, dict) else {}
    lesson = meta.get("lesson") if isinstance(meta.get("lesson"), int) else lesson_number(path)
    if lesson is None:
        headers = [e for c in nb.cells if c.cell_type == "code" for e in exercise_ids(c.source)]
        lesson = int(headers[0].split(".")[0]) if headers else None
    expected = [ex.id for ex in checks.lesson_exercises(lesson)] if lesson is not None else []
    notes = []
    listed = meta.get("exercises")
    if isinstance(listed, list) and sorted(map(str, listed)) != sorted(expected):  # the notebook's order may differ
        notes.append(f"the notebook's metadata lists exercises {', '.join(map(str, listed)) or 'none'}; "
                     f"lesson {lesson} has {', '.join(expected) or 'none'}: graded on the latter")
    if lesson is None:
        notes.append("no lesson number in the metadata, the file name or the exercise headers: nothing to grade")
    return lesson, expected, notes


def grade_notebook(path: str | Path, timeout: float = 300, limit: float = 1800,
                   seed: int | None = None) -> GradeReport:
    """Grade a learner's notebook: run it under nbval (lax) so that its code runs in
    context, and, at the same time, re-test each exercise function out of it in a fresh
    process (:mod:`.retest`: the judge; the function runs in :mod:`.sandbox`, fresh seeded
    cases). Only the re-test
    scores; what the notebook's own check cells printed does not count.

    ``timeout``: seconds per cell; ``limit``: seconds for the whole notebook (a hanging
    notebook is stopped and reported). ``seed``: the fresh cases' seed (default: drawn now,
    with :mod:`secrets`). Raises ``FileNotFoundError`` or :class:`NotebookError`.
    """
    import json
    import secrets
    import time

    import nbformat
    if importlib.util.find_spec("nbval") is None:
        raise ValueError("endorm-mini grade needs nbval: pip install nbval")
    path = Path(path)
    start = time.perf_counter()
    nb = read_notebook(path)
    questions = understanding_questions(nb)
    cleaned = clean(nb)
    code = [c.source for c in cleaned.cells if c.cell_type == "code"]
    status = "ran"
    with tempfile.TemporaryDirectory() as tmp:
        # The notebook first: its kernel starts while this process imports the judge's side
        # (torch, the lesson's checks), which a short lesson would otherwise wait for.
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        nbformat.write(cleaned, run_dir / "notebook.ipynb")
        (run_dir / "pytest.ini").write_text("[pytest]\n")  # not the caller's settings
        cmd = [sys.executable, "-c", PYTEST, "notebook.ipynb", "--nbval-lax", "--nbval-current-env",
               f"--nbval-cell-timeout={timeout:g}", "-p", "no:cacheprovider", "-p", "no:benchmark", "-q",
               "--junitxml=junit.xml"]
        runner = subprocess.Popen(cmd, cwd=run_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=nbrun.kernel_env(), start_new_session=True)
        started = [runner]          # stopped with this process too (Ctrl-C, SIGTERM): each is in
        try:                        # a session of its own, out of reach of the terminal's signals
            from . import retest
            lesson, expected, notes = _expected_exercises(nb, path)
            check_at: dict[str, int] = {}      # an exercise's check: the first cell calling it (as
            for i, source in enumerate(code):  # cells.validate); lesson 00 calls it again in a demo
                for e in check_ids(source):
                    check_at.setdefault(e, i)
            exercise_at = {e: i for i, s in enumerate(code) for e in exercise_ids(s)}
            spec, result = Path(tmp) / "retest.json", Path(tmp) / "result.json"
            modules = sorted({checks.get(e).module for e in expected} -
                             ({checks.lesson_module(lesson)} if lesson is not None else set()))
            # The sandboxes' template starts with the judge, so that the two import torch at once.
            control, template = retest.start_template(retest.template_modules(modules, expected), start_new_session=True)
            started.append(template)
            spec.write_text(json.dumps({"cells": code, "exercises": expected, "modules": modules, "timeout": timeout,
                                        "seed": seed if seed is not None else secrets.randbits(31),
                                        "template_fd": control.fileno(),
                                        "at": {e: [i for i, s in enumerate(code) if e in exercise_ids(s)]
                                               for e in expected}}))
            env = {**nbrun.kernel_env(), "OMP_NUM_THREADS": "1"}
            errors = open(Path(tmp) / "retest.err", "w+", encoding="utf-8")   # a file: a pipe could fill and block
            worker = subprocess.Popen([sys.executable, "-m", "endorm_mini.course.retest", str(spec), str(result)],
                                      cwd=tmp, stdout=subprocess.DEVNULL, stderr=errors, env=env,
                                      start_new_session=True, pass_fds=[control.fileno()])
            started.append(worker)
            control.close()            # the judge's now: the template ends when the judge does
            late = []
            for what, proc in (("the notebook", runner), ("the re-test", worker)):
                try:
                    proc.wait(timeout=max(1.0, limit - (time.perf_counter() - start)))
                except subprocess.TimeoutExpired:
                    _kill(proc)
                    status = "timed out"
                    late.append(what)
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
                os.killpg(runner.pid, signal.SIGINT)   # pytest, interrupted, shuts its kernel down
                runner.wait(timeout=3)                 # and removes the kernel's connection file
            for proc in started:    # else the kernel follows its pytest (its parent) out by itself
                _kill(proc)
            raise
        _kill(template)            # and any sandbox a stopped judge left running (its process group)
        cells = _nbval_cells(run_dir / "junit.xml")
        try:
            results = json.loads(result.read_text()) if result.exists() else {}
        except ValueError:
            results = {}
        errors.seek(0)
        worker_error = errors.read()[-20000:].strip()
        errors.close()
    rows = []
    for eid in expected:
        name = checks.get(eid).name
        if eid in results:
            rows.append(Row(eid, name, results[eid]["result"], results[eid]["detail"],
                            results[eid].get("similarity")))
        elif eid not in exercise_at:
            rows.append(Row(eid, name, "missing", f"no '# EXERCISE {eid}' cell in this notebook"))
        else:
            why = f"the re-test did not finish within {limit:g} s" if status == "timed out" else \
                f"the re-test stopped: {_error_line(worker_error)}" if worker_error else "the re-test stopped"
            rows.append(Row(eid, name, "not run", why))
    others = list(notes)
    if status == "timed out":
        others.append(f"{' and '.join(late)} did not finish within {limit:g} s (stopped)")
    elif not cells:
        others.append("pytest --nbval-lax produced no results (the notebook could not run)")
    graded = set(check_at.values()) | set(exercise_at.values())
    unfinished = [exercise_at[r.exercise] for r in rows if r.result != "passed" and r.exercise in exercise_at]
    first_bad = min(unfinished, default=len(code))
    failed = [(i, report) for i, (outcome, report) in sorted(cells.items()) if outcome == "failed" and i not in graded]
    downstream = [i for i, _ in failed if i > first_bad]
    others += [f"code cell {i}: {_error_line(report)}" for i, report in failed if i <= first_bad]
    if downstream:
        others.append(f"{len(downstream)} later cell(s) failed downstream of unfinished or failing exercises "
                      f"(code cells {', '.join(map(str, downstream))})")
    return GradeReport(str(path), lesson, rows, others, status, time.perf_counter() - start, questions)


def print_report(report: GradeReport) -> None:
    print(report.path)
    print(f"  {'exercise':<9} {'name':<28} result")
    for row in report.rows:
        print(f"  {row.exercise:<9} {row.name:<28} {row.result}")
        if row.detail and row.result != "passed":
            for line in row.detail.splitlines():
                print(f"  {'':<9} {line.strip() if line.startswith('✘') else line}")
    for other in report.others:
        print(f"  also: {other}")
    if report.understanding:
        print(f"  understanding: {report.understanding} questions, ungraded — answers in the notebook")
    print(f"  score: {report.points}/{len(report.rows)} exercises passed")


def table(reports: list[GradeReport]) -> list[dict]:
    rows = []
    for rep in reports:
        for r in rep.rows:
            rows.append({"student_file": rep.path, "lesson": rep.lesson, "exercise": r.exercise,
                         "status": r.result, "points": r.points, "message": r.detail,
                         "similarity": "" if r.similarity is None else f"{r.similarity:.2f}"})
        if rep.status != "ran" or (not rep.rows and rep.others):
            rows.append({"student_file": rep.path, "lesson": rep.lesson, "exercise": "(notebook)",
                         "status": rep.status if rep.status != "ran" else "error", "points": 0,
                         "message": "; ".join(rep.others), "similarity": ""})
        if rep.understanding:
            rows.append({"student_file": rep.path, "lesson": rep.lesson, "exercise": "understanding",
                         "status": "ungraded", "points": 0,
                         "message": f"{rep.understanding} questions, answers in the notebook", "similarity": ""})
        rows.append({"student_file": rep.path, "lesson": rep.lesson, "exercise": "total",
                     "status": f"{rep.points}/{len(rep.rows)}", "points": rep.points, "message": "", "similarity": ""})
    return rows

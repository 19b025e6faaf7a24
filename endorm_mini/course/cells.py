"""Reading the course's notebooks: exercise and check cells, solution regions, the build's metadata.

In a master notebook (``solutions/NN_name.ipynb``) an exercise is a code cell headed
``# EXERCISE N.M`` whose answer sits between ``# BEGIN SOLUTION`` and ``# END SOLUTION``
lines; a later cell calls ``check("N.M", fn)``. :func:`validate` lists the rules a master
breaks; :func:`strip_solutions` turns a region into the learner's stub.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import nbformat

from . import project

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
EXERCISE_RE = re.compile(r"^#\s*EXERCISE\s+(\d+\.\d+)\b", re.M)         # the exercise cell header
CHECK_RE = re.compile(r"""\bcheck\(\s*["'](\d+\.\d+)["']""")             # a check cell's call
LESSON_RE = re.compile(r"(?:^|\D)(\d\d)_\w+\.ipynb$")                       # NN_name.ipynb
REMOVED_TAGS = {"solution-only", "instructor"}
KEPT_METADATA = ("kernelspec", "language_info")
BUILD_KEY = "endorm_mini"          # notebook metadata written by build-lessons
BACKUPS = ".backups"               # lessons/.backups/: what build-lessons --force replaced


def lesson_number(path: str | Path) -> int | None:
    """``NN`` of ``…/NN_name.ipynb`` (also of a Colab copy such as ``Copy of 04_x.ipynb``)."""
    m = LESSON_RE.search(Path(path).name)
    return int(m.group(1)) if m else None


def exercise_ids(source: str) -> list[str]:
    return EXERCISE_RE.findall(source)


def check_ids(source: str) -> list[str]:
    return CHECK_RE.findall(source)


def strip_solutions(source: str, exercise_id: str) -> str:
    """Replace each BEGIN/END SOLUTION region by a stub raising ``NotImplementedError``."""
    out, inside = [], False
    for line in source.split("\n"):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"exercise {exercise_id}: nested {BEGIN!r}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("exercise {exercise_id}")')
        elif marker == END:
            if not inside:
                raise ValueError(f"exercise {exercise_id}: {END!r} without {BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"exercise {exercise_id}: {BEGIN!r} without {END!r}")
    return "\n".join(out)


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy with outputs, execution counts and all metadata but kernelspec/language_info
    and cell tags removed (also drops Colab's and widgets' state)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb.metadata = {k: nb.metadata[k] for k in KEPT_METADATA if k in nb.metadata}
    nb.metadata.setdefault("kernelspec", {"display_name": "Python 3", "language": "python",
                                          "name": "python3"})
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        cell.metadata = {"tags": tags} if tags else {}
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def validate(nb: nbformat.NotebookNode, path: str | Path) -> list[str]:
    """The authoring rules a master breaks (empty when it follows them all)."""
    problems, name = [], Path(path).name
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or not project.INSTALL_RE.search(code[0].source) \
            or "setup_notebook(" not in code[0].source:
        problems.append(f"{name}: the first code cell must be the setup cell "
                        "(endorm_mini.grading.setup_cell(...)) installing "
                        f"{project.install_spec()!r} and calling setup_notebook()")
    lesson, exercise_at, check_at = lesson_number(path), {}, {}
    for i, cell in enumerate(code):
        ids, calls = exercise_ids(cell.source), check_ids(cell.source)
        has_region = BEGIN in cell.source
        if has_region and len(ids) != 1:
            problems.append(f"{name} code cell {i}: a cell with {BEGIN!r} needs exactly one "
                            f"'# EXERCISE N.M' header, found {ids or 'none'}")
        if ids and not has_region:
            problems.append(f"{name} code cell {i}: exercise {ids[0]} has no {BEGIN!r} region")
        if len(calls) > 1:
            problems.append(f"{name} code cell {i}: one check() per cell, found {calls}")
        for eid in ids:
            if lesson is not None and int(eid.split(".")[0]) != lesson:
                problems.append(f"{name}: exercise {eid} does not belong to lesson {lesson:02d}")
            if eid in exercise_at:
                problems.append(f"{name}: exercise {eid} appears twice")
            exercise_at[eid] = i
        for eid in calls:
            check_at.setdefault(eid, i)
    for eid, i in exercise_at.items():
        if eid not in check_at or check_at[eid] <= i:
            problems.append(f"{name}: exercise {eid} needs a check({eid!r}, ...) in a later cell")
    if lesson is not None and exercise_at:
        from . import checks
        registered = {ex.id for ex in checks.lesson_exercises(lesson)}
        if registered != set(exercise_at):
            problems.append(f"{name}: exercises in the notebook {sorted(exercise_at)} differ "
                            f"from those in endorm_mini/course/checks/lesson{lesson:02d}.py {sorted(registered)}")
    return problems


def content_hash(nb: nbformat.NotebookNode) -> str:
    """A hash of what working in a notebook changes: each cell's type, source and outputs."""
    cells = [[c.cell_type, c.source, c.get("outputs", [])] for c in nb.cells]
    text = json.dumps(cells, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

"""``endorm-mini build-lessons``: learner notebooks from the master notebooks.

``solutions/NN_name.ipynb`` are the masters: complete, run, committed with outputs. In
them an exercise is a code cell headed ``# EXERCISE N.M`` whose answer sits between
``# BEGIN SOLUTION`` and ``# END SOLUTION`` lines; a later cell calls
``check("N.M", fn)``. The learner's copy ``lessons/NN_name.ipynb`` has every such region
replaced by ``raise NotImplementedError("exercise N.M")`` at the region's indentation,
cells tagged ``solution-only`` or ``instructor`` removed, outputs and execution counts
cleared, and metadata stripped to the kernelspec and language info plus an
``endorm_mini`` entry: the lesson number, its exercise ids and a hash of the built content.

``lessons/`` is published, not worked in: ``endorm-mini start`` copies lessons into a
learner's own folder (``my-lessons/``) and never overwrites a file there, and
``build-lessons`` refuses to replace a lesson whose content no longer matches the hash it
was built with (someone worked in it) unless ``--force``, which saves a backup first.

Authoring helper: ``--execute`` re-runs masters in place to refresh their stored outputs
and the state of the widgets they display, progress bars stored as text (:mod:`.widget_state`).
"""
from __future__ import annotations

import time
from pathlib import Path

import nbformat

from . import nbrun, project, widget_state
from .cells import BACKUPS, BEGIN, BUILD_KEY, KEPT_METADATA, REMOVED_TAGS, clean, content_hash, exercise_ids, \
    lesson_number, strip_solutions, validate


def lesson_from_solution(nb: nbformat.NotebookNode, path: str | Path) -> nbformat.NotebookNode:
    """The learner's copy of master ``nb`` (raises ``ValueError`` listing broken rules)."""
    problems = validate(nb, path)
    if problems:
        raise ValueError("; ".join(problems))
    lesson = clean(nb)
    lesson.cells = [c for c in lesson.cells
                    if not REMOVED_TAGS & set(c.get("metadata", {}).get("tags", []))]
    exercises = []
    for cell in lesson.cells:
        cell.source = project.with_current_address(cell.source)
        if cell.cell_type == "code" and BEGIN in cell.source:
            exercises.append(exercise_ids(cell.source)[0])
            cell.source = strip_solutions(cell.source, exercises[-1])
    lesson.metadata[BUILD_KEY] = {"lesson": lesson_number(path), "exercises": exercises,
                                  "built": content_hash(lesson)}
    return lesson


def edited_since_built(path: Path) -> bool:
    """Whether the lesson at ``path`` differs from what build-lessons wrote there (a learner
    worked in it); a file without the build's hash, or not a notebook, counts as edited."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # not JSON, not a notebook: someone's file, not ours
        return True
    return nb.metadata.get(BUILD_KEY, {}).get("built") != content_hash(nb)


def _back_up(path: Path) -> Path:
    backup = path.parent / BACKUPS / f"{path.stem}.{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}"
    backup.parent.mkdir(exist_ok=True)
    backup.write_bytes(path.read_bytes())
    return backup


def _text(nb: nbformat.NotebookNode) -> str:
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def build_lessons(solutions: Path, lessons: Path, check: bool = False,
                  force: bool = False) -> list[str]:
    """Write (or with ``check``, only compare) every lesson; returns the files that differ.

    A lesson edited since it was built is never replaced or deleted silently: it is
    refused (``ValueError`` naming it) unless ``force``, which backs it up first.
    """
    masters = sorted(Path(solutions).glob("[0-9][0-9]_*.ipynb"))
    if not masters:
        raise FileNotFoundError(f"no NN_*.ipynb masters in {solutions}")
    differ, broken, edited = [], [], []

    def replace(target: Path, text: str | None) -> None:   # text None: delete the orphan
        if check:
            return
        if target.exists() and edited_since_built(target):
            if not force:
                edited.append(str(target))
                return
            print(f"build-lessons: saved the edited {target} to {_back_up(target)}")
        if text is None:
            target.unlink()
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    readme = Path(solutions).parent / "README.md"
    for path in [*masters, readme] if readme.exists() else masters:
        if _readdress(path, write=not check):
            differ.append(f"{path} (repository address changed)")
    for master in masters:  # a broken master does not stop the others from being built
        target = Path(lessons) / master.name
        try:
            text = _text(lesson_from_solution(nbformat.read(master, as_version=4), master))
        except ValueError as err:
            broken.append(str(err))
            continue
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            differ.append(str(target))
            replace(target, text)
    for orphan in sorted(set(Path(lessons).glob("[0-9][0-9]_*.ipynb"))
                         - {Path(lessons) / m.name for m in masters}):
        differ.append(f"{orphan} (no master in {solutions})")
        replace(orphan, None)
    if edited:
        broken.append(f"refused to overwrite {', '.join(edited)}: edited since it was built "
                      f"(someone's work?). Learners work on copies: `endorm-mini start`. "
                      f"To replace it anyway: build-lessons --force (saves a backup in "
                      f"{Path(lessons) / BACKUPS})")
    if broken:
        raise ValueError("; ".join(broken))
    return differ


def _readdress(path: Path, write: bool) -> bool:
    """Point ``path``'s install lines and Colab links at the current repository address
    (``[project.urls]`` in pyproject.toml); returns whether anything was stale."""
    if path.suffix != ".ipynb":
        text = path.read_text(encoding="utf-8")
        new = project.with_current_address(text)
        if write and new != text:
            path.write_text(new, encoding="utf-8")
        return new != text
    nb = nbformat.read(path, as_version=4)
    stale = False
    for cell in nb.cells:
        new = project.with_current_address(cell.source)
        if new != cell.source:
            cell.source = new
            stale = True
    if write and stale:
        path.write_text(_text(nb), encoding="utf-8")
    return stale


def execute(path: Path, timeout: float = 600) -> float:
    """Re-run master ``path`` (cwd = its folder, as nbval does) and store its outputs in
    place, with the state of the widgets they display, so JupyterLab shows those widgets
    before the notebook is run; returns the wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    nbrun.run(nb, Path(path).parent, timeout, store_widget_state=True)
    seconds = time.perf_counter() - start
    widget_state.settle(nb)    # bars as text lines, widgets with a static copy as the copy
    widgets = widget_state.displayed_state(nb)
    nb.metadata = {k: nb.metadata[k] for k in KEPT_METADATA if k in nb.metadata}
    if widgets:
        nb.metadata["widgets"] = widgets
    Path(path).write_text(_text(nb), encoding="utf-8")
    return seconds

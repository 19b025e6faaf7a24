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

Authoring helpers: ``--execute`` re-runs masters in place to refresh their stored
outputs and the state of the widgets they display (:mod:`endorm_mini.widget_state`), and
``python -m endorm_mini.notebooks SRC.py OUT.ipynb`` turns a percent-format script
(``# %%`` / ``# %% [markdown]`` cells) into a notebook (and back, given an .ipynb).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat

from . import project, widget_state

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
EXERCISE_RE = re.compile(r"^#\s*EXERCISE\s+(\d+\.\d+)\b", re.M)         # the exercise cell header
CHECK_RE = re.compile(r"""\bcheck\(\s*["'](\d+\.\d+)["']""")             # a check cell's call
LESSON_RE = re.compile(r"(?:^|\D)(\d\d)_\w+\.ipynb$")                       # NN_name.ipynb
REMOVED_TAGS = {"solution-only", "instructor"}
KEPT_METADATA = ("kernelspec", "language_info")
BUILD_KEY = "endorm_mini"          # notebook metadata written by build-lessons
BACKUPS = ".backups"               # lessons/.backups/: what --force replaced
WORKSPACE = "my-lessons"           # the learner's folder (`endorm-mini start`)


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
                            f"from those in endorm_mini/checks/lesson{lesson:02d}.py {sorted(registered)}")
    return problems


def content_hash(nb: nbformat.NotebookNode) -> str:
    """A hash of what working in a notebook changes: each cell's type, source and outputs."""
    cells = [[c.cell_type, c.source, c.get("outputs", [])] for c in nb.cells]
    text = json.dumps(cells, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


def find_lessons() -> Path:
    """The published lessons: ``./lessons`` when it has lessons, else the checkout's."""
    for folder in (Path.cwd() / "lessons", Path(__file__).resolve().parents[1] / "lessons"):
        if any(folder.glob("[0-9][0-9]_*.ipynb")):
            return folder
    raise FileNotFoundError("no lessons/NN_*.ipynb found here or beside the package: run "
                            "`endorm-mini start` from a clone of the course repository, or "
                            "pass --lessons PATH")


def start(which: list[str], workspace: Path, lessons: Path | None = None) -> list[tuple[Path, bool]]:
    """Copy lessons (``which``: numbers like ``"04"``/``"4"``, or ``"all"``) into the learner's
    ``workspace``; never overwrites a file there. Returns ``(path, copied)`` per lesson."""
    lessons = Path(lessons) if lessons else find_lessons()
    available = {lesson_number(p): p for p in sorted(lessons.glob("[0-9][0-9]_*.ipynb"))}
    if not which or "all" in which:
        chosen = list(available.values())
    else:
        chosen = []
        for item in which:
            if not item.isdigit() or int(item) not in available:
                raise ValueError(f"no lesson {item!r} in {lessons}; choose from "
                                 f"{', '.join(f'{n:02d}' for n in available)} or all")
            chosen.append(available[int(item)])
    workspace.mkdir(parents=True, exist_ok=True)
    done = []
    for source in chosen:
        target = workspace / source.name
        copied = not target.exists()
        if copied:
            target.write_bytes(source.read_bytes())
        done.append((target, copied))
    return done


def kernel_env(**extra: str) -> dict[str, str]:
    """The environment notebook kernels run in: this one, with fixed string hashing and
    without ``MPLBACKEND`` (a backend such as Agg set for tests would hide every figure)."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    return {**env, "PYTHONHASHSEED": "0", **extra}


def run(nb: nbformat.NotebookNode, cwd: str | Path, timeout: float = 600,
        env: dict[str, str] | None = None,
        store_widget_state: bool = False) -> nbformat.NotebookNode:
    """Execute ``nb`` in place, top to bottom, in a kernel of this Python environment
    (``env``: :func:`kernel_env` by default); stops at the first error
    (``nbclient.CellExecutionError``). ``store_widget_state``: record every widget's state
    in ``nb.metadata.widgets`` (see :mod:`endorm_mini.widget_state`)."""
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbval.kernel import CURRENT_ENV_KERNEL_NAME, NbvalKernelspecManager

    km = KernelManager(kernel_name=CURRENT_ENV_KERNEL_NAME,
                       kernel_spec_manager=NbvalKernelspecManager())
    client = NotebookClient(nb, km=km, timeout=timeout, record_timing=False,
                            store_widget_state=store_widget_state)
    client.execute(cwd=str(cwd), env=env or kernel_env())
    return nb


def execute(path: Path, timeout: float = 600) -> float:
    """Re-run master ``path`` (cwd = its folder, as nbval does) and store its outputs in
    place, with the state of the widgets they display, so JupyterLab shows those widgets
    before the notebook is run; returns the wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    run(nb, Path(path).parent, timeout, store_widget_state=True)
    seconds = time.perf_counter() - start
    widgets = widget_state.displayed_state(nb)
    nb.metadata = {k: nb.metadata[k] for k in KEPT_METADATA if k in nb.metadata}
    if widgets:
        nb.metadata["widgets"] = widgets
    Path(path).write_text(_text(nb), encoding="utf-8")
    return seconds


# ---------------------------------------------------------------- percent-format sources
_CELL_RE = re.compile(r"^# %%(?P<md> \[markdown\])?(?:\s+tags=(?P<tags>\[.*\]))?\s*$")


def from_percent(text: str) -> nbformat.NotebookNode:
    """A notebook from ``# %%`` code cells and ``# %% [markdown]`` cells (lines ``# ...``);
    ``# %% tags=["solution-only"]`` sets tags. Cell ids are content hashes (stable)."""
    cells, current = [], None
    for line in text.split("\n"):
        if m := _CELL_RE.match(line):
            current = {"md": bool(m["md"]), "tags": json.loads(m["tags"] or "[]"), "lines": []}
            cells.append(current)
        elif current is not None:
            current["lines"].append(re.sub(r"^# ?", "", line) if current["md"] else line)
    nb, seen = nbformat.v4.new_notebook(), set()
    for c in cells:
        source = "\n".join(c["lines"]).strip("\n")
        cell = (nbformat.v4.new_markdown_cell if c["md"] else nbformat.v4.new_code_cell)(source)
        cell.metadata = {"tags": c["tags"]} if c["tags"] else {}
        cell.id = hashlib.sha1(source.encode()).hexdigest()[:8]
        while cell.id in seen:
            cell.id = hashlib.sha1(cell.id.encode()).hexdigest()[:8]
        seen.add(cell.id)
        nb.cells.append(cell)
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    return nb


def to_percent(nb: nbformat.NotebookNode) -> str:
    """The inverse of :func:`from_percent` (outputs are dropped)."""
    parts = []
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        head = "# %%" + (" [markdown]" if cell.cell_type == "markdown" else "") + \
            (f" tags={json.dumps(tags)}" if tags else "")
        body = "\n".join(("# " + l).rstrip() for l in cell.source.split("\n")) \
            if cell.cell_type == "markdown" else cell.source
        parts.append(f"{head}\n{body}\n")
    return "\n".join(parts)


# ---------------------------------------------------------------- the command line
def _build_command(args) -> int:
    if args.execute is not None:
        masters = sorted(Path(args.solutions).glob("[0-9][0-9]_*.ipynb"))
        for master in masters:
            if not args.execute or any(pat in master.name for pat in args.execute):
                print(f"ran {master} in {execute(master, args.timeout):.1f} s", flush=True)
    differ = build_lessons(Path(args.solutions), Path(args.lessons), check=args.check,
                           force=args.force)
    if args.check:
        for entry in differ:
            path = Path(entry.split(" (")[0])
            edited = path.parent == Path(args.lessons) and path.exists() and edited_since_built(path)
            print(f"out of date: {entry}" + (" (edited since it was built: someone's work? "
                                              "learners work on copies, `endorm-mini start`)" * edited))
        if differ:
            print("run `endorm-mini build-lessons` to regenerate lessons/ from solutions/")
        return 1 if differ else 0
    print(f"build-lessons: {len(differ)} file(s) updated in {args.lessons}")
    return 0


def _start_command(args) -> int:
    done = start(args.lessons_wanted, Path(args.dir), args.lessons)
    for path, copied in done:
        print(f"  {'copied' if copied else 'kept  '} {path}" +
              ("" if copied else "  (already there: your work is never overwritten)"))
    first = done[0][0] if done else Path(args.dir)
    print(f"Open them with `jupyter lab {args.dir}` (or upload one to Colab); "
          f"grade one with `endorm-mini grade {first}`.")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("build-lessons", help="write lessons/ (exercise stubs) from solutions/")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 listing the lessons that are out of date")
    p.add_argument("--solutions", default="solutions", help="folder of the master notebooks")
    p.add_argument("--lessons", default="lessons", help="folder of the learner notebooks")
    p.add_argument("--execute", nargs="*", metavar="NAME",
                   help="first re-run the masters (all, or those whose file name contains a NAME) "
                        "in place to refresh their outputs")
    p.add_argument("--timeout", type=float, default=600, help="seconds per cell for --execute")
    p.add_argument("--force", action="store_true",
                   help="replace lessons edited since they were built (a backup is saved first)")
    p.set_defaults(func=_build_command)
    s = sub.add_parser("start", help="copy lessons into your own folder (my-lessons/) to work in")
    s.add_argument("lessons_wanted", nargs="*", metavar="NN",
                   help="lesson numbers (e.g. 04), or all (the default)")
    s.add_argument("--dir", default=WORKSPACE,
                   help=f"your folder (default {WORKSPACE}/); existing files are never overwritten")
    s.add_argument("--lessons", default=None,
                   help="where the published lessons are (default ./lessons or the checkout's)")
    s.set_defaults(func=_start_command)


if __name__ == "__main__":  # python -m endorm_mini.notebooks SRC OUT: percent <-> ipynb
    src, out = map(Path, sys.argv[1:3])
    if src.suffix == ".ipynb":
        out.write_text(to_percent(nbformat.read(src, as_version=4)), encoding="utf-8")
    else:
        out.write_text(_text(from_percent(src.read_text(encoding="utf-8"))), encoding="utf-8")
    print(f"wrote {out}")

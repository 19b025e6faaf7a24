"""``endorm-mini start``: the learner's own folder of lessons, never overwritten.

``lessons/`` is published, not worked in: :func:`start` copies lessons into a learner's
folder (``my-lessons/``) and never overwrites a file there. A lesson links to the notes on
the paper as ``../docs/paper.md``, which a copy cannot reach: outside the checkout there is
none, and inside it Jupyter serves ``my-lessons/`` only (``jupyter lab my-lessons/``, as the
README says), so a link above that folder does not open. A copy links to the hosted notes.
"""
from __future__ import annotations

from pathlib import Path

WORKSPACE = "my-lessons"           # the learner's folder (`endorm-mini start`)
NOTES_LINK = "](../docs/paper.md"  # how a lesson's markdown links to the notes


def with_reachable_notes(text: str) -> str:
    """``text`` (a lesson's file) with its links to ``../docs/paper.md`` pointing at the
    hosted notes (anchors kept)."""
    if NOTES_LINK not in text:
        return text
    from .paper import notes_url

    return text.replace(NOTES_LINK, f"]({notes_url()}")


def default_workspace(cwd: Path | None = None) -> Path:
    """Where ``start`` copies lessons without ``--dir``: the workspace you are in (a folder
    named ``my-lessons``, or inside one), else the checkout's ``my-lessons/`` when you are
    anywhere inside the checkout (``lessons/`` included: a copy there would sit in the
    published folder, which git does not ignore), else ``./my-lessons``."""
    cwd = Path(cwd or Path.cwd()).resolve()
    for folder in (cwd, *cwd.parents):
        if folder.name == WORKSPACE:
            return folder
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "lessons").is_dir() and (cwd == checkout or checkout in cwd.parents):
        return checkout / WORKSPACE
    return cwd / WORKSPACE


def find_lessons() -> Path:
    """The published lessons: ``./lessons`` when it has lessons, else the checkout's."""
    for folder in (Path.cwd() / "lessons", Path(__file__).resolve().parents[2] / "lessons"):
        if any(folder.glob("[0-9][0-9]_*.ipynb")):
            return folder
    raise FileNotFoundError("no lessons/NN_*.ipynb found here or beside the package: run "
                            "`endorm-mini start` from a clone of the course repository, or "
                            "pass --lessons PATH")


def start(which: list[str], workspace: Path, lessons: Path | None = None) -> list[tuple[Path, bool]]:
    """Copy lessons (``which``: numbers like ``"04"``/``"4"``, or ``"all"``) into the learner's
    ``workspace``; never overwrites a file there. Returns ``(path, copied)`` per lesson."""
    lessons = Path(lessons) if lessons else find_lessons()
    from .cells import lesson_number  # nbformat: not for `endorm-mini start --help`

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
            text = source.read_text(encoding="utf-8")
            target.write_text(with_reachable_notes(text), encoding="utf-8")
        done.append((target, copied))
    return done

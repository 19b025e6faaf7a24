"""Where the course's notes on the paper are: ``docs/paper.md``.

Lessons, check messages and docstrings cite them as ``docs/paper.md §N`` and by the
paper's equation numbers (``eq. N``). From a checkout the notes are a local file; an
installed package (Colab) points to the hosted copy in the project's repository, whose
address comes from ``[project.urls]`` in pyproject.toml.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .project import repository_url

NOTES = "docs/paper.md"
# A text that sends the reader to the notes: the file, a section, an equation or a theorem.
CITES_NOTES = re.compile(r"docs/paper\.md|\beqs?\.\s*\d|§\s*\d|\bTheorems?\s+\d", re.I)


def notes_url(branch: str = "main") -> str:
    """The hosted notes, for a learner without a checkout (Colab)."""
    return f"{repository_url()}/blob/{branch}/{NOTES}"


def notes_location() -> str:
    """Where to read the notes from here: the local file when the package runs from a
    checkout that has it (relative to the working directory when that is the repository
    or a folder just below it, e.g. ``../docs/paper.md`` from ``lessons/``), else the
    hosted address."""
    root = Path(__file__).resolve().parents[2]
    local = root / NOTES
    if not local.is_file():
        return notes_url()
    here = Path.cwd().resolve()
    if here == root or here.parent == root:
        return os.path.relpath(local, here)
    return str(local)

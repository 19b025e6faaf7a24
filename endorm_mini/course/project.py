"""Where the course is hosted: the ONE place the repository address comes from.

The address is ``Repository`` under ``[project.urls]`` in pyproject.toml. From a checkout
it is read from that file (an edit takes effect at once); from an installed package
(Colab) from the package's metadata. Whoever hosts the course sets it there and runs
``endorm-mini build-lessons``, which writes the install line of every notebook's first
cell and the README's "Open in Colab" links from it.
"""
from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
_URLS_RE = re.compile(r"^\[project\.urls\]\s*$(.*?)(?=^\[|\Z)", re.M | re.S)
_REPOSITORY_RE = re.compile(r'^\s*Repository\s*=\s*"([^"]+)"', re.M | re.I)


def repository_url() -> str:
    """The project's repository address (no trailing slash)."""
    if PYPROJECT.is_file():
        urls = _URLS_RE.search(PYPROJECT.read_text(encoding="utf-8"))
        if urls and (found := _REPOSITORY_RE.search(urls.group(1))):
            return found.group(1).rstrip("/")
    try:
        entries = importlib.metadata.metadata("endorm-mini").get_all("Project-URL") or []
    except importlib.metadata.PackageNotFoundError:
        entries = []
    for entry in entries:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "repository" and url.strip():
            return url.strip().rstrip("/")
    raise RuntimeError("no Repository under [project.urls] in pyproject.toml nor in the "
                       "installed endorm-mini's metadata: reinstall the kit")


def install_spec() -> str:
    """The requirement a notebook's first cell installs on Colab."""
    return f"endorm-mini[colab] @ git+{repository_url()}"


# What build-lessons rewrites: any install line or Colab link, whatever address it holds.
INSTALL_RE = re.compile(r"endorm-mini\[colab\] @ git\+https://[^\s\"']+")
COLAB_RE = re.compile(r"https://colab\.research\.google\.com/github/[^/\s]+/[^/\s]+/blob/[^/\s]+/")
NOTES_RE = re.compile(r"https://github\.com/[^/\s]+/[^/\s]+/blob/[^/\s]+/docs/paper\.md")


def colab_url(notebook_path: str, branch: str = "main") -> str:
    """The 'Open in Colab' address of a notebook in the project's repository."""
    owner_repo = repository_url().split("github.com/", 1)[-1]
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/{notebook_path}"


def with_current_address(text: str) -> str:
    """``text`` with every install line and Colab link pointing at the current address."""
    text = INSTALL_RE.sub(install_spec(), text)
    text = NOTES_RE.sub(f"{repository_url()}/blob/main/docs/paper.md", text)
    return COLAB_RE.sub(colab_url(""), text)

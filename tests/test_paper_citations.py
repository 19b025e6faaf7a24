"""Every citation of the course's notes on the paper resolves.

Lessons, check messages, CLI help, docstrings and the README cite ``docs/paper.md §N`` and
the paper's equations as ``eq. N`` (also ``eq. 9–12``, ``eq. 3 / eq. 13``). Each cited
section must be a ``## §N`` heading of docs/paper.md, each equation must be displayed
there as ``(eq. N)``, each theorem named there. The notes are cited by that path only (the
old upper-case name without ``docs/`` is gone), notebook markdown links to them, and the
hosted address comes from ``[project.urls]``.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from endorm_mini import grading
from endorm_mini.course import checks, judge, paper
from endorm_mini.course.checks import case, exercise

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "docs" / "paper.md"
NOTEBOOK_DIRS = ("lessons", "solutions")

SECTION_RE = re.compile(r"docs/paper\.md\s+§\s*(\d+(?:\.\d+)*)((?:\s*(?:,|and|&)\s*§\s*\d+(?:\.\d+)*)*)")
EQ_RE = re.compile(r"\beqs?\.\s*(\d+)((?:\s*(?:[–—-]|/)\s*(?:eqs?\.\s*)?\d+)*)", re.I)
EQ_NEXT_RE = re.compile(r"\s*([–—-]|/)\s*(?:eqs?\.\s*)?(\d+)", re.I)
THEOREM_RE = re.compile(r"\bTheorems?\s+(\d+)((?:\s*(?:[–—-]|,|and|&)\s*\d+)*)")


# ---------------------------------------------------------------- parsing
def citations(text: str) -> list[str]:
    """The sections, equations and theorems a text cites, one per item: ``§5``, ``eq. 9``,
    ``Theorem 1``. Ranges are expanded (``eq. 9–12`` → eq. 9 … eq. 12); a backwards range
    is returned as written, so it is reported."""
    found = []
    for m in SECTION_RE.finditer(text):
        found += [f"§{n}" for n in re.findall(r"§\s*(\d+(?:\.\d+)*)", m.group(0))]
    for m in EQ_RE.finditer(text):
        last = int(m.group(1))
        found.append(f"eq. {last}")
        for sep, n in EQ_NEXT_RE.findall(m.group(2)):
            n = int(n)
            if sep == "/":
                found.append(f"eq. {n}")
            elif n < last:
                found.append(f"eq. {last}–{n}")
            else:
                found += [f"eq. {k}" for k in range(last + 1, n + 1)]
            last = n
    for m in THEOREM_RE.finditer(text):
        found += [f"Theorem {n}" for n in re.findall(r"\d+", m.group(0))]
    return found


def targets(notes: str) -> set[str]:
    """What the notes define: ``## §N`` (or deeper ``§N.M``) headings, displayed ``(eq. N)``
    labels and ``Theorem N``."""
    return ({f"§{n}" for n in re.findall(r"^#{2,4} §(\d+(?:\.\d+)*)\b", notes, re.M)}
            | {f"eq. {n}" for n in re.findall(r"\(eq\. (\d+)\)", notes)}
            | {f"Theorem {n}" for n in re.findall(r"\bTheorem (\d+)\b", notes)})


def bad_citations(texts: dict[str, str], notes: str) -> list[tuple[str, str]]:
    """(where, citation) for every citation in ``texts`` (where → text) the notes lack."""
    have = targets(notes)
    return [(where, c) for where, text in texts.items() for c in dict.fromkeys(citations(text))
            if c not in have]


# ---------------------------------------------------------------- the repository's texts
def notebook_cells(path: Path):
    nb = nbformat.read(path, as_version=4)
    return [(f"{path.relative_to(ROOT)} cell {i}", cell) for i, cell in enumerate(nb.cells)]


def notebooks() -> list[Path]:
    return sorted(p for d in NOTEBOOK_DIRS for p in (ROOT / d).glob("*.ipynb"))


README_PAGES = ("README.md", "docs/real-model.md", "docs/scale.md", "docs/benchmarks.md")


def cited_texts() -> dict[str, str]:
    """README.md and the pages moved out of it, every module of the package and of benchmarks/,
    and the cell sources of every lesson and solution notebook."""
    texts = {name: (ROOT / name).read_text(encoding="utf-8") for name in README_PAGES}
    for folder in ("endorm_mini", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            texts[str(path.relative_to(ROOT))] = path.read_text(encoding="utf-8")
    for path in notebooks():
        texts.update((where, cell.source) for where, cell in notebook_cells(path))
    return texts


SKIPPED_DIRS = {"my-lessons", "runs", "build", "dist", "__pycache__", "node_modules", "zoo_models"}
TEXT_SUFFIXES = {".py", ".md", ".ipynb", ".toml", ".cfg", ".txt", ".rst", ".yml", ".yaml", ".json"}


def repository_files() -> list[Path]:
    """Every text file of the checkout, without hidden folders, build outputs and the
    learner's workspace."""
    return sorted(p for p in ROOT.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES
                  and not any(part.startswith(".") or part in SKIPPED_DIRS or part.endswith(".egg-info")
                              for part in p.relative_to(ROOT).parts))


# ---------------------------------------------------------------- the tests
def test_the_notes_have_sections_1_to_8_equations_1_to_13_and_both_theorems():
    notes = NOTES.read_text(encoding="utf-8")
    have = targets(notes)
    assert {f"§{n}" for n in range(1, 9)} <= have
    assert {f"eq. {n}" for n in range(1, 14)} <= have
    assert {"Theorem 1", "Theorem 2"} <= have
    assert "https://arxiv.org/abs/2506.23235" in notes


def test_every_cited_section_and_equation_exists_in_the_notes():
    texts = cited_texts()
    assert len(texts) > 100 and sum(len(citations(t)) for t in texts.values()) > 200, \
        "the scan found suspiciously few citations"
    bad = bad_citations(texts, NOTES.read_text(encoding="utf-8"))
    assert not bad, "cited but not in docs/paper.md:\n" + "\n".join(f"  {w}: {c}" for w, c in bad)


@pytest.mark.parametrize("text, expected", [
    ("(docs/paper.md §5, eq. 9–12)", ["§5", "eq. 9", "eq. 10", "eq. 11", "eq. 12"]),
    ("docs/paper.md §6, §8", ["§6", "§8"]),
    ("[docs/paper.md\n§7 Q3](../docs/paper.md)", ["§7"]),
    ("eq. 3 / eq. 13 (Bradley–Terry)", ["eq. 3", "eq. 13"]),
    ("Bradley–Terry, eq. 3 / 13", ["eq. 3", "eq. 13"]),
    ("Eq. 7's objective, eq. 8/12 and eq. 10-11", ["eq. 7", "eq. 8", "eq. 12", "eq. 10", "eq. 11"]),
    ("Theorems 1–2 and Theorem 2", ["Theorem 1", "Theorem 2", "Theorem 2"]),
    ("the §6 ceiling", []),                       # a bare § is not a citation of the file
])
def test_citations_are_parsed_with_ranges_and_lists(text, expected):
    assert citations(text) == expected


def test_a_citation_missing_from_the_notes_is_reported():
    """The check can fail: made-up citations are listed with the text they came from."""
    texts = {"fake.py": "see docs/paper.md §42 and eq. 99; eq. 11–14 (docs/paper.md §5)",
             "fake.ipynb cell 3": "Theorem 3, docs/paper.md §3.3, eq. 12–9, eq. 12",
             "fine.py": "docs/paper.md §6, §8; eq. 1–13; Theorems 1 and 2"}
    bad = bad_citations(texts, NOTES.read_text(encoding="utf-8"))
    assert bad == [("fake.py", "§42"), ("fake.py", "eq. 99"), ("fake.py", "eq. 14"),
                   ("fake.ipynb cell 3", "§3.3"), ("fake.ipynb cell 3", "eq. 12–9"),
                   ("fake.ipynb cell 3", "Theorem 3")]


# the old upper-case name, or a citation of a paper.md that is not docs/paper.md
OLD_NAME = re.compile(r"\bPAPER\.md\b|(?<![\w/])paper\.md\s+(?:§|eq\.)")


def test_the_notes_are_cited_only_as_docs_paper_md():
    files = repository_files()
    assert NOTES in files and ROOT / "solutions" / "00_start_here.ipynb" in files
    bad = [f"{p.relative_to(ROOT)}:{n}: {line.strip()[:100]}" for p in files
           for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
           if OLD_NAME.search(line)]
    assert not bad, "the notes are docs/paper.md:\n" + "\n".join(bad)
    assert OLD_NAME.search("re-read: eq. 11 (PAPER" + ".md §5)")       # the check itself can fail
    assert OLD_NAME.search("see paper" + ".md §5")
    assert not OLD_NAME.search("[docs/paper.md §5](../docs/paper.md)")


LINK_RE = re.compile(r"\[([^\]]*)\]\(([^)\s]*)\)")


def test_notebook_markdown_links_to_the_notes():
    """In markdown cells a citation is a link, ``[docs/paper.md §5](../docs/paper.md)``,
    whose target is the notes from where the notebook lies (or the hosted address)."""
    hosted = paper.notes_url()
    bad = []
    for path in notebooks():
        for where, cell in notebook_cells(path):
            if cell.cell_type != "markdown" or "docs/paper.md" not in cell.source:
                continue
            rest = cell.source.replace(hosted, "")
            for m in LINK_RE.finditer(rest):
                if "paper.md" in m.group(2) and \
                        (path.parent / m.group(2).split("#")[0]).resolve() != NOTES:
                    bad.append(f"{where}: link to {m.group(2)}")
            if "docs/paper.md" in LINK_RE.sub("", rest):
                bad.append(f"{where}: docs/paper.md not in a link")
    assert not bad, "\n".join(bad)


def test_the_hosted_notes_address_comes_from_project_urls():
    """Written by hand only where markdown cannot compute it (lesson 00's Colab note), and
    then exactly the address built from pyproject.toml's Repository URL."""
    tomllib = pytest.importorskip("tomllib")
    repo = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]["Repository"]
    assert paper.repository_url() == repo.rstrip("/")
    assert paper.notes_url() == f"{repo.rstrip('/')}/blob/main/docs/paper.md"
    written = {(str(p.relative_to(ROOT)), u) for p in repository_files()
               for u in re.findall(r"https?://[^\s)>\"'`]*docs/paper\.md", p.read_text(encoding="utf-8"))}
    assert written and all(u == paper.notes_url() for _, u in written), written


def test_notes_location_is_the_local_file_in_a_checkout_else_the_hosted_copy(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT / "lessons")
    assert paper.notes_location() == "../docs/paper.md"
    monkeypatch.chdir(tmp_path)
    assert Path(paper.notes_location()) == NOTES
    monkeypatch.setattr(paper, "__file__", str(tmp_path / "endorm_mini" / "paper.py"))
    assert paper.notes_location() == paper.notes_url()



@pytest.fixture
def cites_the_notes():
    ex = exercise("99.8", "double", reference=lambda x: 2 * x,
                  equation="docs/paper.md §5, eq. 12: y = 2x")(lambda rng: iter([case("one", 1.0)]))
    yield ex
    checks.REGISTRY.pop("99.8", None)


def test_a_failed_check_says_where_the_notes_are(cites_the_notes, monkeypatch):
    monkeypatch.chdir(ROOT / "lessons")
    with pytest.raises(grading.ExerciseError) as err:
        grading.check("99.8", lambda x: 3 * x)
    line = next(l for l in str(err.value).splitlines() if "re-read:" in l)
    assert line == "  re-read: docs/paper.md §5, eq. 12: y = 2x (notes: ../docs/paper.md)"
    assert (ROOT / "lessons" / "../docs/paper.md").resolve() == NOTES
    assert judge._notes_suffix("GAE: δ_t = r_t + γ V(s_{t+1}) − V(s_t)") == ""

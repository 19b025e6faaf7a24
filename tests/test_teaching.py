"""Every lesson teaches like the best courses (issue 19), and cites the paper's equations right.

Each master opens, right after its title, with "## Learning objectives" (3–5 bullets),
"**Prerequisites:**" and "**Time:**"; it closes with "## Check your understanding" (3–6
questions, each answered in a ``<details>`` block) and "## Further reading". Glossary links
point at headings of docs/glossary.md. The paper's equations are mapped once, in
``endorm_mini.course.paper.EQUATIONS``; known mis-citations (the soft value as eq. 11,
Proposition 1 as eq. 9) fail the scan of notebooks, package source and notes.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from endorm_mini.course import grade, paper

ROOT = Path(__file__).resolve().parents[1]
MASTERS = sorted((ROOT / "solutions").glob("*.ipynb"))
GLOSSARY = ROOT / "docs" / "glossary.md"
QUESTION = re.compile(r"^\*\*(\d+)\.\*\*", re.M)


def teaching_problems(nb) -> list[str]:
    """What a notebook lacks of its objectives, understanding questions and further reading."""
    cells = [(c.cell_type, c.source) for c in nb.cells]
    problems = []
    top = cells[1][1] if len(cells) > 1 and cells[1][0] == "markdown" else ""
    if not top.lstrip().startswith("## Learning objectives"):
        problems.append("no '## Learning objectives' cell right after the title")
    else:
        body = top.split("**Prerequisites:**")[0]
        bullets = len(re.findall(r"^- \S", body, re.M))
        if not 3 <= bullets <= 5:
            problems.append(f"{bullets} learning objectives (3–5 wanted)")
        if "**Prerequisites:**" not in top:
            problems.append("no '**Prerequisites:**'")
        if not re.search(r"\*\*Time:\*\* about \d+ minutes", top):
            problems.append("no '**Time:** about N minutes'")
    check = [s for t, s in cells if t == "markdown" and s.lstrip().startswith("## Check your understanding")]
    if not check:
        problems.append("no '## Check your understanding' cell")
    else:
        text = check[0]
        n = len(QUESTION.findall(text))
        if not 3 <= n <= 6:
            problems.append(f"{n} understanding questions (3–6 wanted)")
        parts = QUESTION.split(text)[1:]           # number, body, number, body, ...
        for number, body in zip(parts[::2], parts[1::2]):
            if not re.search(r"<details><summary>Answer</summary>[\s\S]*?\*\*\([a-d]\)\*\*[\s\S]*?</details>", body):
                problems.append(f"question {number} has no <details> answer naming its choice")
        if grade.understanding_questions(nb) != n:
            problems.append("grade counts another number of questions")
    reading = [i for i, (t, s) in enumerate(cells) if t == "markdown" and s.lstrip().startswith("## Further reading")]
    if not reading:
        problems.append("no '## Further reading' cell")
    elif not re.search(r"^- \*\*", cells[reading[0]][1], re.M):
        problems.append("'## Further reading' lists nothing")
    return problems


@pytest.mark.parametrize("path", MASTERS, ids=lambda p: p.stem)
def test_every_master_has_objectives_questions_and_reading(path):
    assert teaching_problems(nbformat.read(path, as_version=4)) == []


def test_thirteen_masters_are_checked():
    assert len(MASTERS) == 13


def _planted(objectives=4, questions=3, answered=True, reading=True, time=True):
    md = nbformat.v4.new_markdown_cell
    top = "## Learning objectives\n\n" + "".join(f"- Compute thing {i}.\n" for i in range(objectives))
    top += "\n**Prerequisites:** none.\n" + ("\n**Time:** about 5 minutes." if time else "")
    answer = "\n<details><summary>Answer</summary>\n\n**(a)** yes.\n\n</details>\n" if answered else "\n"
    qs = "## Check your understanding\n\n" + "".join(f"**{i + 1}.** Why?\n\n- (a) yes\n- (b) no\n{answer}\n"
                                                     for i in range(questions))
    cells = [md("# 99 · planted"), md(top), nbformat.v4.new_code_cell("x = 1"), md(qs)]
    if reading:
        cells.append(md("## Further reading\n\n- **Someone (2020)**, *A paper*: what it adds."))
    return nbformat.v4.new_notebook(cells=cells)


@pytest.mark.parametrize("kwargs, problem", [
    ({"objectives": 2}, "2 learning objectives"),
    ({"objectives": 6}, "6 learning objectives"),
    ({"time": False}, "no '**Time:** about N minutes'"),
    ({"questions": 2}, "2 understanding questions"),
    ({"questions": 7}, "7 understanding questions"),
    ({"answered": False}, "question 1 has no <details> answer"),
    ({"reading": False}, "no '## Further reading' cell"),
])
def test_the_structure_check_fails_on_a_planted_gap(kwargs, problem):
    assert teaching_problems(_planted()) == []
    assert any(p.startswith(problem) for p in teaching_problems(_planted(**kwargs))), teaching_problems(_planted(**kwargs))
    nb = _planted()
    del nb.cells[1]
    assert "no '## Learning objectives' cell right after the title" in teaching_problems(nb)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_glossary_links_point_at_its_headings():
    anchors = {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", GLOSSARY.read_text(encoding="utf-8"), re.M)}
    assert github_anchor("Soft value V") == "soft-value-v" and "soft-value-v" in anchors
    assert github_anchor("Bradley–Terry model") == "bradleyterry-model"
    links = [(p.name, a) for d in ("solutions", "lessons") for p in sorted((ROOT / d).glob("*.ipynb"))
             for a in re.findall(r"glossary\.md#([^)\s]+)", p.read_text(encoding="utf-8"))]
    assert len(links) >= 13
    bad = [(name, a) for name, a in links if a not in anchors]
    assert not bad, bad


# ---------------------------------------------------------------- the equation map
def test_the_map_matches_the_equations_displayed_in_the_notes():
    notes = (ROOT / "docs" / "paper.md").read_text(encoding="utf-8")
    assert sorted(paper.EQUATIONS) == list(range(1, 14))
    for n, (what, signature) in paper.EQUATIONS.items():
        shown = [line for line in notes.splitlines() if line.startswith("    ") and f"(eq. {n})" in line]
        assert shown and re.search(signature, shown[0]), f"eq. {n} ({what}) is not displayed as mapped"
    assert "soft value" in paper.UNNUMBERED and "Proposition 1" in paper.UNNUMBERED


def scanned_texts() -> dict[str, str]:
    texts = {}
    for d in ("solutions", "lessons"):
        for path in sorted((ROOT / d).glob("*.ipynb")):
            for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
                texts[f"{d}/{path.name} cell {i}"] = cell.source
    for path in sorted((ROOT / "endorm_mini").rglob("*.py")):
        if path.name != "paper.py":                     # the map's own patterns
            texts[str(path.relative_to(ROOT))] = path.read_text(encoding="utf-8")
    for name in ("README.md", "docs/paper.md", "docs/glossary.md", "docs/instructors.md",
                 "docs/real-model.md", "docs/scale.md", "docs/benchmarks.md"):
        texts[name] = (ROOT / name).read_text(encoding="utf-8")
    return texts


def test_no_equation_is_cited_for_the_wrong_formula():
    texts = scanned_texts()
    assert len(texts) > 300
    bad = [f"{where}: {what}: {cited!r}" for where, text in texts.items() for what, cited in paper.miscitations(text)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("text", [
    "## Warm-up: the soft value (eq. 11)",
    "$$V(s) = \\alpha \\log \\sum_a \\exp\\big(f(s,a)/\\alpha\\big) \\qquad \\text{(eq. 11)}$$",
    "$$V_{\\hat Q}(s) = \\alpha \\log \\sum_a \\exp\\big(\\hat Q(s, a)/\\alpha\\big) \\qquad \\text{(eq. 11)}$$",
    'equation="eq. 11 (docs/paper.md §5): V(s) = α log Σ_a exp(f(s,a)/α), over the last dimension"',
    'equation="eq. 11: V(s) = α logsumexp(f(s,·)/α)"',
    '"""V = α log Σ_a exp(f/α) over the last dimension (eq. 11): [..., A] -> [...]."""',
    "| `reward` | `EndogenousReward`, `soft_value` (eq. 11–12) |",
    "its soft value `V_ref(s_t)` (eq. 11), which the critic uses",
    "its soft value\n`V_ref(s_t)` (eq. 11), which the critic uses",            # across a line break
    "so its logits `f̂` **are** a soft-Q function, the maximiser of eq. 7 on its training data\n"
    "([docs/paper.md §5, eq. 9–10](../docs/paper.md)).",
    "Q̂ = f̂ (eq. 9), the maximiser of eq. 7 on the corpus",
])
def test_a_planted_miscitation_is_caught(text):
    assert paper.miscitations(text), text


@pytest.mark.parametrize("text", [
    "r̂(s_h, a_h) := Q̂(s_h, a_h) − α log Σ_a exp(Q̂(s_{h+1}, a)/α)   (eq. 11)",
    "the soft value `V(s) = α logsumexp(f/α)`, unnumbered in the paper; eq. 11 subtracts it",
    "`π*(·|s) = softmax(Q*(s, ·)/α)`, eq. 9 for the maximiser of eq. 7",
    "the paper's Proposition 1 reads Q̂ = f̂ as the maximiser of eq. 7's objective (eq. 9 is π*)",
    "r̂ = α log π̂ + V(s_h) − V(s_{h+1}) (eq. 12), with the soft value V",
])
def test_right_citations_pass(text):
    assert not paper.miscitations(text), paper.miscitations(text)


SHARED = "../" + "shared"                   # a folder above the checkout: never linked


def readme_problems(text: str, root: Path = ROOT) -> list[str]:
    """The README speaks to learners first: at most about 300 lines, its course map before any
    maintainer material, and every docs/ page it links to exists (the moved sections)."""
    problems = []
    lines = text.splitlines()
    if len(lines) > 300:
        problems.append(f"{len(lines)} lines, more than 300: move maintainer material to docs/")
    headings = [line for line in lines if line.startswith("## ")]
    if not headings or headings[0] != "## Course map":
        problems.append(f"the first section is {headings[:1]}, not '## Course map'")
    for target in re.findall(r"\]\((docs/[^)#\s]+)", text):
        if not (root / target).exists():
            problems.append(f"links to {target}, which does not exist")
    if SHARED in text:
        problems.append(f"points at {SHARED}, outside the repository")
    return problems


def test_the_readme_speaks_to_learners_first():
    assert not readme_problems((ROOT / "README.md").read_text(encoding="utf-8"))
    for page in ("real-model.md", "scale.md", "benchmarks.md"):
        assert f"](docs/{page})" in (ROOT / "README.md").read_text(encoding="utf-8"), page


@pytest.mark.parametrize("text, problem", [
    ("# x\n\n## Course map\n" + "line\n" * 400, "more than 300"),
    ("# x\n\n## The library\n\n## Course map\n", "not '## Course map'"),
    ("# x\n\n## Course map\nsee [scale](docs/no-such-page.md)\n", "does not exist"),
    (f"# x\n\n## Course map\nsee {SHARED}/notes\n", "outside the repository"),
])
def test_a_readme_for_maintainers_first_fails(text, problem):
    assert any(problem in p for p in readme_problems(text)), readme_problems(text)

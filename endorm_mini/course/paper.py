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


# ---------------------------------------------------------------- the paper's equations
#: The paper's numbered equations, as docs/paper.md displays them: what each is, and a
#: signature (a regex) of its displayed formula there. The soft value V has no number.
EQUATIONS: dict[int, tuple[str, str]] = {
    1: ("value of a policy, V^π = E[Σ_h r(s_h, a_h)]", r"V\^π = E_\{τ∼π\}"),
    2: ("next-token prediction = behaviour cloning, max_π Σ log π(a|s)", r"max_π\s+Σ_i Σ_h log π"),
    3: ("Bradley–Terry preference σ(R(x, y_w) − R(x, y_l))", r"P\(y_w ≻ y_l \| x\) = σ"),
    4: ("reward-model loss −E log σ(R_w − R_l)", r"min_R\s+− E"),
    5: ("RL with a KL penalty, E[R] − β KL(π ‖ π_SFT)", r"max_π\s+E_\{x, y∼π"),
    6: ("MaxEnt IRL, max_r min_π", r"max_r\s+min_π"),
    7: ("inverse soft-Q likelihood, Σ [Q(s,a) − α log Σ exp(Q/α)]", r"max_Q\s+Σ_i Σ_h \[ Q"),
    8: ("reward from Q, r = Q(s_h, a_h) − V_Q(s_{h+1})", r"r\(s_h, a_h\) = Q\(s_h, a_h\) − V_Q\(s_\{h\+1\}\)"),
    9: ("soft-optimal policy π* = softmax(Q*/α) of eq. 7's maximiser", r"π\*\(· \| s\) = softmax\( Q\*"),
    10: ("the LM's policy π̂ = softmax(f̂/α)", r"π̂\(a \| s\) = softmax\( f̂"),
    11: ("r̂ = Q̂(s_h, a_h) − α logsumexp(Q̂(s_{h+1}, ·)/α)", r"r̂\(s_h, a_h\) := Q̂\(s_h, a_h\) − α log Σ"),
    12: ("r̂ = α log π̂ + V(s_h) − V(s_{h+1})", r"r̂\(s_h, a_h\) = α log π̂\(a_h \| s_h\) \+ V_Q̂\(s_h\) − V_Q̂\(s_\{h\+1\}\)"),
    13: ("Bradley–Terry preference of a reward, in Theorem 1", r"P_r\(τ ≻ τ' \| τ, τ'\) = σ"),
}
#: Named, unnumbered: the soft value V(s) = α logsumexp(Q(s, ·)/α) (the text beside eq. 11),
#: and Proposition 1 (Q̂ = f̂ maximises eq. 7's objective on the LM's corpus; an idealisation).
UNNUMBERED = {"soft value": "V(s) = α logsumexp(Q(s, ·)/α)",
              "Proposition 1": "Q̂ = f̂ is the maximiser of eq. 7's objective on the training data"}

_V = (r"(?:soft[ _]value|V(?:_\{?\\?hat ?Q\}?|_Q̂|_ref)?\(s(?:_\w+)?\)\s*=\s*(?:α|\\alpha)\s*\\?log"
      r"|V\s*=\s*α\s*log)")
_LINE = r"(?:[^\n]|\n(?!\s*\n))"   # within one paragraph
_EQ11 = r"\beqs?\.\s*(?:\d+\s*[–—-]\s*)?11\b"
#: Known mis-citations, each (what is wrong, regex, words whose presence near the match
#: clears it): the soft value cited as eq. 11, and Proposition 1 cited as eq. 9.
MISCITATIONS: list[tuple[str, re.Pattern, tuple[str, ...]]] = [
    ("the soft value V is unnumbered in the paper (eq. 11 is r̂ = Q̂ − V(s_{h+1}))",
     re.compile(rf"{_V}{_LINE}{{0,60}}?{_EQ11}|{_EQ11}{_LINE}{{0,40}}?{_V}", re.I),
     ("unnumbered", "no number", "beside eq. 11", "subtract")),
    ("'Q̂ = f̂ maximises eq. 7' is Proposition 1 (eq. 9 is π* = softmax(Q*/α))",
     re.compile(r"maximi[sz]\w*\s+of\s+eq\.\s*7[\s\S]{0,120}?\beqs?\.\s*9\b"
                r"|\beqs?\.\s*9\b[\s\S]{0,60}?maximi[sz]\w*\s+of\s+eq\.\s*7", re.I),
     ("π*", "Q*", "policy", "Proposition")),
]


def miscitations(text: str) -> list[tuple[str, str]]:
    """(what is wrong, the text cited) for each known mis-citation of an equation in ``text``."""
    found = []
    for what, pattern, clears in MISCITATIONS:
        for m in pattern.finditer(text):
            near = text[max(0, m.start() - 40):m.end() + 20]
            if not any(word in near for word in clears):
                found.append((what, m.group(0)))
    return found

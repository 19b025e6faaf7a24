"""Every cell of a master that rests on an exercise says so with ``%%needs``, found by reading
the code, not by running it: so the GPU branches, which CPU runs never enter, are covered too.

A cell rests on exercise N.M when it reads the exercise's function, or a name that a cell
resting on N.M assigned (transitively: a skipped cell assigns nothing), or an exercise whose
solution calls another exercise's function (4.3's answer uses 4.1's ``soft_value``). The
running check, that an untouched lesson shows no error but its checks, is in
test_notebooks.py.
"""
from __future__ import annotations

import ast
import symtable
from pathlib import Path

import nbformat
import pytest

from endorm_mini.course import cells, needs

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
MUTATORS = {"append", "extend", "update", "add", "insert", "setdefault"}  # x.append(y) changes x


def _base_name(node) -> str | None:
    while isinstance(node, (ast.Subscript, ast.Attribute)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _stores(tree) -> tuple[set[str], dict[str, int]]:
    """The names a cell (re)binds or mutates at its top level, and the line of each first bind."""
    nested = {id(sub) for node in ast.walk(tree)
              if isinstance(node, (ast.FunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp,
                                   ast.SetComp, ast.DictComp, ast.GeneratorExp))
              for sub in ast.walk(node) if sub is not node}
    stores, first = set(), {}
    for node in ast.walk(tree):
        if id(node) in nested and isinstance(node, ast.Name):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            stores.add(node.id)
            first[node.id] = min(first.get(node.id, node.lineno), node.lineno)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            stores.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            stores |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Subscript, ast.Attribute)) and isinstance(node.ctx, ast.Store):
            stores.add(_base_name(node))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in MUTATORS:
            stores.add(_base_name(node.func.value))
    return stores - {None}, first


def _reads(source: str, tree, first_store: dict[str, int]) -> set[str]:
    """The global names a cell reads (in nested functions too), except those it binds before
    it first reads them."""
    first_load: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            first_load[node.id] = min(first_load.get(node.id, node.lineno), node.lineno)
    top = symtable.symtable(source, "cell", "exec")
    names = {s.get_name() for s in top.get_symbols() if s.is_referenced()}
    tables = list(top.get_children())
    while tables:
        table = tables.pop()
        tables += table.get_children()
        names |= {s.get_name() for s in table.get_symbols()
                  if s.is_referenced() and (s.is_global() or s.is_free())}
    return {n for n in names if not first_store.get(n, 10**9) < first_load.get(n, 0)}


def needs_report(nb) -> list[str]:
    """The code cells whose ``%%needs`` line lacks an exercise they rest on, or that should
    have none (exercise and check cells always run)."""
    rests_on: dict[str, set[str]] = {}      # name -> the exercises a cell that bound it needed
    problems = []
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        match = needs.NEEDS_RE.match(cell.source.split("\n", 1)[0])
        marked = set(match["ids"].split()) if match else set()
        lines = cell.source.split("\n")
        python = "\n".join(line for line in lines if not line.startswith(("%", "!")))  # magics
        tree = ast.parse(python)
        stores, first_store = _stores(tree)
        needed = set().union(*(rests_on.get(n, set()) for n in _reads(python, tree, first_store)))
        exercise, checked = cells.exercise_ids(cell.source), cells.check_ids(cell.source)
        if (exercise or checked) and match:
            problems.append(f"code cell {i}: an exercise or check cell must not be marked %%needs")
        if exercise:
            needed |= set(exercise)
        elif checked:
            continue
        elif not needed <= marked:
            problems.append(f"code cell {i} ({cell.source.splitlines()[0][:60]!r}) needs "
                            f"{sorted(needed - marked)} but is marked {sorted(marked)}")
        needed |= marked
        for name in stores:
            if needed:
                rests_on[name] = rests_on.get(name, set()) | needed
            else:                                   # rebound by a cell that always runs
                rests_on.pop(name, None)
    return problems


@pytest.mark.parametrize("master", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_every_cell_that_rests_on_an_exercise_is_marked(master):
    assert needs_report(nbformat.read(master, as_version=4)) == []


def test_a_missing_id_or_a_marked_check_is_caught():
    """The test above can fail: lesson 04 with one id dropped from a ``%%needs`` line, and a
    check cell marked, are both reported."""
    nb = nbformat.read(ROOT / "solutions" / "04_endogenous_reward.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    marked = next(c for c in code if c.source.startswith("%%needs 4.1 4.2\n"))
    marked.source = marked.source.replace("%%needs 4.1 4.2\n", "%%needs 4.1\n", 1)
    check_cell = next(c for c in code if cells.check_ids(c.source) == ["4.2"])
    check_cell.source = "%%needs 4.1\n" + check_cell.source
    problems = needs_report(nb)
    assert any("needs ['4.2'] but is marked ['4.1']" in p for p in problems), problems
    assert any("must not be marked" in p for p in problems), problems


def test_a_name_bound_by_a_marked_cell_carries_its_needs():
    """Transitive: a cell reading what a skipped cell would have bound needs that exercise."""
    cells = ["# EXERCISE 9.1 · arith_answer\ndef arith_answer(p):\n    pass",
             "%%needs 9.1\nanswers = [arith_answer(p) for p in PROMPTS]",
             "total = len(answers)", "answers = []\nprint(answers)"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in cells])
    assert needs_report(nb) == ["code cell 2 ('total = len(answers)') needs ['9.1'] but is "
                                "marked []"]

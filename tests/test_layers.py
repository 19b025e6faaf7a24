"""The package's imports go down the layers and never round (README, "The library").

Every import is read from the source (function bodies too, where lazy imports hide), so a
cycle cannot hide behind a function-level import. Layer order, bottom to top, is LAYERS.
"""
import ast
from pathlib import Path

import pytest

import endorm_mini

PACKAGE = Path(endorm_mini.__file__).resolve().parent
# Bottom to top. A module may import its own layer or lower ones; never a higher one.
LAYERS = [
    ["endorm_mini", "mdp", "chat", "device", "fetch", "alpha_range", "runfolder"],
    ["reward", "bc", "sampling", "models"],
    ["worlds"],
    ["verifiers"],
    ["irl", "theory", "limits", "walks", "zoo", "ppo", "ppo_config", "ppo_run", "explorer", "viz"],
    ["bench"],
    ["scale"],
    ["course"],
    ["commands", "cli", "grading", "tasks"],   # commands, and the short re-exports for notebooks
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("endorm_mini") and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def layer_of(name: str) -> int:
    parts = name.split(".")
    key = parts[1] if len(parts) > 1 else parts[0]
    if key not in LAYER:
        raise AssertionError(f"{name} has no layer: add it to LAYERS in tests/test_layers.py "
                             "and to the README's layer order")
    return LAYER[key]


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                  for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan's algorithm)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_no_import_goes_up_a_layer():
    assert upward(graph()) == []


def test_no_import_cycle_even_inside_functions():
    assert cycles(graph()) == []


def test_the_checks_fail_on_an_upward_import_and_on_a_cycle():
    edges = graph()
    edges["endorm_mini.reward"] = edges["endorm_mini.reward"] | {"endorm_mini.zoo"}
    assert upward(edges) == ["endorm_mini.reward (layer 1) imports endorm_mini.zoo (layer 4)"]
    edges["endorm_mini.zoo"] = edges["endorm_mini.zoo"] | {"endorm_mini.reward"}
    assert ["endorm_mini.reward", "endorm_mini.zoo"] in cycles(edges)


def test_a_function_level_import_is_seen(tmp_path):
    known = {"endorm_mini.reward", "endorm_mini.course", "endorm_mini.course.grade"}
    source = tmp_path / "reward.py"
    source.write_text("def f():\n    from .course import grade\n")
    assert imports_of("endorm_mini.reward", source, known) == {"endorm_mini.course.grade"}


@pytest.mark.parametrize("limit", [500])
def test_no_module_over_the_line_budget_outside_checks(limit):
    long = [f"{name}: {n} lines" for name, path in modules().items()
            if ".checks." not in name and (n := len(path.read_text(encoding="utf-8").splitlines())) > limit]
    assert long == []


def test_a_learners_copy_made_before_the_move_still_runs(capsys):
    """Older copies import the grading names and the old ``tasks`` module: both still work."""
    namespace: dict = {}
    exec("from endorm_mini.grading import ExerciseError, check, claim, setup_notebook\n"
         "from endorm_mini import tasks, zoo\n"
         "DEVICE, MODEL = setup_notebook()\n"
         "items = tasks.mini_rmbench(1)\n"
         "right = tasks.is_correct('12+7', '19')\n", namespace)
    assert namespace["MODEL"] == "tiny-domains" and len(namespace["items"]) == 4
    assert namespace["right"] is True
    assert "endorm-mini setup" in capsys.readouterr().out

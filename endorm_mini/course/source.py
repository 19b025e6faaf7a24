"""What the judge reads of a learner's notebook, without running any of it (:mod:`.retest`).

* :func:`normalised` / :func:`reference_shape`: a ``def``'s AST with names canonicalised,
  to refuse a pasted reference (docstring included) and to report how similar an exercise
  is to its reference (:func:`similarity`, a column of the grade CSV);
* :func:`banned_use`: what a ``def``, its decorators or a class body use to build, copy or
  read code;
* :func:`rebuild_plan`: the statements the sandbox re-runs: imports of allowed modules,
  constant assignments and the ``def``s and ``class``es the exercise's function needs
  (transitively); a needed name bound any other way is refused, named.
"""
from __future__ import annotations

import ast
import copy
import difflib
import inspect
import textwrap

BANNED_NAMES = {"exec": "exec", "eval": "eval", "compile": "compile", "__import__": "__import__",
                "setprofile": "sys.setprofile", "settrace": "sys.settrace",
                "FunctionType": "types.FunctionType", "CodeType": "types.CodeType",
                "__code__": "a function's __code__", "getsource": "inspect.getsource",
                "getsourcelines": "inspect.getsourcelines", "findsource": "inspect.findsource",
                "__file__": "a module's __file__", "getprofile": "sys.getprofile",
                "_getframe": "sys._getframe", "currentframe": "inspect.currentframe", "tb_frame": "a frame",
                "f_back": "a frame", "f_locals": "a frame", "f_globals": "a frame", "gi_frame": "a frame",
                "__globals__": "a function's __globals__", "__closure__": "a function's __closure__",
                "get_objects": "gc.get_objects", "get_referrers": "gc.get_referrers", "marshal": "marshal",
                "ctypes": "ctypes", "subprocess": "subprocess"}
# Modules whose imports the rebuild re-runs (and their submodules); the package's too, but
# never endorm_mini.course nor a private name.
ALLOWED_MODULES = {"torch", "numpy", "math", "cmath", "heapq", "itertools", "collections", "functools",
                   "operator", "dataclasses", "typing", "re", "random", "statistics", "string", "copy",
                   "enum", "abc", "numbers", "fractions", "bisect", "zlib", "__future__", "endorm_mini"}

def _is_definition(node: ast.stmt) -> bool:
    """Statements the worker re-runs: imports, defs, classes, and assignments of names to
    expressions without calls (``DTYPE = torch.float64``)."""
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return node.value is not None and all(isinstance(t, ast.Name) for t in targets) \
            and not any(isinstance(n, (ast.Call, ast.Lambda)) for n in ast.walk(node.value))
    return False


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(notebooks_source(source))
    except SyntaxError:
        return None


def notebooks_source(source: str) -> str:
    """A cell's source without IPython magics and shell lines (``%time``, ``!pip``)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


class _Normalise(ast.NodeTransformer):
    """Rename every identifier by order of first appearance; drop annotations and decorators."""

    def __init__(self):
        self.names: dict[str, str] = {}

    def _name(self, name: str) -> str:
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node):
        return ast.copy_location(ast.Name(self._name(node.id), node.ctx), node)

    def visit_arg(self, node):
        return ast.copy_location(ast.arg(self._name(node.arg), None), node)

    def visit_FunctionDef(self, node):
        node.name = "f"
        node.returns = None
        node.decorator_list = []
        # The docstring is kept, whitespace-normalised: the masters' solutions may be the
        # reference's code itself, and short functions coincide; a pasted copy carries its docstring.
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            body[0] = ast.Expr(ast.Constant(" ".join(body[0].value.value.split())))
        self.generic_visit(node)
        return node

    def visit_AnnAssign(self, node):
        if node.value is None:
            return None
        return ast.copy_location(ast.Assign([self.visit(node.target)], self.visit(node.value)), node)


def normalised(fn_def: ast.FunctionDef) -> str:
    return ast.dump(_Normalise().visit(copy.deepcopy(fn_def)), annotate_fields=False, include_attributes=False)


def reference_shape(ex) -> str | None:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(ex.reference))))
    except (OSError, TypeError, SyntaxError):
        return None
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    return normalised(defs[0]) if defs else None


BUILTINS_ONLY = {"exec", "eval", "compile", "__import__"}   # re.compile, df.eval are fine


def banned_use(fn_def: ast.FunctionDef) -> str | None:
    """What the ``def`` uses to build, copy or read code, or to switch off the profiler."""
    for node in ast.walk(fn_def):
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if name in BANNED_NAMES and not (isinstance(node, ast.Attribute) and name in BUILTINS_ONLY
                                         and not (isinstance(node.value, ast.Name) and node.value.id == "builtins")):
            return BANNED_NAMES[name]
    return None




def _without_docstring(fn_def: ast.FunctionDef) -> ast.FunctionDef:
    fn_def = copy.deepcopy(fn_def)
    if ast.get_docstring(fn_def) is not None:
        fn_def.body = fn_def.body[1:] or [ast.Pass()]
    return fn_def


def similarity(fn_def: ast.FunctionDef, ex) -> float | None:
    """How alike the learner's ``def`` and the reference are, 0 to 1: the ratio of matching
    tokens of their normalised ASTs (names canonicalised, docstrings, annotations and
    decorators dropped). Reported, not judged: short functions coincide."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(ex.reference))))
    except (OSError, TypeError, SyntaxError):
        return None
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if not defs:
        return None
    a, b = (normalised(_without_docstring(d)).replace("(", " ( ").replace(")", " ) ").replace(",", " ").split()
            for d in (fn_def, defs[0]))
    return round(difflib.SequenceMatcher(None, a, b, autojunk=False).ratio(), 3)


def _binds(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}


def _uses(node: ast.stmt) -> set[str]:
    """The names a statement reads from the module: a ``def``'s or ``class``'s free names
    (roughly: everything it loads minus what it binds), its decorators, defaults and bases."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return set()
    loads = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return loads
    local = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    local |= {a.arg for n in ast.walk(node) if isinstance(n, ast.arg) for a in [n]}
    glob = {name for n in ast.walk(node) if isinstance(n, (ast.Global, ast.Nonlocal)) for name in n.names}
    outer = [*node.decorator_list, *getattr(node, "bases", []), *getattr(node, "keywords", [])]
    if not isinstance(node, ast.ClassDef):
        outer += [*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None]]
    at_def = {n.id for e in outer for n in ast.walk(e) if isinstance(n, ast.Name)}
    return (loads - (local - glob)) | at_def


def _import_refusal(node: ast.stmt) -> str | None:
    if isinstance(node, ast.Import):
        modules = [a.name for a in node.names]
    elif node.level:
        return "a relative import"
    else:
        modules = [node.module or ""]
        if (node.module or "").split(".")[0] == "endorm_mini":
            private = [a.name for a in node.names if a.name.startswith("_") or a.name == "*"]
            if private:
                return f"`from {node.module} import {private[0]}` (a private helper)"
    for module in modules:
        root = module.split(".")[0]
        if root not in ALLOWED_MODULES or module.startswith("endorm_mini.course") \
                or (root == "endorm_mini" and any(p.startswith("_") for p in module.split(".")[1:])):
            return f"`import {module}` (graded functions may import {', '.join(sorted(ALLOWED_MODULES - {'__future__'}))}" \
                   " and the package's public modules)"
    if isinstance(node, ast.ImportFrom) and node.module == "endorm_mini" \
            and any(a.name in ("course", "grading") for a in node.names):
        return "`from endorm_mini import course` (the grader's own modules)"
    return None


def imported_modules(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return []


def rebuild_plan(cells: list[str], index: int, fn_def: ast.FunctionDef, others: set[str]):
    """``(statements, preload, stand_in_names, refusal)``: the ``(source, file name)`` pairs
    the sandbox re-runs before the exercise's ``def`` (which comes last), the modules they
    import, the lesson's other exercises the function calls (their references stand in),
    and why the rebuild is refused (``None`` when it is not)."""
    statements = []              # (cell number, node); `import a, b` as two imports
    for i, source in enumerate(cells[:index + 1]):
        module = _parse(source)
        for node in module.body if module is not None else []:
            if node is fn_def or (i == index and node.lineno >= fn_def.lineno):
                continue
            if isinstance(node, ast.Import):
                statements += [(i, ast.copy_location(ast.Import([alias]), node)) for alias in node.names]
            else:
                statements.append((i, node))
    needed = _uses(fn_def) | {fn_def.name}
    stand = set()
    chosen: list = []
    while True:
        grew = False
        for i, node in statements:
            hit = (_binds(node) & needed) - stand - {fn_def.name}
            if not hit or any(node is n for _, n in chosen):
                continue
            if hit <= others:
                stand |= hit
                continue
            chosen.append((i, node))
            new = _uses(node) - needed
            needed |= new
            grew = grew or bool(new)
        if not grew:
            break
    chosen.sort(key=lambda item: (item[0], item[1].lineno))
    plan, preload = [], []
    for i, node in chosen:
        where = f"cell {i}, line {node.lineno}"
        names = ", ".join(sorted(_binds(node) & needed))
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if (why := _import_refusal(node)) is not None:
                return [], [], set(), f"the exercise needs {names}, imported by {why} ({where}), which is not allowed"
            preload += imported_modules(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if (what := banned_use(node)) is not None:
                return [], [], set(), f"`{node.name}` ({where}), which the exercise uses, uses {what}"
        elif not _is_definition(node):
            return [], [], set(), (f"the exercise needs {names}, set at {where} by `{ast.unparse(node).splitlines()[0][:60]}`"
                                   ": only constants, imports, defs and classes are re-run")
        plan.append((ast.unparse(node), f"<{where}>"))
    return plan, preload, stand & others, None

"""``endorm-mini grade``'s re-test: each exercise function, taken out of the notebook and
tested in a fresh process against the package's reference.

What the notebook printed does not count. For each exercise the worker

1. finds the exercise cell (``# EXERCISE N.M``) and the last top-level ``def NAME`` in it
   (``NAME`` = ``checks.get(id).name``); no such ``def`` means "failed";
2. refuses a ``def`` whose normalised AST, docstring included, is the reference's (a pasted
   copy; identifiers renamed, annotations dropped), or whose body
   builds or copies code (``exec``, ``eval``, ``compile``, ``__code__``, ``getsource``,
   ``FunctionType``, ``setprofile``, ...);
3. computes the reference's answers on the fixed cases (the exercise's seed) and on fresh
   cases drawn with a seed chosen at grading time (never stored in the notebook);
4. trip-wires the reference, the package's private helpers it calls and the Python
   functions of ``forbid``: each is replaced in its module *and* its ``__code__`` is swapped
   for one that records the call and raises, so aliases, partials, threads, copies of the
   code object and ``sys.setprofile(None)`` are all caught; ``inspect.getsource`` of them
   or of their modules trips too;
5. rebuilds the function from the notebook's import statements, definitions and constant
   assignments (cells before the exercise and the exercise cell itself, never top-level
   calls) and runs it on every case, with the forbidden C functions watched by a profiler
   that must still be installed after each call;
6. restores everything and compares, with the check's messages (case, got vs expected,
   likely mistake, hint, equation).

Run as ``python -m endorm_mini.course.retest SPEC.json RESULT.json``. The judging is
:mod:`.judge`'s, the same as ``check()``'s in the notebook.
"""
from __future__ import annotations

import ast
import copy
import importlib
import inspect
import json
import secrets
import signal
import sys
import textwrap
import threading
import types
from typing import Any, Callable

import torch

from . import checks, judge
from .cells import exercise_ids
from .judge import TooSlow

TRIPPED: list[tuple[str, str]] = []   # (what was called, in which thread)
_WIRED: dict[str, Callable] = {}       # qualified name -> a function with the original code
_HELPER_NAMES: set[str] = set()        # wired helpers: package code may still call them

BANNED_NAMES = {"exec": "exec", "eval": "eval", "compile": "compile", "__import__": "__import__",
                "setprofile": "sys.setprofile", "settrace": "sys.settrace",
                "FunctionType": "types.FunctionType", "CodeType": "types.CodeType",
                "__code__": "a function's __code__", "getsource": "inspect.getsource",
                "getsourcelines": "inspect.getsourcelines", "findsource": "inspect.findsource",
                "__file__": "a module's __file__", "getprofile": "sys.getprofile"}


class TripWire(RuntimeError):
    """A trip-wired function was called while the learner's function ran."""


def trip(name: str, args: tuple = (), kwargs: dict | None = None):
    """Called by every trip-wire: package code calling its own helper goes through;
    anything else is recorded and refused."""
    caller = sys._getframe(2)
    if name in _HELPER_NAMES and caller.f_code.co_filename.startswith(_PACKAGE_DIR) \
            and caller.f_globals.get("__name__", "").startswith("endorm_mini."):
        return _WIRED[name](*args, **(kwargs or {}))
    TRIPPED.append((name, threading.current_thread().name))
    raise TripWire(f"{name} is trip-wired while your function is graded")


def _tripwire(name: str) -> Callable:
    src = (f"def tripwire(*args, **kwargs):\n"
           f"    import endorm_mini.course.retest as _retest\n"
           f"    return _retest.trip({name!r}, args, kwargs)\n")
    ns: dict = {}
    exec(compile(src, f"<trip-wire {name}>", "exec"), ns)
    return ns["tripwire"]


_PACKAGE_DIR = str(__import__("pathlib").Path(__file__).resolve().parents[1])
_COURSE_DIR = str(__import__("pathlib").Path(__file__).resolve().parent)


def _qualname(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _helpers_of(ex: checks.Exercise, cases: list) -> list:
    """The package's private Python functions that could do the work: those of the
    reference's module and those the reference calls (found by running it once). Package
    code still calls them through their trip-wires; only the learner's calls trip."""
    codes: set = set()

    def profile(frame, event, arg):
        code = frame.f_code
        if event == "call" and code.co_name.startswith("_") and not code.co_name.startswith("__") \
                and code.co_filename.startswith(_PACKAGE_DIR) \
                and not code.co_filename.startswith(_COURSE_DIR):
            codes.add(code)
    sys.setprofile(profile)
    try:
        judge.call(ex.reference, cases[0], ex.seed)
    except Exception:
        pass
    finally:
        sys.setprofile(None)
    found = []
    home = sys.modules.get(inspect.unwrap(ex.reference).__module__)
    for value in list(vars(home).values()) if home is not None else []:   # its module's private functions
        if inspect.isfunction(value) and value.__name__.startswith("_") and not value.__name__.startswith("__") \
                and value.__module__ == home.__name__ and value.__code__.co_filename.startswith(_PACKAGE_DIR):
            found.append(value)
    for name, module in list(sys.modules.items()):
        if not name.startswith("endorm_mini") or module is None:
            continue
        for value in list(vars(module).values()):
            members = [value] + (list(vars(value).values()) if inspect.isclass(value) else [])
            for f in members:
                f = getattr(f, "__func__", f)
                if inspect.isfunction(f) and f.__code__ in codes and f not in found:
                    found.append(f)
    return found


class Wires:
    """Install and remove the trip-wires of one exercise."""

    def __init__(self, ex: checks.Exercise, helpers: list):
        self.targets = [inspect.unwrap(ex.reference)] + [f for f in ex.forbid if inspect.isfunction(f)]
        self.helpers = helpers
        self.undo: list[Callable] = []

    def __enter__(self):
        TRIPPED.clear()
        modules = []
        for fn in self.targets + self.helpers:
            name = _qualname(fn)
            wire = _tripwire(name)
            _WIRED[name] = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                                              fn.__closure__)
            _WIRED[name].__kwdefaults__ = fn.__kwdefaults__
            if fn in self.helpers:
                _HELPER_NAMES.add(name)
            if not fn.__code__.co_freevars:
                original = fn.__code__
                fn.__code__ = wire.__code__
                self.undo.append(lambda fn=fn, original=original: setattr(fn, "__code__", original))
            module = sys.modules.get(fn.__module__)
            modules.append(module)
            owner = module
            for part in fn.__qualname__.split(".")[:-1]:
                owner = getattr(owner, part, None)
            if owner is not None and getattr(owner, fn.__name__, None) is fn:
                setattr(owner, fn.__name__, wire)
                self.undo.append(lambda owner=owner, fn=fn: setattr(owner, fn.__name__, fn))
        wired_codes = {fn.__code__ for fn in self.targets + self.helpers}
        wired = {id(fn) for fn in self.targets + self.helpers} | {id(m) for m in modules}

        for attr in ("getsource", "getsourcelines", "findsource", "getsourcefile", "getfile"):
            original = getattr(inspect, attr)

            def guarded(obj, *a, _original=original, _attr=attr, **k):
                target = inspect.unwrap(obj) if callable(obj) else obj
                if id(obj) in wired or id(target) in wired or getattr(target, "__code__", None) in wired_codes:
                    TRIPPED.append((f"inspect.{_attr} of the reference or its module",
                                    threading.current_thread().name))
                    raise TripWire(f"inspect.{_attr} of the reference is trip-wired")
                return _original(obj, *a, **k)
            setattr(inspect, attr, guarded)
            self.undo.append(lambda attr=attr, original=original: setattr(inspect, attr, original))
        return self

    def __exit__(self, *exc):
        for undo in reversed(self.undo):
            undo()
        _HELPER_NAMES.clear()
        return False


# ---------------------------------------------------------------- the learner's source
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


def reference_shape(ex: checks.Exercise) -> str | None:
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


# ---------------------------------------------------------------- one exercise
def _row(result: str, detail: str = "") -> dict:
    return {"result": result, "detail": detail}


def retest(ex: checks.Exercise, cells: list[str], seed: int) -> dict:
    compare, compare_code = judge.compare, judge.compare.__code__
    tag = f"{ex.id} {ex.name}"
    at = [i for i, s in enumerate(cells) if ex.id in exercise_ids(s)]
    if not at:
        return _row("missing", f"no '# EXERCISE {ex.id}' cell in this notebook")
    index = at[-1]
    tree = _parse(cells[index])
    if tree is None:
        return _row("failed", f"✘ {tag}: the exercise cell has a syntax error")
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == ex.name]
    if not defs:
        return _row("failed", f"✘ {tag}: the exercise cell has no `def {ex.name}(...)` (the grader tests "
                              "the function the exercise cell defines)")
    fn_def = defs[-1]
    if (shape := reference_shape(ex)) is not None and ast.get_docstring(fn_def) and normalised(fn_def) == shape:
        return _row("failed", f"✘ {tag}: this is a copy of the reference's source "
                              f"({_qualname(inspect.unwrap(ex.reference))}): write it yourself")
    if (what := banned_use(fn_def)) is not None:
        return _row("failed", f"✘ {tag}: your function uses {what}; exercise functions may not build, "
                              "copy or read code, nor switch off the grader's profiler")
    fixed = list(ex.cases(torch.Generator().manual_seed(ex.seed)))
    fresh = [checks.Case(f"{c.label}, fresh seed", c.args, c.kwargs)
             for c in ex.cases(torch.Generator().manual_seed(seed))]
    runs = [(c, ex.seed) for c in fixed] + [(c, seed) for c in fresh]
    wants = [judge.call(ex.reference, c, s)[0] for c, s in runs]
    helpers = _helpers_of(ex, fixed)
    codes, c_names = judge.forbidden(ex)
    stand_ins = {other.name: judge.stand_in(other.reference)
                 for other in checks.lesson_exercises(int(ex.id.split(".")[0])) if other.id != ex.id}
    outcomes = []                        # (got, inputs after the call) or an exception
    seen: list[str] = []
    with Wires(ex, helpers):
        ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        try:
            for source in cells[:index + 1]:
                module = _parse(source)
                if module is None:
                    continue
                for node in module.body:
                    if _is_definition(node):
                        try:
                            exec(compile(ast.Module([node], []), f"<cell {cells.index(source)}>", "exec"), ns)
                        except Exception:
                            pass     # an import that fails here fails the function below, by name
            # Exercises are graded independently: an earlier exercise's function, which this
            # one may call, is the package's reference, finished or not in the notebook.
            ns.update({name: f for name, f in stand_ins.items() if name in ns})
            exec(compile(ast.Module([fn_def], []), f"<exercise {ex.id}>", "exec"), ns)
        except Exception as err:
            return _row("failed", f"✘ {tag}: defining it raised {type(err).__name__}: {err}")
        fn = ns.get(ex.name)
        switched_off: list[bool] = []
        for case, s in runs:
            outcomes.append(judge.run_case(fn, case, s, codes, c_names, seen, switched_off))
            if judge.failed(outcomes[-1]) or TRIPPED:
                break
        profiler_off = any(switched_off)
    tripped, TRIPPED[:] = list(TRIPPED), []
    patched = judge.compare is not compare or compare.__code__ is not compare_code
    judge.compare = compare
    compare.__code__ = compare_code
    if tripped:
        what, thread = tripped[0]
        where = "" if thread == "MainThread" else f" (from thread {thread!r})"
        return _row("failed", f"✘ {tag}: your function called {what}{where}, which is trip-wired while it is "
                              "graded: it does the work of this exercise, write it yourself")
    if patched:
        return _row("failed", f"✘ {tag}: your code patched the grader's compare")
    if profiler_off:
        return _row("failed", f"✘ {tag}: your function switched off the grader's profiler (sys.setprofile)")
    verdict = judge.verdict(ex, [c for c, _ in runs], wants, outcomes, seen)
    return _row(verdict.result, verdict.detail)


def main(argv: list[str]) -> int:
    spec = json.loads(open(argv[0], encoding="utf-8").read())
    seed = spec.get("seed") or secrets.randbits(31)
    results = {}
    for module in spec.get("modules", []):   # checks registered outside endorm_mini.course.checks (tests)
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    for eid in spec["exercises"]:
        try:
            ex = checks.get(eid)
        except ValueError as err:
            results[eid] = _row("failed", str(err))
            continue
        limit = int(max(1, spec.get("timeout") or 0))

        def too_slow(signum, frame, limit=limit):
            raise TooSlow(limit)
        if spec.get("timeout") and hasattr(signal, "SIGALRM"):
            signal.signal(signal.SIGALRM, too_slow)
            signal.alarm(limit)
        try:
            results[eid] = retest(ex, spec["cells"], seed)
        except TooSlow:
            results[eid] = _row("failed", f"✘ {eid}: the re-test did not finish within {limit} s")
        except BaseException as err:  # noqa: BLE001 - one exercise never stops the others
            results[eid] = _row("failed", f"✘ {eid}: the re-test stopped: {type(err).__name__}: {err}")
        finally:
            if hasattr(signal, "SIGALRM"):
                signal.alarm(0)
        with open(argv[1], "w", encoding="utf-8") as f:   # written after each, kept if one hangs
            json.dump(results, f)
    return 0


if __name__ == "__main__":
    # The trip-wires import endorm_mini.course.retest: run that module's main, not this copy's
    # (``python -m`` runs the file as __main__, a second module with its own TRIPPED).
    torch.set_num_threads(1)
    from endorm_mini.course.retest import main as _main
    sys.exit(_main(sys.argv[1:]))

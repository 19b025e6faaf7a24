"""Self-checks for exercise cells, the first cell of every notebook, and ``endorm-mini grade``.

``check("4.2", endogenous_rewards)`` runs the learner's function and the package's
reference on the same seeded cases (``endorm_mini.checks.lessonNN``), compares them within
an explicit tolerance and prints one line, ``✔ 4.2 endogenous_rewards: passed``, or raises
an :class:`ExerciseError` naming what differed, the likely mistake and the equation.
Returning an input fails (no case's answer equals an input) and calling the reference is
refused (watched with ``sys.setprofile``). ``endorm-mini grade`` runs a notebook under
``pytest --nbval-lax`` and, at the same time, re-tests each exercise function out of it in
a fresh process with trip-wires and fresh cases (:mod:`endorm_mini.retest`); only the
re-test scores. It prints a per-exercise table, or writes CSV/JSON for a whole class.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.util
import inspect
import math
import numbers
import os
import random
import re
import subprocess
import sys
import tempfile
import textwrap
import contextlib
from pathlib import Path
from xml.etree import ElementTree
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from . import checks, kernel, paper, project

CPU_MODEL = "tiny-domains"                 # a zoo checkpoint: runs anywhere in seconds
GPU_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"   # a real Hugging Face model when cuda is present


class ExerciseError(AssertionError):
    """A check failed: the message says what differed and what to re-read."""


class ExerciseNotImplemented(ExerciseError, NotImplementedError):
    """The exercise still raises the stub's ``NotImplementedError``."""


# ---------------------------------------------------------------- the first cell
# Environment variables read by setup_notebook: run a notebook's GPU branch on another model,
# dtype or data, or on a CPU (a rehearsal: see endorm_mini.offline for stand-ins of the hub's).
ENV_MODEL, ENV_DTYPE, ENV_DATA, ENV_BRANCH = ("ENDORM_MINI_MODEL", "ENDORM_MINI_DTYPE", "ENDORM_MINI_DATA",
                                              "ENDORM_MINI_BRANCH")
DTYPE_NAMES = ("fp32", "bf16", "fp16")
BRANCHES = ("auto", "cpu", "gpu")


@dataclasses.dataclass(frozen=True)
class Setup:
    """What the first cell picked (``SETUP = setup_notebook()``).

    It unpacks as ``DEVICE, MODEL = setup_notebook()``, the first cell of notebooks built
    before SETUP existed, so a learner's older copy keeps running after an update."""
    device: str                # "cuda" or "cpu": where the notebook's tensors go
    model: str                 # MODEL: a zoo name, a local folder or a Hugging Face name
    dtype: str | None = None   # fp32 | bf16 | fp16 from ENDORM_MINI_DTYPE; None: each cell's own
    data: str | None = None    # ENDORM_MINI_DATA: a local folder replacing the hub downloads
    gpu_branch: bool = False   # run the GPU sections (RUN_REAL): on cuda, or ENDORM_MINI_BRANCH

    def __iter__(self):
        return iter((self.device, self.model))

    @property
    def half(self) -> str:
        """The half precision of the real sections: the dtype override if given, else bf16
        where the GPU has it (fp16 on a T4), and bf16 on a CPU."""
        if self.dtype is not None:
            return self.dtype
        if self.device == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16"

    @property
    def rehearsal(self) -> bool:
        """The GPU branch on a CPU (``ENDORM_MINI_BRANCH=gpu``): it runs to show the code works,
        with the real sections' sizes cut down; its numbers mean nothing."""
        return self.gpu_branch and self.device != "cuda"

    def run_dir(self, name: str) -> str:
        """Where a real section writes what a rerun resumes from: ``runs/NAME/<model folder
        name>``, so that two models never share one; in a rehearsal a fresh temporary folder
        (a random stand-in's checkpoints must never be resumed by a real run)."""
        if self.rehearsal:
            return tempfile.mkdtemp(prefix=f"endorm-mini-{name}-")
        return str(Path("runs") / name / Path(self.model.rstrip("/")).name)


def _setup_model(value: str) -> str:
    """ENDORM_MINI_MODEL checked: a zoo name, an existing model folder, or a hub-style name."""
    from . import zoo

    if value in zoo.available():
        return value
    path = Path(value).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(f"{ENV_MODEL}={value!r}: the folder has no config.json; point it at a saved "
                             "model (save_pretrained, or endorm_mini.offline.random_qwen2)")
        return str(path.resolve())
    if value.startswith("tiny-"):
        raise ValueError(f"{ENV_MODEL}={value!r}: no such zoo model; known: {', '.join(zoo.available())}")
    if value.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", value):
        raise ValueError(f"{ENV_MODEL}={value!r}: not a zoo name ({', '.join(zoo.available())}), an "
                         "existing folder, or a hub name like 'Qwen/Qwen2.5-0.5B-Instruct'")
    return value


def read_overrides(environ=None) -> dict[str, str]:
    """The ``ENDORM_MINI_*`` variables that are set (not empty), checked and normalised:
    ``{"model", "dtype", "data", "branch"}`` keys, each only when given. A bad value raises
    ``ValueError`` naming the variable and what it accepts."""
    environ = os.environ if environ is None else environ
    raw = {key: environ.get(var, "").strip() for key, var in
           (("model", ENV_MODEL), ("dtype", ENV_DTYPE), ("data", ENV_DATA), ("branch", ENV_BRANCH))}
    out = {}
    if raw["model"]:
        out["model"] = _setup_model(raw["model"])
    if raw["dtype"]:
        name = raw["dtype"].lower()
        name = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(name, name)
        if name not in DTYPE_NAMES:
            raise ValueError(f"{ENV_DTYPE}={raw['dtype']!r}: use one of {', '.join(DTYPE_NAMES)}")
        out["dtype"] = name
    if raw["data"]:
        data = Path(raw["data"]).expanduser()
        if not data.is_dir():
            raise ValueError(f"{ENV_DATA}={raw['data']!r}: not a folder; it holds the real sections' data "
                             "(endorm_mini.offline.DATA_LAYOUT; write_data makes a tiny one)")
        out["data"] = str(data.resolve())
    if raw["branch"]:
        if raw["branch"].lower() not in BRANCHES:
            raise ValueError(f"{ENV_BRANCH}={raw['branch']!r}: use one of {', '.join(BRANCHES)} "
                             "(gpu: run the GPU sections even without cuda)")
        out["branch"] = raw["branch"].lower()
    return out


def setup_notebook(cpu_model: str = CPU_MODEL, gpu_model: str = GPU_MODEL, seed: int = 0,
                   environ=None) -> Setup:
    """Pick the device (cuda if present, else cpu), the branch and the model; seed everything.

    Called by every notebook's first cell, after the Colab install; prints one line, which
    names every override. The GPU branch (``gpu_model``, the real sections) runs on cuda.
    Environment variables (``environ``: default ``os.environ``) override:

    - ``ENDORM_MINI_MODEL``: MODEL on either branch (a zoo name, a model folder, a hub name);
    - ``ENDORM_MINI_DTYPE``: fp32, bf16 or fp16 for the cells that choose a dtype for MODEL;
    - ``ENDORM_MINI_DATA``: a folder of the real sections' data files, read instead of the hub;
    - ``ENDORM_MINI_BRANCH``: ``gpu`` runs the GPU branch even on a CPU (a rehearsal with
      cut-down sizes), ``cpu`` the CPU branch even on cuda, ``auto`` (default) by the device.

    A bad value raises ``ValueError``.
    """
    over = read_overrides(environ)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    branch = over.get("branch", "auto")
    gpu_branch = device == "cuda" if branch == "auto" else branch == "gpu"
    model = over.get("model", gpu_model if gpu_branch else cpu_model)
    if device == "cpu":
        # ~100k-parameter models: thread hand-offs cost more than the matmuls (4× measured).
        torch.set_num_threads(1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    where = "Colab" if "google.colab" in sys.modules else "local"
    parts = [f"device={device}"]
    if "branch" in over:
        parts.append(f"branch={'gpu' if gpu_branch else 'cpu'} ({ENV_BRANCH})")
    parts.append(f"MODEL={model}" + (f" ({ENV_MODEL})" if "model" in over else ""))
    parts += [f"dtype={over['dtype']} ({ENV_DTYPE})"] if "dtype" in over else []
    parts += [f"data={over['data']} ({ENV_DATA})"] if "data" in over else []
    kernel.install(quiet=(ExerciseNotImplemented,))  # %%needs N.M; one-line "not implemented yet"
    print(f"endorm-mini setup: {' · '.join(parts)} · seed={seed} · {where}")
    return Setup(device, model, over.get("dtype"), over.get("data"), gpu_branch)


def setup_cell(colab: str, cpu_model: str = CPU_MODEL, gpu_model: str = GPU_MODEL) -> str:
    """The source of a notebook's first cell; ``colab`` states its Colab runtime and memory."""
    models = "" if (cpu_model, gpu_model) == (CPU_MODEL, GPU_MODEL) else \
        f"cpu_model={cpu_model!r}, gpu_model={gpu_model!r}"
    return (
        f"# Run this cell first. Colab runtime: {colab}\n"
        "import subprocess, sys\n"
        'if "google.colab" in sys.modules:  # on Colab: install the course package (~1 min)\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q",\n'
        f'                    "{project.install_spec()}"], check=True)\n'
        "from endorm_mini.grading import check, setup_notebook\n"
        "# ENDORM_MINI_* environment variables can override its choices: help(setup_notebook)\n"
        f"SETUP = setup_notebook({models})\n"
        "DEVICE, MODEL = SETUP.device, SETUP.model"
    )


# ---------------------------------------------------------------- comparing answers
def _kind(x: Any) -> str:
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return f"{type(x).__name__}{list(x.shape)} {str(x.dtype).replace('torch.', '')}"
    return repr(x) if x is None or isinstance(x, (bool, numbers.Number, str)) else type(x).__name__


def _num(x: torch.Tensor) -> str:
    return f"{x.item():.6g}" if x.is_floating_point() else str(x.item())


def _compare_tensors(got: Any, want: Any, rtol: float, atol: float, path: str) -> str | None:
    got = torch.from_numpy(got) if isinstance(got, np.ndarray) else got
    want = torch.from_numpy(want) if isinstance(want, np.ndarray) else want
    if not isinstance(got, torch.Tensor):
        return f"{path}: expected a tensor of shape {list(want.shape)}, got {_kind(got)}"
    if got.shape != want.shape:
        return f"{path}: shape {list(got.shape)}, expected {list(want.shape)}"
    got, want = got.detach().cpu(), want.detach().cpu()
    if want.is_floating_point() and not got.is_floating_point():
        return f"{path}: dtype {got.dtype}, expected a floating-point tensor ({want.dtype})"
    ok = torch.isclose(got.double(), want.double(), rtol=rtol, atol=atol, equal_nan=True) \
        if want.is_floating_point() else got.eq(want)
    if bool(ok.all()):
        return None
    bad = tuple((~ok).nonzero()[0].tolist())
    where = f"[{', '.join(map(str, bad))}]" if bad else ""
    return (f"{path}{where}: got {_num(got[bad])}, expected {_num(want[bad])} "
            f"({int((~ok).sum())} of {ok.numel()} entries differ; rtol={rtol:g}, atol={atol:g})")


def compare(got: Any, want: Any, rtol: float = 1e-5, atol: float = 1e-6, path: str = "output",
            names: tuple[str, ...] = ()) -> str | None:
    """``None`` when ``got`` matches ``want``, else one line saying where and how it differs.

    Tensors/arrays by shape then values (``isclose``; integers and bools exactly), numbers
    within the same tolerance, tuples/lists/dicts/dataclasses element by element (``names``
    label a top-level tuple's parts).
    """
    if got is None and want is not None:
        return f"{path}: got None — did you forget to `return` the result?"
    if isinstance(want, (torch.Tensor, np.ndarray)):
        return _compare_tensors(got, want, rtol, atol, path)
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"{path}: expected a {type(want).__name__} of {len(want)} items, got {_kind(got)}" \
                + (f" of {len(got)} items" if isinstance(got, (tuple, list)) else "")
        for i, (g, w) in enumerate(zip(got, want)):
            sub = names[i] if i < len(names) else f"{path}[{i}]"
            if (problem := compare(g, w, rtol, atol, sub)) is not None:
                return problem
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return f"{path}: expected a dict with keys {sorted(want)}, got {_kind(got)}" \
                + (f" with keys {sorted(got)}" if isinstance(got, dict) else "")
        return next((p for k in want if (p := compare(got[k], want[k], rtol, atol,
                                                      f"{path}[{k!r}]")) is not None), None)
    if dataclasses.is_dataclass(want) and not isinstance(want, type):
        if type(got) is not type(want):
            return f"{path}: expected a {type(want).__name__}, got {_kind(got)}"
        return next((p for f in dataclasses.fields(want) if (p := compare(
            getattr(got, f.name), getattr(want, f.name), rtol, atol, f"{path}.{f.name}")) is not None), None)
    if isinstance(want, numbers.Number) and not isinstance(want, bool):
        if getattr(got, "ndim", None) == 0:  # a 0-d tensor or array for a number is fine
            got = got.item()
        if not isinstance(got, numbers.Number) or isinstance(got, bool):
            return f"{path}: expected a number, got {_kind(got)}"
        if isinstance(want, numbers.Integral) and not isinstance(got, numbers.Integral):
            return f"{path}: expected an integer, got {got!r}"
        if got == want or (math.isfinite(want) and abs(got - want) <= atol + rtol * abs(want)):
            return None
        return f"{path}: got {got:.6g}, expected {want:.6g} (rtol={rtol:g}, atol={atol:g})"
    try:
        equal = bool(got == want)
    except (ValueError, TypeError, RuntimeError):  # e.g. an array for a string: no single truth
        equal = False
    return None if equal else f"{path}: got {_kind(got) if hasattr(got, 'shape') else repr(got)}, expected {want!r}"


# ---------------------------------------------------------------- running a check
def _code_objects(fn: Any) -> set:
    """The Python code objects whose execution means ``fn`` was called."""
    if isinstance(fn, functools.partial):
        return _code_objects(fn.func)
    fn = getattr(fn, "__func__", fn)      # bound methods
    fn = inspect.unwrap(fn) if callable(fn) else fn
    if inspect.isfunction(fn):
        return {fn.__code__}
    if inspect.isclass(fn):               # a class reference: any of its own methods
        return {f.__code__ for f in vars(fn).values() if inspect.isfunction(f)}
    return set()


@contextlib.contextmanager
def _watch_calls(codes: set, c_names: set, seen: list):
    """Record calls of the given Python code objects or C functions while the block runs."""
    previous = sys.getprofile()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            code = frame.f_code  # co_qualname is Python ≥ 3.11
            seen.append(f"{frame.f_globals.get('__name__')}.{getattr(code, 'co_qualname', code.co_name)}")
        elif event == "c_call" and getattr(arg, "__name__", None) in c_names:
            seen.append(arg.__name__)
        if previous is not None:
            previous(frame, event, arg)
    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(previous)


def _call(fn: Callable, case: checks.Case, seed: int, watch=contextlib.nullcontext()):
    """``fn`` on fresh copies of the case's inputs, with the global RNG seeded and restored."""
    args, kwargs = copy.deepcopy((case.args, case.kwargs))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with watch:
            return fn(*args, **kwargs), (args, kwargs)


def _named_inputs(ex: checks.Exercise, case: checks.Case) -> dict[str, Any]:
    try:
        return dict(inspect.signature(ex.reference).bind(*case.args, **case.kwargs).arguments)
    except (TypeError, ValueError):
        return {f"arg{i}": a for i, a in enumerate(case.args)} | dict(case.kwargs)


def _notes_suffix(equation: str) -> str:
    """Where the cited notes are, for a ``re-read`` line that cites them (or an eq./§)."""
    return f" (notes: {paper.notes_location()})" if paper.CITES_NOTES.search(equation) else ""


def _failure(ex: checks.Exercise, case: checks.Case, problem: str, got: Any = None,
             what: str = "wrong answer") -> str:
    inputs = _named_inputs(ex, case)
    lines = [f"✘ {ex.id} {ex.name}: {what} on case {case.label!r} "
             f"({', '.join(f'{k}={_kind(v)}' for k, v in inputs.items())})", f"  {problem}"]
    for name, value in inputs.items():
        if got is not None and (got is value or compare(got, value, 0, 0) is None):
            lines.append(f"  your function returned its input `{name}` unchanged.")
    for mistake, wrong in ex.mistakes.items():
        try:
            if compare(got, _call(wrong, case, ex.seed)[0], ex.rtol, ex.atol) is None:
                lines.append(f"  likely mistake: {mistake}")
        except Exception:  # a mistake that cannot even run on this case is not the one
            pass
    lines += [f"  hint: {ex.hint}"] if ex.hint else []
    lines += [f"  re-read: {ex.equation}{_notes_suffix(ex.equation)}"] if ex.equation else []
    return "\n".join(lines)


def stand_in(reference: Callable) -> Callable:
    """An exercise's reference compiled afresh from its source (same globals, same file name):
    it stands in for a learner's unfinished earlier exercise without counting as a call of the
    reference itself, which a later exercise may forbid (4.2 must not call the package's
    soft_value, yet may rest on 4.1's)."""
    fn = inspect.unwrap(reference)
    if not inspect.isfunction(fn) or fn.__code__.co_freevars:
        return reference
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return reference
    defined: dict[str, Any] = {}
    exec(compile(source, fn.__code__.co_filename, "exec"), fn.__globals__, defined)
    return defined.get(fn.__name__, reference)


@contextlib.contextmanager
def _earlier_exercises_finished(ex: checks.Exercise, fn: Callable):
    """Exercises are checked independently: while ``fn`` runs, an earlier exercise of the
    lesson whose function in ``fn``'s globals is still the stub is the package's reference.
    Yields the names replaced."""
    scope = getattr(inspect.unwrap(fn), "__globals__", {})
    saved, replaced = {}, []
    for other in checks.lesson_exercises(int(ex.id.split(".")[0])):
        if other.id != ex.id and checks.is_stub(scope.get(other.name), other.id):
            saved[other.name] = scope[other.name]
            scope[other.name] = stand_in(other.reference)
            replaced.append(f"{other.name} ({other.id})")
    try:
        yield replaced
    finally:
        scope.update(saved)


def check(exercise_id: str, fn: Callable) -> None:
    """Compare the learner's ``fn`` with exercise ``exercise_id``'s reference on its cases:
    print ``✔ <id> <name>: passed``, or raise :class:`ExerciseError` (wrong, or a shortcut)
    or :class:`ExerciseNotImplemented` (the stub is still there)."""
    ex = checks.get(exercise_id)
    tag = f"{ex.id} {ex.name}"
    if not callable(fn):
        raise ExerciseError(f"✘ {tag}: pass the function itself, as in check({ex.id!r}, {ex.name}); "
                            f"got {_kind(fn)}")
    codes = _code_objects(ex.reference) | set().union(*(_code_objects(f) for f in ex.forbid))
    c_names = {f if isinstance(f, str) else f.__name__ for f in ex.forbid
               if isinstance(f, str) or not _code_objects(f)}
    if not _code_objects(ex.reference):
        c_names.add(ex.reference.__name__)
    seen: list[str] = []  # shortcuts taken; refused after the cases, so a wrong value shows first
    with _earlier_exercises_finished(ex, fn) as replaced:
        _check_cases(ex, fn, codes, c_names, seen)
    if seen:
        raise ExerciseError(f"✘ {tag}: your function calls `{seen[0]}`, which does the work of "
                            "this exercise: write it yourself.")
    note = f" (with the package's {', '.join(replaced)} standing in: not finished yet)" \
        if replaced else ""
    print(f"✔ {tag}: passed{note}")


def _check_cases(ex: checks.Exercise, fn: Callable, codes: set, c_names: set, seen: list) -> None:
    tag = f"{ex.id} {ex.name}"
    for case in ex.cases(torch.Generator().manual_seed(ex.seed)):
        want, _ = _call(ex.reference, case, ex.seed)
        try:
            got, (args, kwargs) = _call(fn, case, ex.seed, _watch_calls(codes, c_names, seen))
        except NotImplementedError as err:
            raise ExerciseNotImplemented(
                f"✘ {tag}: not implemented yet (NotImplementedError: {err}). Replace the "
                f"`raise NotImplementedError` line of `{ex.name}` with your code, run that "
                "cell, then this one.") from None
        except Exception as err:
            raise ExerciseError(_failure(ex, case, f"{type(err).__name__}: {err} (traceback above)",
                                         what="your function raised")) from err
        if (problem := compare(got, want, ex.rtol, ex.atol, names=ex.outputs)) is not None:
            also = f"\n  also: your function calls `{seen[0]}`, which is off limits" if seen else ""
            raise ExerciseError(_failure(ex, case, problem, got) + also)
        if compare((args, kwargs), (case.args, case.kwargs), 0, 0, "input") is not None:
            raise ExerciseError(_failure(ex, case, "work on a copy (e.g. `x = x.clone()`)",
                                         what="your function changed its input in place"))


# ---------------------------------------------------------------- claims of the prose
class ClaimError(AssertionError):
    """A claim the lesson makes from its measured numbers does not hold on this run."""


def claim(statement: str, holds: bool, measured: str) -> None:
    """Check a claim the prose makes from numbers of training, sampling or long reductions.

    Those numbers differ in their last digits between CPUs (``ATEN_CPU_CAPABILITY``
    kernels), so the notebook tests do not compare them digit by digit; the claim is
    checked instead, with a tolerance measured across seeds and kernels. Prints one line,
    ``✔ <statement>``, that is the same on every machine, or raises :class:`ClaimError`
    with the numbers ``measured`` on this run.
    """
    if not holds:
        raise ClaimError(f"✘ this lesson claims: {statement}; but this run measured {measured}. "
                         "If you changed the code above, that may be why; otherwise please "
                         "report it, with your CPU and torch version.")
    print(f"✔ {statement}")


# ---------------------------------------------------------------- endorm-mini grade
class Row(NamedTuple):
    exercise: str
    name: str
    result: str   # passed · failed · not attempted · missing · not run
    detail: str   # why, for anything but passed

    @property
    def points(self) -> int:
        return int(self.result == "passed")


class NotebookError(ValueError):
    """The file is not a notebook that grade can run: one line naming it."""


class GradeReport(NamedTuple):
    path: str
    lesson: int | None
    rows: list[Row]
    others: list[str]      # failures of the notebook itself, one line each
    status: str = "ran"    # ran · timed out · error
    seconds: float = 0.0

    @property
    def points(self) -> int:
        return sum(r.points for r in self.rows)


def _error_line(text: str) -> str:
    """The check's ``✘ …`` line of a failed cell's report, else its last exception line."""
    text = re.sub(r"(\x1b|#x1B)\[[0-9;]*m", "", text or "")  # ANSI colours, raw or XML-escaped
    for line in text.splitlines():
        if "✘ " in line:
            return line[line.index("✘ "):].strip()
    errors = [l.strip() for l in text.splitlines() if re.match(r"\s*\w*(Error|Exception|Interrupt)\b", l)]
    return errors[-1] if errors else (text.strip().splitlines() or ["failed"])[-1]


def read_notebook(path: str | Path):
    """The notebook at ``path``, or :class:`NotebookError` in one line naming the file."""
    import json

    import nbformat
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise NotebookError(f"{path}: not a notebook (not JSON: {str(err).splitlines()[0]})") from None
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, list) or not all(
            isinstance(c, dict) and c.get("cell_type") in ("code", "markdown", "raw")
            and isinstance(c.get("source", ""), (str, list)) for c in cells):
        raise NotebookError(f"{path}: not a notebook (it needs a list of cells, each with a cell_type "
                            "and a source)")
    for i, cell in enumerate(cells):       # a hand-written notebook may leave these out
        cell.setdefault("metadata", {})
        cell.setdefault("id", f"cell-{i}")
        if cell["cell_type"] == "code":
            cell.setdefault("outputs", [])
            cell.setdefault("execution_count", None)
    data.setdefault("nbformat", 4)
    data.setdefault("nbformat_minor", 5)
    data.setdefault("metadata", {})
    try:
        return nbformat.reads(json.dumps(data), as_version=4)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad notebook
        raise NotebookError(f"{path}: not a notebook ({type(err).__name__}: {err})") from None


def _kill(proc: subprocess.Popen) -> None:
    import signal
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _nbval_cells(junit: Path) -> dict[int, tuple[str, str]]:
    cells = {}
    if not junit.exists():
        return cells
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        m = re.search(r"Cell (\d+)", case.get("name", ""))
        bad = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        outcome = "passed" if bad is None else "skipped" if bad.tag == "skipped" else "failed"
        if m:
            cells[int(m.group(1))] = (outcome, "" if bad is None else (bad.text or "") + (bad.get("message") or ""))
    return cells


def _expected_exercises(nb, path: Path) -> tuple[int | None, list[str], list[str]]:
    """The lesson, the exercises to grade (the registry's for the lesson named by the
    notebook's metadata, else its file name, else its exercise headers) and notes."""
    from . import notebooks
    meta = nb.metadata.get(notebooks.BUILD_KEY, {}) if isinstance(nb.metadata, dict) else {}
    lesson = meta.get("lesson") if isinstance(meta.get("lesson"), int) else notebooks.lesson_number(path)
    if lesson is None:
        headers = [e for c in nb.cells if c.cell_type == "code" for e in notebooks.exercise_ids(c.source)]
        lesson = int(headers[0].split(".")[0]) if headers else None
    expected = [ex.id for ex in checks.lesson_exercises(lesson)] if lesson is not None else []
    notes = []
    listed = meta.get("exercises")
    if isinstance(listed, list) and listed != expected:
        notes.append(f"the notebook's metadata lists exercises {', '.join(map(str, listed)) or 'none'}; "
                     f"lesson {lesson} has {', '.join(expected) or 'none'}: graded on the latter")
    if lesson is None:
        notes.append("no lesson number in the metadata, the file name or the exercise headers: nothing to grade")
    return lesson, expected, notes


def grade_notebook(path: str | Path, timeout: float = 300, limit: float = 1800,
                   seed: int | None = None) -> GradeReport:
    """Grade a learner's notebook: run it under nbval (lax) so that its code runs in
    context, and, at the same time, re-test each exercise function out of it in a fresh
    process (:mod:`endorm_mini.retest`: trip-wires, fresh seeded cases). Only the re-test
    scores; what the notebook's own check cells printed does not count.

    ``timeout``: seconds per cell; ``limit``: seconds for the whole notebook (a hanging
    notebook is stopped and reported). ``seed``: the fresh cases' seed (default: drawn now,
    with :mod:`secrets`). Raises ``FileNotFoundError`` or :class:`NotebookError`.
    """
    import json
    import secrets
    import time

    import nbformat
    from . import notebooks
    if importlib.util.find_spec("nbval") is None:
        raise ValueError("endorm-mini grade needs nbval: pip install nbval")
    path = Path(path)
    start = time.perf_counter()
    nb = read_notebook(path)
    lesson, expected, notes = _expected_exercises(nb, path)
    nb = notebooks.clean(nb)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    check_at: dict[str, int] = {}      # an exercise's check: the first cell calling it (as
    for i, source in enumerate(code):  # notebooks.validate); lesson 00 calls it again in a demo
        for e in notebooks.check_ids(source):
            check_at.setdefault(e, i)
    exercise_at = {e: i for i, s in enumerate(code) for e in notebooks.exercise_ids(s)}
    status = "ran"
    with tempfile.TemporaryDirectory() as tmp:
        spec, result = Path(tmp) / "retest.json", Path(tmp) / "result.json"
        modules = sorted({checks.get(e).module for e in expected} -
                         ({checks.lesson_module(lesson)} if lesson is not None else set()))
        spec.write_text(json.dumps({"cells": code, "exercises": expected, "modules": modules, "timeout": timeout,
                                    "seed": seed if seed is not None else secrets.randbits(31)}))
        env = {**notebooks.kernel_env(), "OMP_NUM_THREADS": "1"}
        errors = open(Path(tmp) / "retest.err", "w+", encoding="utf-8")   # a file: a pipe could fill and block
        worker = subprocess.Popen([sys.executable, "-m", "endorm_mini.retest", str(spec), str(result)],
                                  cwd=tmp, stdout=subprocess.DEVNULL, stderr=errors, env=env,
                                  start_new_session=True)
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        nbformat.write(nb, run_dir / "notebook.ipynb")
        (run_dir / "pytest.ini").write_text("[pytest]\n")  # not the caller's settings
        cmd = [sys.executable, "-m", "pytest", "notebook.ipynb", "--nbval-lax", "--nbval-current-env",
               f"--nbval-cell-timeout={timeout:g}", "-p", "no:cacheprovider", "-p", "no:benchmark", "-q",
               "--junitxml=junit.xml"]
        runner = subprocess.Popen(cmd, cwd=run_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=notebooks.kernel_env(), start_new_session=True)
        late = []
        for what, proc in (("the notebook", runner), ("the re-test", worker)):
            try:
                proc.wait(timeout=max(1.0, limit - (time.perf_counter() - start)))
            except subprocess.TimeoutExpired:
                _kill(proc)
                status = "timed out"
                late.append(what)
        cells = _nbval_cells(run_dir / "junit.xml")
        try:
            results = json.loads(result.read_text()) if result.exists() else {}
        except ValueError:
            results = {}
        errors.seek(0)
        worker_error = errors.read()[-20000:].strip()
        errors.close()
    rows = []
    for eid in expected:
        name = checks.get(eid).name
        if eid in results:
            rows.append(Row(eid, name, results[eid]["result"], results[eid]["detail"]))
        elif eid not in exercise_at:
            rows.append(Row(eid, name, "missing", f"no '# EXERCISE {eid}' cell in this notebook"))
        else:
            why = f"the re-test did not finish within {limit:g} s" if status == "timed out" else \
                f"the re-test stopped: {_error_line(worker_error)}" if worker_error else "the re-test stopped"
            rows.append(Row(eid, name, "not run", why))
    others = list(notes)
    if status == "timed out":
        others.append(f"{' and '.join(late)} did not finish within {limit:g} s (stopped)")
    elif not cells:
        others.append("pytest --nbval-lax produced no results (the notebook could not run)")
    graded = set(check_at.values()) | set(exercise_at.values())
    unfinished = [exercise_at[r.exercise] for r in rows if r.result != "passed" and r.exercise in exercise_at]
    first_bad = min(unfinished, default=len(code))
    failed = [(i, report) for i, (outcome, report) in sorted(cells.items()) if outcome == "failed" and i not in graded]
    downstream = [i for i, _ in failed if i > first_bad]
    others += [f"code cell {i}: {_error_line(report)}" for i, report in failed if i <= first_bad]
    if downstream:
        others.append(f"{len(downstream)} later cell(s) failed downstream of unfinished or failing exercises "
                      f"(code cells {', '.join(map(str, downstream))})")
    return GradeReport(str(path), lesson, rows, others, status, time.perf_counter() - start)


def _notebook_paths(items: list[str]) -> list[Path]:
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts
                          and notebooks_backup_dir() not in q.parts)
        else:
            out.append(p)
    return out


def notebooks_backup_dir() -> str:
    from . import notebooks
    return notebooks.BACKUPS


def _print_report(report: GradeReport) -> None:
    print(report.path)
    print(f"  {'exercise':<9} {'name':<28} result")
    for row in report.rows:
        print(f"  {row.exercise:<9} {row.name:<28} {row.result}")
        if row.detail and row.result != "passed":
            for line in row.detail.splitlines():
                print(f"  {'':<9} {line.strip() if line.startswith('✘') else line}")
    for other in report.others:
        print(f"  also: {other}")
    print(f"  score: {report.points}/{len(report.rows)} exercises passed")


def _table(reports: list[GradeReport]) -> list[dict]:
    rows = []
    for rep in reports:
        for r in rep.rows:
            rows.append({"student_file": rep.path, "lesson": rep.lesson, "exercise": r.exercise,
                         "status": r.result, "points": r.points, "message": r.detail})
        if rep.status != "ran" or (not rep.rows and rep.others):
            rows.append({"student_file": rep.path, "lesson": rep.lesson, "exercise": "(notebook)",
                         "status": rep.status if rep.status != "ran" else "error", "points": 0,
                         "message": "; ".join(rep.others)})
        rows.append({"student_file": rep.path, "lesson": rep.lesson, "exercise": "total",
                     "status": f"{rep.points}/{len(rep.rows)}", "points": rep.points, "message": ""})
    return rows


def _grade_command(args) -> int:
    import csv
    import json

    paths = _notebook_paths(args.notebooks)
    batch = len(paths) > 1 or args.csv or args.json or any(Path(n).is_dir() for n in args.notebooks)
    if not paths:
        raise FileNotFoundError(f"no notebooks in {', '.join(args.notebooks)}")
    reports: list[GradeReport] = []
    progress = paths
    if batch:
        from tqdm import tqdm
        progress = tqdm(paths, desc="grading", unit="notebook", file=sys.stderr, disable=None)
    for path in progress:
        try:
            report = grade_notebook(path, args.timeout, args.limit)
        except (NotebookError, FileNotFoundError) as err:
            if not batch:
                raise
            report = GradeReport(str(path), None, [], [str(err)], "error")
        except Exception as err:  # noqa: BLE001 - one notebook never stops the batch
            if not batch:
                raise
            report = GradeReport(str(path), None, [], [f"{path}: grading crashed: {type(err).__name__}: {err}"],
                                 "error")
        reports.append(report)
        if args.json != "-":
            _print_report(report)
    table = _table(reports)
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    if args.json:
        text = json.dumps([{"student_file": r.path, "lesson": r.lesson, "status": r.status, "points": r.points,
                            "out_of": len(r.rows), "seconds": round(r.seconds, 1), "others": r.others,
                            "exercises": [{"exercise": x.exercise, "name": x.name, "status": x.result,
                                           "points": x.points, "message": x.detail} for x in r.rows]}
                           for r in reports], indent=1, ensure_ascii=False)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    passed, total = sum(r.points for r in reports), sum(len(r.rows) for r in reports)
    if len(reports) > 1 and args.json != "-":
        print(f"total: {passed}/{total} exercises passed in {len(reports)} notebooks")
    clean = all(r.status == "ran" and not r.others for r in reports)
    return 0 if passed == total and clean else 1


def register_cli(sub) -> None:
    p = sub.add_parser("grade", help="run notebooks, re-test each exercise out of them, print a score")
    p.add_argument("notebooks", nargs="+", help="learner notebooks or folders of them (my-lessons/)")
    p.add_argument("--timeout", type=float, default=300, help="seconds allowed per cell")
    p.add_argument("--limit", type=float, default=1800,
                   help="seconds allowed per notebook; a notebook over it is stopped and reported")
    p.add_argument("--csv", metavar="OUT.csv",
                   help="write one row per notebook and exercise (and a total per notebook)")
    p.add_argument("--json", metavar="OUT.json", help="write the results as JSON ('-': to stdout only)")
    p.set_defaults(func=_grade_command)

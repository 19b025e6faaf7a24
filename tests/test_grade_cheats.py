"""``endorm-mini grade`` holds: each exercise is re-tested out of the notebook, its function
in a sandbox process apart from the judge, on fresh cases, so none of these cheats scores
(one test per cheat; the determined ones of issue 21: tests/test_grade_sandbox.py), and
honest work still does. Notebooks are copies of lessons/NN with their exercise
cells replaced; each grade runs the notebook for real (a few seconds for lesson 00)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch

from endorm_mini import cli
from endorm_mini.course import cells, checks, grade, judge, nbrun

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
HEADER = "# EXERCISE 0.1 · soft_value · ★☆☆ · 5 min\n"
GOOD = '''def soft_value(logits, alpha=1.0):
    z = logits / alpha
    m = z.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return alpha * (m.squeeze(-1) + torch.log(torch.exp(z - m).sum(-1)))
'''
WRONG = "def soft_value(logits, alpha=1.0):\n    return logits.amax(-1)\n"   # a hard max


def _lesson(number: int) -> nbformat.NotebookNode:
    return nbformat.read(next(LESSONS.glob(f"{number:02d}_*.ipynb")), as_version=4)


def _cell(nb, eid):
    return next(c for c in nb.cells if c.cell_type == "code" and eid in cells.exercise_ids(c.source))


def _write(tmp_path, nb, name="00_start_here.ipynb") -> Path:
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def _notebook(tmp_path, exercise: str, *extra_cells: str, name="00_start_here.ipynb") -> Path:
    """Lesson 00 with exercise 0.1's cell replaced and ``extra_cells`` after it."""
    nb = _lesson(0)
    cell = _cell(nb, "0.1")
    cell.source = HEADER + exercise
    at = nb.cells.index(cell)
    for i, src in enumerate(extra_cells):
        nb.cells.insert(at + 1 + i, nbformat.v4.new_code_cell(src))
    return _write(tmp_path, nb, name)


def _grade(path, **kw) -> dict[str, grade.Row]:
    report = grade.grade_notebook(path, timeout=120, limit=kw.pop("limit", 300), **kw)
    return {r.exercise: r for r in report.rows}


def _failed(path, *reasons):
    row = _grade(path)["0.1"]
    assert row.result == "failed", row
    for reason in reasons:
        assert reason in row.detail, row.detail
    return row


# ---------------------------------------------------------------- honest work
def test_a_correct_solution_passes(tmp_path):
    assert _grade(_notebook(tmp_path, GOOD))["0.1"].result == "passed"


@pytest.mark.parametrize("lesson, unsolved, solved", [(4, "4.1", "4.2"), (1, "1.1", "1.3")])
def test_exercises_are_graded_independently(tmp_path, lesson, unsolved, solved):
    """An exercise that calls an unfinished earlier one is graded with the earlier one's
    reference in its place (even where it forbids calling the package's copy itself)."""
    nb = _lesson(lesson)
    master = nbformat.read(next((ROOT / "solutions").glob(f"{lesson:02d}_*.ipynb")), as_version=4)
    _cell(nb, solved).source = _cell(master, solved).source
    rows = _grade(_write(tmp_path, nb, f"{lesson:02d}_lesson.ipynb"))
    assert rows[unsolved].result == "not attempted" and rows[solved].result == "passed", rows
    _cell(nb, solved).source = _cell(master, solved).source.replace("return ", "return 2 * ", 1)
    rows = _grade(_write(tmp_path, nb, f"{lesson:02d}_lesson.ipynb"))
    assert rows[solved].result == "failed", rows                      # and a wrong one still fails


def test_a_correct_solution_with_legitimate_torch_functions_passes(tmp_path):
    """4.1 allows torch.logsumexp (0.1 does not: it is the max trick itself); the reference's
    own code with another docstring is not a "copy"."""
    nb = _lesson(4)
    _cell(nb, "4.1").source = ('# EXERCISE 4.1 · soft_value\nimport torch\n'
                               'def soft_value(logits, alpha=1.0):\n    """mine"""\n'
                               '    return torch.logsumexp(logits / alpha, dim=-1) * alpha\n')
    assert _grade(_write(tmp_path, nb, "04_endogenous_reward.ipynb"))["4.1"].result == "passed"


@pytest.mark.parametrize("lesson", ["00", "03", "04", "05"])   # 03, 05: derivations; 06 left out: its run is the suite's slowest
def test_the_solved_masters_grade_full_marks(lesson):
    report = grade.grade_notebook(next((ROOT / "solutions").glob(f"{lesson}_*.ipynb")), timeout=300)
    assert report.rows and all(r.result == "passed" for r in report.rows), report.rows
    assert report.others == [], report.others


# ---------------------------------------------------------------- cheats, one test each
@pytest.mark.parametrize("body", [
    "    sys.setprofile(None)\n",                             # caught by the source scan
    '    getattr(sys, "set" + "profile")(None)\n',            # hidden: `import sys` is not re-run
])
def test_cheat_setprofile_none_then_call_the_reference(tmp_path, body):
    src = "import sys\nfrom endorm_mini.reward import soft_value as ref\n" \
          f"def soft_value(logits, alpha=1.0):\n{body}    return ref(logits, alpha)\n"
    row = _failed(_notebook(tmp_path, src))
    assert "setprofile" in row.detail or "`import sys`" in row.detail


THREAD_CHEAT = '''import threading
from endorm_mini import reward
def soft_value(logits, alpha=1.0):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", reward.soft_value(logits, alpha)),
                         name="sneaky")
    t.start()
    t.join()
    return out["v"]
'''


def test_cheat_call_the_reference_from_a_thread(tmp_path):
    _failed(_notebook(tmp_path, THREAD_CHEAT), "`import threading`")   # started anyway: test_grade_sandbox.py


@pytest.mark.parametrize("src, reason", [
    ("import types\nfrom endorm_mini.reward import soft_value as ref\n"
     "def soft_value(logits, alpha=1.0):\n"
     "    return types.FunctionType(ref.__code__, globals())(logits, alpha)\n", "types.FunctionType"),
    ("from endorm_mini.reward import soft_value as ref\n"        # hidden from the source scan
     "def soft_value(logits, alpha=1.0):\n"
     '    copy = type(ref)(getattr(ref, "__co" + "de__"), globals())\n'
     "    return copy(logits, alpha)\n", "not there while it is graded"),
])
def test_cheat_run_a_copy_of_the_references_code_object(tmp_path, src, reason):
    _failed(_notebook(tmp_path, src), reason)


@pytest.mark.parametrize("src, reason", [
    ("import inspect\nfrom endorm_mini import reward\n"
     "def soft_value(logits, alpha=1.0):\n    ns = {'torch': torch}\n"
     "    exec(inspect.getsource(reward.soft_value), ns)\n    return ns['soft_value'](logits, alpha)\n", "exec"),
    ("import builtins, inspect\nfrom endorm_mini import reward\n"  # hidden from the source scan
     "def soft_value(logits, alpha=1.0):\n    ns = {'torch': torch}\n"
     "    text = getattr(inspect, 'get' + 'source')(reward.soft_value)\n"
     "    vars(builtins)['ex' + 'ec'](text, ns)\n    return ns['soft_value'](logits, alpha)\n",
     "`import builtins`"),
    ('from endorm_mini.reward import soft_value as _\n'         # the reference's text pasted
     'def soft_value(logits: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:\n'
     '    """``V(s) = α logsumexp(f(s,·)/α)`` over the last (vocabulary) dimension: the soft value,\n'
     '    unnumbered in the paper (eq. 11 and eq. 12 subtract it)."""\n'
     '    return alpha * torch.logsumexp(logits / alpha, dim=-1)\n', "copy of the reference's source"),
])
def test_cheat_exec_the_references_source(tmp_path, src, reason):
    _failed(_notebook(tmp_path, src), reason)


def test_cheat_call_a_private_helper(tmp_path):
    src = ("from endorm_mini import reward\ndef soft_value(logits, alpha=1.0):\n"
           "    return reward._soft_value_inplace(logits.clone().reshape(-1, logits.shape[-1]), alpha)"
           ".reshape(logits.shape[:-1])\n")
    _failed(_notebook(tmp_path, src), "endorm_mini.reward._soft_value_inplace", "which does the work")


def test_cheat_redefine_check_to_print_passed(tmp_path):
    path = _notebook(tmp_path, WRONG, 'check = lambda *a, **k: print("✔ passed")')
    _failed(path, "wrong answer", "likely mistake: a hard max")


@pytest.mark.parametrize("where", ["cell", "function"])
def test_cheat_patch_grading_compare(tmp_path, where):
    patch = "import endorm_mini.course.judge as g\ng.compare = lambda *a, **k: None\n"
    if where == "cell":
        path = _notebook(tmp_path, WRONG, patch)
        _failed(path, "wrong answer")
    else:
        src = "import endorm_mini.course.judge as g\ndef soft_value(logits, alpha=1.0):\n" \
              "    g.compare = lambda *a, **k: None\n    return logits.amax(-1)\n"
        _failed(_notebook(tmp_path, src), "`import endorm_mini.course.judge`")


def test_cheat_wrap_the_check_cell_in_try_except(tmp_path):
    nb = _lesson(0)
    _cell(nb, "0.1").source = HEADER + WRONG
    check_cell = next(c for c in nb.cells if c.cell_type == "code" and cells.check_ids(c.source))
    check_cell.source = "try:\n    " + check_cell.source + "\nexcept Exception:\n    pass"
    _failed(_write(tmp_path, nb), "wrong answer")


def test_cheat_memorise_the_references_outputs_on_the_fixed_cases(tmp_path):
    ex = checks.get("0.1")
    table = {}
    for c in ex.cases(torch.Generator().manual_seed(ex.seed)):
        key = round(float(c.args[0].nan_to_num(0, 0, 0).sum()), 3)
        table[key] = judge.call(ex.reference, c, ex.seed)[0].tolist()
    src = (f"TABLE = {table!r}\n"
           "def soft_value(logits, alpha=1.0):\n"
           "    key = round(float(logits.nan_to_num(0, 0, 0).sum()), 3)\n"
           "    if key in TABLE:\n        return torch.tensor(TABLE[key])\n"
           "    return logits.amax(-1)\n")
    path = _notebook(tmp_path, src.replace("inf", "float('inf')"))
    _failed(path, "fresh seed")
    nb = nbformat.read(path, as_version=4)     # the notebook's own check passes with it
    nbrun.run(nb, tmp_path, timeout=120)
    assert any("✔ 0.1 soft_value: passed" in o.get("text", "") for c in nb.cells if c.cell_type == "code"
               for o in c.outputs)


def test_cheat_delete_check_cells_and_rename_the_file(tmp_path):
    """The exercises come from the metadata, not the file name or the check cells."""
    nb, solved = _lesson(4), nbformat.read(ROOT / "solutions" / "04_endogenous_reward.ipynb", as_version=4)
    _cell(nb, "4.1").source = _cell(solved, "4.1").source
    code = [c for c in nb.cells if c.cell_type == "code"]
    for eid in ("4.3", "4.4"):
        nb.cells.remove(next(c for c in code if eid in cells.check_ids(c.source)))
    nb.cells.remove(_cell(nb, "4.4"))
    rows = _grade(_write(tmp_path, nb, "homework.ipynb"))
    assert [(r.exercise, r.result) for r in rows.values()] == [
        ("4.1", "passed"), ("4.2", "not attempted"), ("4.3", "not attempted"), ("4.4", "missing")]


# ---------------------------------------------------------------- reports, batches, bad files
def test_the_table_shows_reasons_and_summarises_downstream_errors(tmp_path, capsys):
    path = _notebook(tmp_path, WRONG)
    assert cli.main(["grade", str(path)]) == 1
    out = capsys.readouterr().out
    assert "likely mistake: a hard max" in out and "re-read: the soft value (docs/paper.md §5" in out and "got" in out
    assert "Traceback" not in out
    stub = _write(tmp_path, _lesson(0), "stub.ipynb")
    assert cli.main(["grade", str(stub)]) == 1
    out = capsys.readouterr().out
    assert "not attempted" in out
    # the untouched lesson's cells that need 0.1 skip (%%needs): nothing fails downstream of it
    # (the downstream summary itself: test_grading.py, a notebook with a failing later cell)
    assert "downstream" not in out
    assert "Traceback" not in out


@pytest.mark.parametrize("content, reason", [
    ('{"cells": 5}', "needs a list of cells"),
    ("print('hello')\n", "not JSON"),
])
def test_a_bad_notebook_is_one_line(tmp_path, capsys, content, reason):
    path = tmp_path / "bad.ipynb"
    path.write_text(content)
    assert cli.main(["grade", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(path) in err and reason in err


def test_batch_grading_writes_csv_and_json_and_survives_bad_and_hanging_notebooks(tmp_path, capsys):
    folder = tmp_path / "class"
    folder.mkdir()
    _notebook(folder, GOOD, name="alice.ipynb")
    _notebook(folder, GOOD, "import time\ntime.sleep(1000)", name="bob.ipynb")
    (folder / "carol.ipynb").write_text('{"cells": 5}')
    out_csv, out_json = tmp_path / "out.csv", tmp_path / "out.json"
    code = cli.main(["grade", str(folder), "--csv", str(out_csv), "--json", str(out_json), "--limit", "25"])
    assert code == 1
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert list(rows[0]) == ["student_file", "lesson", "exercise", "status", "points", "message", "similarity"]
    assert 0 < float(rows[0]["similarity"]) <= 1, rows[0]
    by = {(Path(r["student_file"]).name, r["exercise"]): r for r in rows}
    assert by[("alice.ipynb", "0.1")]["status"] == "passed" and by[("alice.ipynb", "total")]["points"] == "1"
    assert by[("bob.ipynb", "(notebook)")]["status"] == "timed out"
    assert by[("bob.ipynb", "0.1")]["status"] == "passed"        # the re-test does not run the sleep
    assert by[("carol.ipynb", "(notebook)")]["status"] == "error"
    assert "not a notebook" in by[("carol.ipynb", "(notebook)")]["message"]
    data = json.loads(out_json.read_text())
    assert [Path(d["student_file"]).name for d in data] == ["alice.ipynb", "bob.ipynb", "carol.ipynb"]
    assert data[0]["points"] == 1 and data[0]["exercises"][0]["status"] == "passed"
    assert "total: 2/2 exercises passed in 3 notebooks" in capsys.readouterr().out


FAKE_CHECK = 'check = lambda *a, **k: print("✔ 0.1 soft_value: passed")'


def test_a_class_of_30_notebooks_is_graded_into_one_csv(tmp_path):
    """Mixed work, as a class hands it in: each row of the CSV says what the notebook is."""
    folder = tmp_path / "class"
    folder.mkdir()
    kinds = ["solved"] * 10 + ["wrong"] * 7 + ["thread cheat"] * 3 + ["fake check"] * 3 \
        + ["unsolved"] * 4 + ["not a notebook"] * 2 + ["hangs"]
    expected = {}
    for i, kind in enumerate(kinds):
        name = f"student{i:02d}.ipynb"
        if kind == "unsolved":
            _write(folder, _lesson(0), name)
        elif kind == "not a notebook":
            (folder / name).write_text("my homework, typed in a text editor")
        elif kind == "fake check":       # a wrong function, and a check that always says passed
            _notebook(folder, WRONG, FAKE_CHECK, name=name)
        else:
            body = {"solved": GOOD, "hangs": GOOD, "wrong": WRONG, "thread cheat": THREAD_CHEAT}[kind]
            _notebook(folder, body, *(["import time\ntime.sleep(1000)"] * (kind == "hangs")), name=name)
        expected[name] = kind
    out = tmp_path / "marks.csv"
    sigterm = signal.getsignal(signal.SIGTERM)
    assert cli.main(["grade", str(folder), "--csv", str(out), "--limit", "20"]) == 1
    assert signal.getsignal(signal.SIGTERM) is sigterm    # grade's own handler is gone again
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    status = {(r["student_file"].rsplit("/", 1)[-1], r["exercise"]): r for r in rows}
    want = {"solved": "passed", "hangs": "passed", "wrong": "failed", "thread cheat": "failed",
            "fake check": "failed", "unsolved": "not attempted"}
    for name, kind in expected.items():
        if kind == "not a notebook":
            assert status[(name, "(notebook)")]["status"] == "error", name
            continue
        row = status[(name, "0.1")]
        assert row["status"] == want[kind], (name, kind, row)
        assert status[(name, "total")]["points"] == str(int(want[kind] == "passed")), (name, kind)
    assert "`import threading`" in status[("student17.ipynb", "0.1")]["message"]
    assert status[("student29.ipynb", "(notebook)")]["status"] == "timed out"
    assert len({r["student_file"] for r in rows}) == 30


def test_the_source_scan_refuses_code_tricks_but_not_re_compile():
    import ast

    from endorm_mini.course.retest import banned_use, normalised, reference_shape

    def scan(src):
        return banned_use(ast.parse(src).body[0])
    assert scan("def f(x):\n    return re.compile('a+').match(x)") is None
    assert scan("def f(x):\n    return x.eval()") is None
    assert scan("def f(x):\n    exec('y = 1')") == "exec"
    assert scan("def f(x):\n    builtins.eval('1')") == "eval"
    assert scan("def f(x):\n    from inspect import getsource\n    return getsource(x)") == "inspect.getsource"
    assert scan("def f(g):\n    return g.__code__") == "a function's __code__"
    # The reference's text with other names is a copy; with another docstring it is not.
    ref = reference_shape(checks.get("0.1"))
    pasted = ('def mine(f, a: float = 1.0):\n    """``V(s) = α logsumexp(f(s,·)/α)``   over the last '
              '(vocabulary) dimension: the soft value,   unnumbered in the paper (eq. 11 and eq. 12 '
              'subtract it)."""\n    return a * torch.logsumexp(f / a, dim=-1)\n')
    assert normalised(ast.parse(pasted).body[0]) == ref
    assert normalised(ast.parse(pasted.replace("over the last", "over")).body[0]) != ref


def test_a_hand_written_minimal_notebook_is_graded(tmp_path):
    """Cells without metadata, outputs or ids, a list source, no file-name number: graded
    on the metadata's lesson."""
    path = tmp_path / "mine.ipynb"
    path.write_text(json.dumps({"metadata": {"endorm_mini": {"lesson": 0}}, "cells": [
        {"cell_type": "code", "source": ["import torch\n", HEADER, *WRONG.splitlines(True)]}]}))
    row = _grade(path)["0.1"]
    assert row.result == "failed" and "likely mistake: a hard max" in row.detail


def test_a_hanging_exercise_fails_alone_within_the_cell_timeout(tmp_path):
    path = _notebook(tmp_path, "def soft_value(logits, alpha=1.0):\n    while True:\n        pass\n")
    report = grade.grade_notebook(path, timeout=5, limit=120)
    row = report.rows[0]
    assert row.result == "failed" and "did not finish within 5 s" in row.detail, row
    assert report.status == "ran"


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's reaper may be slow to collect it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stopping_grade_stops_the_notebook_and_the_judge(tmp_path, signum):
    """Ctrl-C (SIGINT to the terminal's process group) or SIGTERM stops grade in one line, and
    with it nbval's pytest and kernel, which run in sessions of their own."""
    pids = tmp_path / "pids.txt"
    path = _notebook(tmp_path, GOOD, f"import os, time\nopen({str(pids)!r}, 'w').write(f'{{os.getpid()}} "
                                     f"{{os.getppid()}}')\ntime.sleep(1000)")
    grading = subprocess.Popen([sys.executable, "-m", "endorm_mini.cli", "grade", str(path)], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (pids.exists() and len(pids.read_text().split()) == 2):
        assert time.monotonic() < deadline and grading.poll() is None, grading.communicate()
        time.sleep(0.2)
    kernel, pytest_process = map(int, pids.read_text().split())
    os.killpg(grading.pid, signum)
    out, err = grading.communicate(timeout=30)
    assert grading.returncode == 130 and err.strip().endswith("endorm-mini grade: interrupted"), (out, err)
    deadline = time.monotonic() + 10
    while _running(kernel) or _running(pytest_process):
        assert time.monotonic() < deadline, "nbval's pytest or its kernel outlived grade"
        time.sleep(0.2)

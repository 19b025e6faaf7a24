"""The judge never shares a process with learner code: the cheats a determined student tried
(issue 21), one notebook each, built here from lessons/00, all score 0 on exercise 0.1.

The re-test is called directly on the notebook's code cells (what ``endorm-mini grade``'s
judge process does), without running the notebook under nbval: a few seconds a cheat.
tests/test_grade_cheats.py grades whole notebooks.
"""
from __future__ import annotations

import ast
import io
import marshal
import textwrap
from pathlib import Path

import nbformat
import pytest
import torch

from endorm_mini import reward
from endorm_mini.course import cells, checks, plain, retest, source

ROOT = Path(__file__).resolve().parents[1]
HEADER = "# EXERCISE 0.1 · soft_value · ★☆☆ · 5 min\n"
WRONG = "    return logits.amax(-1)\n"          # a hard max: what each cheat falls back on
# A module the rebuild would refuse to import, imported where the source scan does not look.
IMP = "    imp = (__builtins__ if isinstance(__builtins__, dict) else vars(__builtins__))['__imp' + 'ort__']\n"


def _code(exercise: str, *before: str) -> list[str]:
    """Lesson 00's code cells, exercise 0.1's replaced, ``before`` inserted ahead of it."""
    nb = nbformat.read(ROOT / "lessons" / "00_start_here.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    at = next(i for i, s in enumerate(code) if "0.1" in cells.exercise_ids(s))
    return code[:at] + list(before) + [HEADER + exercise] + code[at + 1:]


def _judged(exercise: str, *before: str) -> dict:
    return retest.retest(checks.get("0.1"), _code(exercise, *before), seed=1234, timeout=60)


def _zero(exercise: str, *before: str, reason: str | tuple[str, ...] = "") -> dict:
    """Judged failed, for ``reason`` (or for one of several)."""
    row = _judged(exercise, *before)
    assert row["result"] == "failed", row
    reasons = (reason,) if isinstance(reason, str) else reason
    assert any(r in row["detail"] for r in reasons), row["detail"]
    return row


GOOD = '''def soft_value(logits, alpha=1.0):
    z = logits / alpha
    m = z.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return alpha * (m.squeeze(-1) + torch.log(torch.exp(z - m).sum(-1)))
'''


def test_honest_work_passes_in_the_sandbox_and_its_similarity_is_reported():
    row = _judged(GOOD)
    assert row["result"] == "passed", row
    assert 0 < row["similarity"] < 1


# ---------------------------------------------------------------- 1. reading the grader's state
@pytest.mark.parametrize("body, reason", [
    # the call stack, where the expected values lived while a case ran in one process
    (IMP + '    f = getattr(imp("sys"), "_get" + "frame")(1)\n', "look at the call stack"),
    ('    try:\n        1 / 0\n    except ZeroDivisionError as e:\n'
     '        f = getattr(e.__traceback__, "tb_" + "frame")\n', "read a code object or a frame"),
    # its modules: the registry of exercises (with every reference) is empty in the sandbox
    (IMP + '    ex = imp("sys").modules["endorm_mini.course.checks"].REGISTRY["0.1"]\n', "KeyError"),
    (IMP + '    imp("endorm_mini.course." + "retest")\n', "open a file"),
    # its files: the spec the judge reads (cases' seed) lies in a folder the sandbox cannot open
    (IMP + '    [open(p).read() for p in imp("glob").glob("/tmp/*/retest.json")]\n', "list a folder"),
    ('    open("/etc/hostname").read()\n', "open a file"),
])
def test_cheat_reading_the_graders_state(body, reason):
    _zero("def soft_value(logits, alpha=1.0):\n" + body + WRONG, reason=reason)


# ---------------------------------------------------------------- 2. disarming the grader
@pytest.mark.parametrize("exercise, reason", [
    # a class body the function uses: re-run in the sandbox, where there is no judge to patch
    ("class _Patch:\n    import endorm_mini.course.judge as j\n    j.compare = lambda *a, **k: None\n"
     "def soft_value(logits, alpha=1.0):\n    _Patch\n" + WRONG, "open a file"),
    # a decorator patching the torch function the comparison uses
    ('@(lambda f: (setattr(torch, "isclose", lambda a, b, **k: torch.ones_like(a, dtype=torch.bool)), f)[1])\n'
     "def soft_value(logits, alpha=1.0):\n" + WRONG, "wrong answer"),
    # patches from the function itself, every call
    ("def soft_value(logits, alpha=1.0):\n    torch.allclose = lambda *a, **k: True\n"
     "    torch.Tensor.__eq__ = lambda *a, **k: True\n" + WRONG, "wrong answer"),
])
def test_cheat_disarming_the_grader(exercise, reason):
    _zero(exercise, reason=reason)


# ---------------------------------------------------------------- 3. the reference computed elsewhere
def _marshalled_reference() -> str:
    fn = textwrap.dedent(__import__("inspect").getsource(reward.soft_value))
    return marshal.dumps(compile(fn, "<ref>", "exec")).hex()


@pytest.mark.parametrize("exercise, before, reason", [
    # another process
    ("def soft_value(logits, alpha=1.0):\n" + IMP + "    sp, sys = imp('subprocess'), imp('sys')\n"
     "    sp.run([sys.executable, '-c', 'print(1)'], capture_output=True)\n" + WRONG, (), "start a process"),
    ("def soft_value(logits, alpha=1.0):\n" + IMP + "    getattr(imp('os'), 'sys' + 'tem')('true')\n" + WRONG, (),
     "start a process"),
    ("def soft_value(logits, alpha=1.0):\n    with torch.multiprocessing.get_context('fork').Pool(1) as pool:\n"
     "        pool.map(abs, [1])\n" + WRONG, (), "start a"),
    # a thread, to call it where a profiler might not look
    ("def soft_value(logits, alpha=1.0):\n" + IMP + "    t = imp('threading').Thread(target=print)\n    t.start()\n"
     + WRONG, (), "start a thread"),
    # a marshalled code object of the reference (hidden from the source scan)
    ("CODE = {code!r}\ndef soft_value(logits, alpha=1.0):\n" + IMP +
     "    ns = {{'torch': torch}}\n    m = imp('mar' + 'shal')\n"
     "    vars(imp('builtins'))['ex' + 'ec'](m.loads(bytes.fromhex(CODE)), ns)\n"
     "    return ns['soft_value'](logits, alpha)\n", (), "load marshalled code"),
    # a module written next to the notebook by an earlier cell
    ("from mysv import soft_value as sv\ndef soft_value(logits, alpha=1.0):\n    return sv(logits, alpha)\n",
     ("open('mysv.py', 'w').write('import torch\\ndef soft_value(l, a=1.0):\\n"
      "    return a * torch.logsumexp(l / a, -1)\\n')",), "`import mysv`"),
    ("def soft_value(logits, alpha=1.0):\n" + IMP + "    imp('sys').path.insert(0, '.')\n"
     "    return imp('mysv').soft_value(logits, alpha)\n", (), "list a folder"),
    # the profiler switched off around a forbidden call
    ("def soft_value(logits, alpha=1.0):\n" + IMP + "    getattr(imp('sys'), 'set' + 'profile')(None)\n"
     "    return alpha * torch.logsumexp(logits / alpha, -1)\n", (), "change the profiler"),
    # ... or simply the forbidden call
    ("def soft_value(logits, alpha=1.0):\n    return alpha * torch.logsumexp(logits / alpha, -1)\n", (),
     "calls `logsumexp`"),
    # the reference itself, by another name: it is not there
    ("from endorm_mini import reward as r\ndef soft_value(logits, alpha=1.0):\n"
     "    return getattr(r, 'soft_' + 'value')(logits, alpha)\n", (), "has no attribute"),
])
def test_cheat_computing_the_reference_elsewhere(exercise, before, reason):
    _zero(exercise.format(code=_marshalled_reference()) if "{code" in exercise else exercise, *before,
          reason=reason)


# ---------------------------------------------------------------- 4. the solved master from disk
def test_cheat_running_the_solved_master_from_disk():
    master = str(ROOT / "solutions" / "00_start_here.ipynb")
    src = ("def soft_value(logits, alpha=1.0):\n" + IMP +
           f"    cells = imp('json').load(open({master!r}))['cells']\n"
           "    text = next(''.join(c['source']) for c in cells if 'EXERCISE 0.1' in ''.join(c['source']))\n"
           "    ns = {'torch': torch}\n    vars(imp('builtins'))['ex' + 'ec'](text, ns)\n"
           "    return ns['soft_value'](logits, alpha)\n")
    _zero(src, reason="open a file")


# ---------------------------------------------------------------- the rebuild and the data coming back
def test_the_rebuild_runs_only_what_the_function_needs_and_names_what_it_refuses():
    code = _code(GOOD, "import os\nSCALE = torch.ones(()).item()\nUNUSED = os.getpid()")
    index = next(i for i, s in enumerate(code) if "0.1" in cells.exercise_ids(s))
    fn_def = next(n for n in ast.parse(code[index]).body if isinstance(n, ast.FunctionDef))
    plan, _, _, refusal = source.rebuild_plan(code, index, fn_def, set())
    assert refusal is None and not any("getpid" in s or "import os" in s for s, _ in plan)
    uses = ast.parse(GOOD.replace("z = logits / alpha", "z = logits / alpha * SCALE / SCALE")).body[0]
    _, _, _, refusal = source.rebuild_plan(code, index, uses, set())
    assert "SCALE" in refusal and "only constants, imports, defs and classes" in refusal
    uses = ast.parse("def soft_value(logits, alpha=1.0):\n    return os.sep\n").body[0]
    assert "`import os`" in source.rebuild_plan(code, index, uses, set())[3]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_only_plain_data_comes_back():
    value = {"a": (torch.ones(2), 1.5, None), "b": [True, "x"]}
    back = plain.decode(plain.loads(plain.dumps(plain.encode(value))))
    assert back["b"] == [True, "x"] and torch.equal(back["a"][0], torch.ones(2)) and back["a"][1:] == (1.5, None)
    buffer = io.BytesIO()
    torch.save(["value", _Evil()], buffer)            # pickled code: weights_only refuses it
    with pytest.raises(plain.BadData):
        plain.loads(buffer.getvalue())
    with pytest.raises(plain.BadData):
        plain.decode(["value", torch.ones(1), "extra"])
    # a record of a class outside the package is never rebuilt: its fields, as a dict
    assert plain.decode(["record", "os:system", [["x", ["value", 1]]]]) == {"__object__": "os:system", "x": 1}


def test_each_exercise_gets_a_fresh_child_of_the_template():
    """The sandboxes fork from one template that ran no learner code: what one exercise's
    function changed (here torch itself) is not there for the next."""
    leak = "def soft_value(logits, alpha=1.0):\n    torch.endorm_leak = True\n" + WRONG
    _zero(leak, reason="wrong answer")
    sees_it = GOOD.replace("    z = logits / alpha\n", "    z = logits / alpha\n"
                           "    if getattr(torch, 'endorm_leak', False):\n        return logits.amax(-1)\n")
    first = retest.template()
    assert _judged(sees_it)["result"] == "passed"
    assert retest.template() is first            # one template, several children

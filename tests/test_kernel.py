"""The lessons' kernel: ``%%needs N.M`` skips a cell with one line while the exercise is
unfinished and is invisible once it is done; an unfinished exercise's check fails with its
one-line message. Run in a real Jupyter kernel (nbclient), as a learner's notebook is."""
from __future__ import annotations

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from endorm_mini.course import checks, nbrun
from endorm_mini.course import needs as kernel

STUB = 'def soft_value(logits, alpha=1.0):\n    raise NotImplementedError("exercise 4.1")'
ANSWER = "def soft_value(logits, alpha=1.0):\n    return alpha * torch.logsumexp(logits / alpha, -1)"
SETUP = "import torch\nfrom endorm_mini.grading import check, setup_notebook\nSETUP = setup_notebook()"
NEEDS = "%%needs 4.1\nvalue = soft_value(torch.zeros(2))\nround(float(value), 4)"


def _run(sources: list[str], allow_errors=True):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    if allow_errors:
        for cell in nb.cells:
            cell.metadata["tags"] = ["raises-exception"]
    nbrun.run(nb, ".", timeout=120, env=nbrun.kernel_env(CUDA_VISIBLE_DEVICES=""))
    return nb.cells


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _errors(cell) -> list:
    return [o for o in cell.outputs if o.output_type == "error"]


def test_unfinished_exercise_one_line_check_and_skipped_cell():
    setup, stub, chk, needs = _run([SETUP, STUB, 'check("4.1", soft_value)', NEEDS])
    [error] = _errors(chk)
    assert error.ename == "ExerciseNotImplemented"
    assert len(error.traceback) == 1 and "✘ 4.1 soft_value: not implemented yet" in error.traceback[0]
    assert not _errors(needs), needs.outputs
    assert _text(needs).strip() == kernel.skip_line(["4.1 soft_value"])
    assert not any(o.output_type == "execute_result" for o in needs.outputs)


def test_needs_is_invisible_once_the_exercise_is_written():
    *_, needs, after = _run([SETUP, ANSWER, NEEDS, "value"])
    assert not _errors(needs) and _text(needs) == ""
    [result] = [o for o in needs.outputs if o.output_type == "execute_result"]
    assert result.data["text/plain"] == str(round(float(__import__("math").log(2)), 4))
    assert not _errors(after)          # the cell's assignments happened


def test_needs_does_not_hide_a_real_error():
    """Once the exercise is written the cell's own errors show as usual, at its own line."""
    *_, needs = _run([SETUP, ANSWER, "%%needs 4.1\nx = 1\nundefined_name"])
    [error] = _errors(needs)
    assert error.ename == "NameError"
    assert any("line 3" in line for line in error.traceback), error.traceback


def test_needs_with_an_undefined_function_or_unknown_exercise():
    _, missing, unknown = _run([SETUP, "%%needs 4.1 4.2\n1", "%%needs 99.9\n1"])
    assert _text(missing).strip() == kernel.skip_line(["4.1 soft_value", "4.2 endogenous_rewards"])
    [error] = _errors(unknown)
    assert "99.9" in error.evalue


def test_a_stopped_run_all_stops_at_the_unfinished_check():
    """Without allow-errors (Run all), the one-line check is still an error."""
    with pytest.raises(CellExecutionError, match="not implemented yet"):
        _run([SETUP, STUB, 'check("4.1", soft_value)', "1"], allow_errors=False)


WRONG = "def soft_value(logits, alpha=1.0):\n    return logits.max(-1).values"


def test_a_wrong_answer_or_a_failed_claim_is_its_message_alone():
    """Not a 23-line traceback through the grading module: the message, one entry."""
    _, _, chk, claimed = _run([SETUP, WRONG, 'check("4.1", soft_value)',
                               'from endorm_mini.grading import claim\n'
                               'claim("two is less than one", 2 < 1, "2 and 1")'])
    [error] = _errors(chk)
    assert error.ename == "ExerciseError"
    assert len(error.traceback) == 1 and "✘ 4.1 soft_value" in error.traceback[0], error.traceback
    [error] = _errors(claimed)
    assert error.ename == "ClaimError"
    assert len(error.traceback) == 1 and "two is less than one" in error.traceback[0]


def test_a_run_all_stops_at_a_wrong_answer_too():
    with pytest.raises(CellExecutionError, match="4.1 soft_value"):
        _run([SETUP, WRONG, 'check("4.1", soft_value)', "1"], allow_errors=False)


def test_the_unfinished_rule_is_the_stub_constant():
    ns: dict = {}
    exec(STUB, ns)
    assert checks.is_stub(ns["soft_value"], "4.1") and not checks.is_stub(ns["soft_value"], "4.2")
    assert kernel.unfinished(["4.1"], ns) == ["4.1 soft_value"]
    exec("import torch\n" + ANSWER, ns)
    assert kernel.unfinished(["4.1"], ns) == []

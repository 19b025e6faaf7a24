"""The self-check framework, build-lessons and grade, on tiny fake exercises (lesson 99)."""
from __future__ import annotations

import functools
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
import torch
from packaging.requirements import Requirement

from endorm_mini import cli, grading
from endorm_mini.course import api, build, cells, checks, judge, project
from endorm_mini.course.checks import case, exercise
from endorm_mini.grading import ExerciseError, ExerciseNotImplemented, check, compare


# ---------------------------------------------------------------- a fake exercise
def scaled_cumsum(x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
    """The fake reference: ``scale`` times the running sum over the last dimension."""
    return scale * x.cumsum(-1)


def _cases(rng):
    yield case("random [3, 4]", torch.randn(3, 4, generator=rng))
    yield case("scale 0.5, [2, 2, 5]", torch.randn(2, 2, 5, generator=rng), scale=0.5)


def good(x, scale=2.0):                      # no cumsum: it is forbidden below
    return scale * (x @ torch.ones(x.shape[-1], x.shape[-1]).triu())


@pytest.fixture
def fake():
    """Register exercise 99.1 for one test, then remove it."""
    ex = exercise("99.1", "scaled_cumsum", reference=scaled_cumsum, equation="eq. 99: y = s Σ x",
                  hint="x @ torch.ones(n, n).triu() sums the entries up to h", forbid=("cumsum",),
                  concept="a running sum: entry h adds up the entries 0 … h",
                  mistakes={"forgot the scale": lambda x, scale=2.0: good(x, 1.0)})(_cases)
    api.FAILURES.clear()
    yield ex
    checks.REGISTRY.pop("99.1", None)
    api.FAILURES.clear()


def test_right_answer_passes_with_exactly_one_line(fake, capsys):
    check("99.1", good)
    assert capsys.readouterr().out == "✔ 99.1 scaled_cumsum: passed\n"


@pytest.mark.parametrize("wrong, expected", [
    (lambda x, scale=2.0: good(x, 1.0),
     ["random [3, 4]", "output[0, 0]: got", "expected", "likely mistake: forgot the scale",
      "hint: a running sum", "re-read: eq. 99"]),
    (lambda x, scale=2.0: scale * x.sum(-1), ["shape [3], expected [3, 4]"]),
    (lambda x, scale=2.0: good(x, scale).long(), ["dtype torch.int64"]),
    (lambda x, scale=2.0: None, ["forget to `return`"]),
    (lambda x, scale=2.0: good(x, scale) if scale == 2.0 else good(x, scale) + 1e-3,
     ["scale 0.5, [2, 2, 5]", "scale=0.5", "20 of 20 entries differ"]),
    (lambda x, scale=2.0: 1 / 0, ["your function raised on case", "ZeroDivisionError"]),
    (lambda x, scale=2.0: (good(x, scale), x), ["expected a tensor", "got tuple"]),
    (lambda x, scale=2.0: (x.mul_(1.5), good(x / 1.5, scale))[1], ["changed its input in place"]),
])
def test_wrong_answers_are_rejected_with_what_differed(fake, wrong, expected):
    with pytest.raises(ExerciseError) as err:
        check("99.1", wrong)
    for text in expected:
        assert text in str(err.value)


def test_hints_are_tiered_concept_first_code_only_after_repeated_failures(fake):
    """1st failed check: the concept, no code; 2nd: the answer's shape too; 3rd: the code
    hint. The likely mistake and the equation come every time; a pass starts over."""
    wrong = lambda x, scale=2.0: good(x, 1.0)                   # noqa: E731
    messages = []
    for _ in range(3):
        with pytest.raises(ExerciseError) as err:
            check("99.1", wrong)
        messages.append(str(err.value))
    first, second, third = messages
    for message in messages:
        assert "likely mistake: forgot the scale" in message and "re-read: eq. 99" in message
        assert "hint: a running sum" in message
    assert "torch.ones" not in first and "triu" not in first and "answer on this case is" not in first
    assert "code-level help after 2 more failed checks" in first
    assert "the answer on this case is Tensor[3, 4] float32" in second and "triu" not in second
    assert "in code (3 failed checks of 99.1): x @ torch.ones(n, n).triu()" in third
    check("99.1", good)                                          # a pass resets the count
    with pytest.raises(ExerciseError) as err:
        check("99.1", wrong)
    assert "triu" not in str(err.value)


def test_an_exercise_without_a_concept_still_hides_its_code_at_first(fake):
    checks.REGISTRY["99.1"].concept = ""
    with pytest.raises(ExerciseError) as err:
        check("99.1", lambda x, scale=2.0: good(x, 1.0))
    assert "hint: say in words what each symbol" in str(err.value) and "triu" not in str(err.value)


CONCEPT_LESSONS = (0, 3, 5, 6, 10)   # lessons whose every exercise states its idea; the others fall back


@pytest.mark.parametrize("lesson", CONCEPT_LESSONS)
def test_first_tier_hints_state_an_idea_without_code(lesson):
    """A concept hint is words and maths, not code: no library call, no indexing, no assignment."""
    code = re.compile(r"torch\.|np\.|\w\[|\w\(\w*=|\bdim\b|==|\.sum\(|\bdef\b")
    assert code.search(checks.get("6.4").hint), "the code detector must catch a code-level hint"
    for ex in checks.lesson_exercises(lesson):
        assert ex.concept, f"{ex.id} has no concept hint"
        assert not code.search(ex.concept), f"{ex.id}'s concept hint reads like code: {ex.concept}"


def test_returning_an_input_is_rejected_and_named(fake):
    with pytest.raises(ExerciseError, match="returned its input `x` unchanged"):
        check("99.1", lambda x, scale=2.0: x)


def _indirect(x, scale=2.0):
    return scaled_cumsum(x, scale)


@pytest.mark.parametrize("cheat", [
    lambda x, scale=2.0: scaled_cumsum(x, scale),                # the reference itself
    _indirect,                                                   # from a helper
    functools.partial(scaled_cumsum),                            # a partial of it
    lambda x, scale=2.0: fake_ref_alias(x, scale),               # bound earlier under another name
    lambda x, scale=2.0: scale * torch.cumsum(x, -1),            # a forbidden library function
    lambda x, scale=2.0: scale * x.cumsum(dim=-1),               # ... as a tensor method
])
def test_calling_the_reference_or_a_forbidden_function_is_rejected(fake, cheat):
    with pytest.raises(ExerciseError, match="calls `.*(scaled_cumsum|cumsum)`, which does the work"):
        check("99.1", cheat)


fake_ref_alias = scaled_cumsum


def test_a_wrong_answer_that_also_cheats_reports_both(fake):
    with pytest.raises(ExerciseError, match=r"(?s)output.*also: your function calls `cumsum`, which is off limits"):
        check("99.1", lambda x, scale=2.0: x.cumsum(-1))


def test_the_stub_says_not_implemented(fake):
    def stub(x, scale=2.0):
        raise NotImplementedError("exercise 99.1")
    with pytest.raises(ExerciseNotImplemented, match="99.1 scaled_cumsum: not implemented yet") as err:
        check("99.1", stub)
    assert isinstance(err.value, NotImplementedError) and isinstance(err.value, AssertionError)


def test_bad_calls_of_check(fake):
    with pytest.raises(ExerciseError, match="pass the function itself"):
        check("99.1", good(torch.ones(2)))
    with pytest.raises(ValueError, match="lesson98"):
        check("98.1", good)
    with pytest.raises(ValueError, match="must look like"):
        exercise("4", "x", reference=good)


def test_check_is_deterministic_and_leaves_the_global_rng_alone(fake):
    state = torch.get_rng_state()
    messages = []
    for _ in range(2):
        api.FAILURES.clear()                  # the same tier of hint both times
        with pytest.raises(ExerciseError) as err:
            check("99.1", lambda x, scale=2.0: good(x, scale) + torch.rand(()))
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert torch.equal(state, torch.get_rng_state())


def test_compare_reports_the_first_difference_and_respects_tolerances():
    want = (torch.tensor([1.0, 2.0, float("nan"), float("inf")]), torch.tensor([1, 2]), 3.0)
    assert compare(want, want) is None
    near = (want[0] + 1e-7, torch.tensor([1, 2]), 3.0 + 1e-7)
    assert compare(near, want) is None
    far = (torch.tensor([1.0, 2.5, float("nan"), float("inf")]), want[1], 3.0)
    assert compare(far, want, names=("values", "ids")) == \
        "values[1]: got 2.5, expected 2 (1 of 4 entries differ; rtol=1e-05, atol=1e-06)"
    assert "ids[0]" in compare((want[0], torch.tensor([0, 2]), 3.0), want, names=("values", "ids"))
    assert "output[2]" in compare((want[0], want[1], 3.1), want)
    assert "expected an integer" in compare(2.0, 2)
    assert compare(torch.tensor(3.0), 3.0) is None                      # 0-d tensor for a number
    assert "keys" in compare({"a": 1}, {"a": 1, "b": 2})
    assert compare({"a": torch.ones(2)}, {"a": torch.ones(2)}) is None


# ---------------------------------------------------------------- every registered check
LESSON_CHECKS = sorted(m.name for m in pkgutil.iter_modules(checks.__path__) if m.name.startswith("lesson"))


@pytest.mark.parametrize("module", LESSON_CHECKS)
def test_every_registered_check_is_sound(module):
    """For every lesson's checks: no case's answer equals one of its inputs, returning an
    input or calling the reference is refused, and every listed mistake is caught with
    its explanation."""
    name = importlib.import_module(f"{checks.__name__}.{module}").__name__
    exercises = [ex for ex in checks.REGISTRY.values() if ex.module == name]
    assert exercises, f"{name} registers no exercise"
    for ex in exercises:
        _assert_sound(ex)


def _assert_sound(ex):
    cases = list(ex.cases(torch.Generator().manual_seed(ex.seed)))
    assert len(cases) >= 2, "a check needs random cases and edge cases"
    for c in cases:
        want = judge.call(ex.reference, c, ex.seed)[0]
        for value in (*c.args, *c.kwargs.values()):
            assert compare(want, value, ex.rtol, ex.atol) is not None, \
                f"{ex.id}: on case {c.label!r} an input equals the answer"
    with pytest.raises(ExerciseError):
        check(ex.id, lambda *args, **kwargs: (*args, *kwargs.values())[0])
    with pytest.raises(ExerciseError, match="which does the work"):
        check(ex.id, lambda *args, **kwargs: ex.reference(*args, **kwargs))
    for explanation, wrong in ex.mistakes.items():
        with pytest.raises(ExerciseError) as err:
            check(ex.id, wrong)
        assert f"likely mistake: {explanation}" in str(err.value)


# ---------------------------------------------------------------- build-lessons
SETUP = grading.setup_cell("CPU is enough")
EXERCISE = '''# EXERCISE 99.1 · scaled_cumsum · ★☆☆ · 5 min
class Helper:
    def scaled_cumsum(self, x, scale=2.0):
        # BEGIN SOLUTION
        y = x @ torch.ones(x.shape[-1], x.shape[-1]).triu()
        return scale * y
        # END SOLUTION

def scaled_cumsum(x, scale=2.0):
    kept = True  # outside the markers: kept
    # BEGIN SOLUTION
    return Helper().scaled_cumsum(x, scale)
    # END SOLUTION'''


def _master(cells=None) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}, "colab": {"provenance": []}, "widgets": {}}
    nb.cells = cells if cells is not None else [
        nbformat.v4.new_markdown_cell("# 99 · a fake lesson"),
        nbformat.v4.new_code_cell(SETUP, execution_count=1, outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="setup\n")]),
        nbformat.v4.new_code_cell(EXERCISE, metadata={"colab": {"id": "x"}, "tags": ["keep-me"]}),
        nbformat.v4.new_code_cell('check("99.1", scaled_cumsum)', execution_count=3),
        nbformat.v4.new_code_cell("print('answer')", metadata={"tags": ["solution-only"]}),
        nbformat.v4.new_markdown_cell("notes", metadata={"tags": ["instructor"]}),
    ]
    return nb


def test_lesson_from_solution_stubs_regions_and_strips_the_rest(fake):
    lesson = build.lesson_from_solution(_master(), "99_fake.ipynb")
    assert [c.cell_type for c in lesson.cells] == ["markdown", "code", "code", "code"]
    assert set(lesson.metadata) == {"kernelspec", "language_info", "endorm_mini"}
    assert lesson.metadata.endorm_mini.lesson == 99 and lesson.metadata.endorm_mini.exercises == ["99.1"]
    code = [c for c in lesson.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert code[1].metadata == {"tags": ["keep-me"]}
    assert code[1].source == '''# EXERCISE 99.1 · scaled_cumsum · ★☆☆ · 5 min
class Helper:
    def scaled_cumsum(self, x, scale=2.0):
        raise NotImplementedError("exercise 99.1")

def scaled_cumsum(x, scale=2.0):
    kept = True  # outside the markers: kept
    raise NotImplementedError("exercise 99.1")'''
    assert code[2].source == 'check("99.1", scaled_cumsum)'


@pytest.mark.parametrize("edit, message", [
    (lambda nb: nb.cells.pop(1), "first code cell must be the setup cell"),
    (lambda nb: setattr(nb.cells[2], "source", EXERCISE.replace("# EXERCISE 99.1", "# ex")),
     "exactly one '# EXERCISE N.M' header"),
    (lambda nb: setattr(nb.cells[2], "source", EXERCISE.replace("# END SOLUTION", "", 1)), "nested"),
    (lambda nb: setattr(nb.cells[2], "source", EXERCISE + "\n# END SOLUTION"), "without"),
    (lambda nb: nb.cells.pop(3), "needs a check('99.1', ...) in a later cell"),
    (lambda nb: nb.cells.insert(2, nb.cells.pop(3)), "needs a check('99.1', ...) in a later cell"),
    (lambda nb: setattr(nb.cells[3], "source", 'check("99.1", f)\ncheck("99.1", g)'), "one check() per cell"),
    (lambda nb: setattr(nb.cells[2], "source", EXERCISE.replace("99.1", "98.1", 1)),
     "does not belong to lesson 99"),
])
def test_broken_masters_are_refused_with_the_rule(fake, edit, message):
    nb = _master()
    edit(nb)
    with pytest.raises(ValueError, match=re.escape(message)):
        build.lesson_from_solution(nb, "99_fake.ipynb")


def test_a_master_must_match_its_registered_exercises(fake):
    exercise("99.2", "other", reference=good)(_cases)
    try:
        with pytest.raises(ValueError, match=r"differ from those in endorm_mini/course/checks/lesson99.py"):
            build.lesson_from_solution(_master(), "99_fake.ipynb")
    finally:
        checks.REGISTRY.pop("99.2")


def test_build_lessons_check_write_and_orphans(fake, tmp_path, capsys):
    sol, les = tmp_path / "solutions", tmp_path / "lessons"
    sol.mkdir()
    nbformat.write(_master(), sol / "99_fake.ipynb")
    args = ["build-lessons", "--solutions", str(sol), "--lessons", str(les)]
    assert cli.main(args + ["--check"]) == 1 and not les.exists()       # --check writes nothing
    assert "out of date:" in capsys.readouterr().out
    assert cli.main(args) == 0 and (les / "99_fake.ipynb").exists()
    assert cli.main(args + ["--check"]) == 0                            # now up to date
    text = (les / "99_fake.ipynb").read_text()
    assert build.build_lessons(sol, les) == [] and (les / "99_fake.ipynb").read_text() == text
    (les / "98_gone.ipynb").write_text(text)
    assert cli.main(args + ["--check"]) == 1
    assert "98_gone.ipynb (no master" in capsys.readouterr().out
    cli.main(args)
    assert not (les / "98_gone.ipynb").exists()
    broken = _master()
    broken.cells.pop(1)                                                  # no setup cell
    nbformat.write(broken, sol / "97_broken.ipynb")
    (les / "99_fake.ipynb").unlink()
    assert cli.main(args) == 2                                          # refused, in one line
    assert "97_broken.ipynb: the first code cell must be the setup cell" in capsys.readouterr().err
    assert (les / "99_fake.ipynb").exists() and not (les / "97_broken.ipynb").exists()


def _built(fake, tmp_path):
    sol, les = tmp_path / "solutions", tmp_path / "lessons"
    sol.mkdir()
    nbformat.write(_master(), sol / "99_fake.ipynb")
    build.build_lessons(sol, les)
    return sol, les, les / "99_fake.ipynb"


def test_build_lessons_never_discards_a_learners_work(fake, tmp_path, capsys):
    sol, les, lesson = _built(fake, tmp_path)
    nb = nbformat.read(lesson, as_version=4)
    nb.cells[2].source = nb.cells[2].source.replace('raise NotImplementedError("exercise 99.1")',
                                                    "return x.cumsum(0) * scale  # mine")
    nbformat.write(nb, lesson)
    mine = lesson.read_text()
    args = ["build-lessons", "--solutions", str(sol), "--lessons", str(les)]
    assert cli.main(args + ["--check"]) == 1
    assert "edited since it was built" in capsys.readouterr().out      # the author is told why
    assert cli.main(args) == 2 and lesson.read_text() == mine            # refused, work kept
    assert "refused to overwrite" in capsys.readouterr().err
    assert cli.main(args + ["--force"]) == 0                             # replaced, backed up
    backups = list((les / cells.BACKUPS).glob("99_fake.*.ipynb"))
    assert len(backups) == 1 and backups[0].read_text() == mine
    assert "# mine" not in lesson.read_text() and cli.main(args + ["--check"]) == 0
    nb = nbformat.read(lesson, as_version=4)                             # running it = work too
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="setup\n")]
    nbformat.write(nb, lesson)
    assert build.edited_since_built(lesson)
    nbformat.write(nbformat.read(sol / "99_fake.ipynb", as_version=4), les / "98_old.ipynb")
    with pytest.raises(ValueError, match="98_old.ipynb"):                # an edited orphan too
        build.build_lessons(sol, les)
    assert (les / "98_old.ipynb").exists()


def test_the_drift_check_still_catches_a_forgotten_rebuild(fake, tmp_path):
    sol, les, lesson = _built(fake, tmp_path)
    master = nbformat.read(sol / "99_fake.ipynb", as_version=4)
    master.cells[0].source += " (revised)"
    nbformat.write(master, sol / "99_fake.ipynb")
    assert build.build_lessons(sol, les, check=True) == [str(lesson)]
    assert build.build_lessons(sol, les) == [str(lesson)]            # unedited: rebuilt
    assert "(revised)" in lesson.read_text()


def test_start_copies_lessons_and_never_overwrites(fake, tmp_path, capsys):
    _, les, lesson = _built(fake, tmp_path)
    work = tmp_path / "my-lessons"
    args = ["start", "99", "--dir", str(work), "--lessons", str(les)]
    assert cli.main(args) == 0 and (work / "99_fake.ipynb").read_text() == lesson.read_text()
    assert "copied" in capsys.readouterr().out
    (work / "99_fake.ipynb").write_text("my work")
    assert cli.main(args) == 0 and (work / "99_fake.ipynb").read_text() == "my work"
    assert "never overwritten" in capsys.readouterr().out
    assert cli.main(["start", "all", "--dir", str(tmp_path / "w2"), "--lessons", str(les)]) == 0
    assert (tmp_path / "w2" / "99_fake.ipynb").exists()
    assert cli.main(["start", "7", "--dir", str(work), "--lessons", str(les)]) == 2
    assert "no lesson '7'" in capsys.readouterr().err


def test_start_without_dir_finds_the_workspace(tmp_path, monkeypatch):
    """No nested my-lessons/my-lessons, no copies inside the checkout's lessons/."""
    from endorm_mini.course.workspace import default_workspace
    root = Path(__file__).resolve().parents[1]
    inside = tmp_path / "my-lessons" / "sub"
    inside.mkdir(parents=True)
    assert default_workspace(tmp_path) == tmp_path.resolve() / "my-lessons"
    assert default_workspace(tmp_path / "my-lessons") == tmp_path.resolve() / "my-lessons"
    assert default_workspace(inside) == tmp_path.resolve() / "my-lessons"
    assert default_workspace(root / "lessons") == root / "my-lessons"
    assert default_workspace(root) == root / "my-lessons"
    monkeypatch.chdir(tmp_path / "my-lessons")
    les = tmp_path / "published"
    les.mkdir()
    (les / "99_fake.ipynb").write_text("{}")
    assert cli.main(["start", "--lessons", str(les)]) == 0
    assert sorted(p.name for p in (tmp_path / "my-lessons").iterdir()) == ["99_fake.ipynb", "sub"]


def test_a_learners_copy_links_to_the_hosted_notes(tmp_path):
    """``../docs/paper.md`` does not open from a copy (none outside the checkout; above the
    folder Jupyter serves inside it): the copy links to the hosted notes, anchors kept."""
    from endorm_mini.course import paper, workspace

    les = tmp_path / "lessons"
    les.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "See [docs/paper.md §5](../docs/paper.md) and [eq. 12](../docs/paper.md#eq-12).")])
    nbformat.write(nb, les / "04_x.ipynb")
    [(away, _)] = workspace.start(["4"], tmp_path / "elsewhere" / "my-lessons", les)
    text = nbformat.read(away, as_version=4).cells[0].source
    assert "../docs/paper.md" not in text
    assert f"]({paper.notes_url()})" in text and f"]({paper.notes_url()}#eq-12)" in text
    assert "../docs/paper.md" in (les / "04_x.ipynb").read_text()       # the lesson itself kept


def test_build_lessons_writes_the_repository_address_everywhere(fake, tmp_path, monkeypatch):
    """The host sets [project.urls] Repository once; build-lessons rewrites every notebook's
    install line (masters too, outputs kept) and the README's Colab links from it."""
    sol, les, lesson = _built(fake, tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"[open]({project.colab_url('lessons/99_fake.ipynb')})\n")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n\n[project.urls]\n'
                         'Repository = "https://github.com/someone/their-course"\n')
    monkeypatch.setattr(project, "PYPROJECT", pyproject)
    assert build.build_lessons(sol, les, check=True) == [
        f"{sol / '99_fake.ipynb'} (repository address changed)", f"{readme} (repository address changed)",
        str(lesson)]
    build.build_lessons(sol, les)
    spec = "endorm-mini[colab] @ git+https://github.com/someone/their-course"
    master = nbformat.read(sol / "99_fake.ipynb", as_version=4)
    assert spec in master.cells[1].source and master.cells[1].outputs       # outputs kept
    assert spec in lesson.read_text() and "endorm-mini/endorm-mini" not in lesson.read_text()
    assert readme.read_text() == "[open](https://colab.research.google.com/github/someone/" \
                                 "their-course/blob/main/lessons/99_fake.ipynb)\n"
    assert build.build_lessons(sol, les, check=True) == []


def test_readme_has_an_open_in_colab_link_for_every_lesson():
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    for lesson in sorted((root / "lessons").glob("[0-9][0-9]_*.ipynb")):
        assert project.colab_url(f"lessons/{lesson.name}") in readme, lesson.name


def test_setup_notebook_picks_device_and_model(monkeypatch, capsys):
    for var in ("ENDORM_MINI_MODEL", "ENDORM_MINI_DTYPE", "ENDORM_MINI_DATA", "ENDORM_MINI_BRANCH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert grading.setup_notebook() == grading.Setup("cpu", grading.CPU_MODEL, None, None, False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    setup = grading.setup_notebook(gpu_model="Qwen/X")
    assert setup == grading.Setup("cuda", "Qwen/X", None, None, True)
    device, model = setup          # the first cell of a notebook built before SETUP existed
    assert (device, model) == ("cuda", "Qwen/X")
    assert capsys.readouterr().out.splitlines() == [
        f"endorm-mini setup: device=cpu · MODEL={grading.CPU_MODEL} · seed=0 · local",
        "endorm-mini setup: device=cuda · MODEL=Qwen/X · seed=0 · local"]
    assert f'"{project.install_spec()}"' in SETUP
    owner_repo = project.repository_url().removeprefix("https://github.com/")
    assert project.colab_url("lessons/x.ipynb") == \
        f"https://colab.research.google.com/github/{owner_repo}/blob/main/lessons/x.ipynb"


def test_setup_cell_installs_the_package_on_colab_only(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    namespace = {}
    exec(SETUP, namespace)
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", project.install_spec()]]
    assert namespace["MODEL"] == grading.CPU_MODEL and namespace["check"] is check
    assert capsys.readouterr().out.endswith("· Colab\n")
    monkeypatch.delitem(sys.modules, "google.colab")
    exec(SETUP, {})
    assert len(calls) == 1                                   # no install when local
    # The install line names this project and an extra it defines.
    requirement = Requirement(project.install_spec())
    tomllib = pytest.importorskip("tomllib")                 # Python ≥ 3.11
    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert requirement.name == meta["name"] and requirement.extras == {"colab"}
    assert "colab" in meta["optional-dependencies"] and requirement.url.startswith("git+https://")


# ---------------------------------------------------------------- endorm-mini grade
FAKE_CHECKS = '''
import torch
from endorm_mini.course.checks import case, exercise
def scaled_cumsum(x, scale=2.0):
    return scale * x.cumsum(-1)
def _cases(rng):
    yield case("random [3, 4]", torch.randn(3, 4, generator=rng))
for i in range(1, 5):
    exercise(f"99.{i}", f"fn{i}", reference=scaled_cumsum)(_cases)
'''


UNDERSTANDING_CELL = """## Check your understanding

**1.** Why?

- (a) one
- (b) two

<details><summary>Answer</summary>

**(a)** one. Because.

</details>

**2.** And why not?

<details><summary>Answer</summary>

**(b)** two.

</details>"""


def test_grade_counts_the_understanding_questions_and_scores_none():
    from endorm_mini.course import grade
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[md("# 99 · fake"), code("x = 1"), md(UNDERSTANDING_CELL),
                                         md("## Further reading\n\n**1.** not a question")])
    assert grade.understanding_questions(nb) == 2
    assert grade.understanding_questions(nbformat.v4.new_notebook(cells=[md("# no questions")])) == 0
    rows = [grade.Row("99.1", "fn1", "passed", ""), grade.Row("99.2", "fn2", "failed", "✘ wrong")]
    report = grade.GradeReport("nb.ipynb", 99, rows, [], understanding=2)
    assert report.points == 1
    table = grade.table([report])
    ungraded = [r for r in table if r["exercise"] == "understanding"]
    assert ungraded == [{"student_file": "nb.ipynb", "lesson": 99, "exercise": "understanding",
                         "status": "ungraded", "points": 0, "message": "2 questions, answers in the notebook",
                         "similarity": ""}]
    total = next(r for r in table if r["exercise"] == "total")
    assert total["status"] == "1/2" and total["points"] == 1           # the questions count for nothing
    assert not [r for r in grade.table([report._replace(understanding=0)]) if r["exercise"] == "understanding"]


def test_every_master_asks_understanding_questions_grade_can_count():
    from endorm_mini.course import grade
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "solutions").glob("*.ipynb")):
        assert 3 <= grade.understanding_questions(nbformat.read(path, as_version=4)) <= 6, path.name


def test_an_untouched_lesson_gets_no_note_about_its_exercises():
    """The published lessons list their exercises in the notebook's order (3.6 stands before
    3.3): no lesson gets a note for that; a list with another exercise in it does."""
    from endorm_mini.course import grade
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "lessons").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        lesson, expected, notes = grade._expected_exercises(nb, path)
        assert expected and notes == [], (path.name, notes)
    nb.metadata["endorm_mini"]["exercises"] = expected[:-1] + ["99.9"]
    assert "graded on the latter" in grade._expected_exercises(nb, path)[2][0]


def test_grade_scores_each_exercise_on_a_colab_saved_notebook(tmp_path, capsys, monkeypatch):
    """One grade covers every result: passed, failed, not attempted, missing; plus a failing
    unrelated cell and Colab metadata. The fake checks live in a module on PYTHONPATH, so that
    grade's fresh re-test process registers them too."""
    (tmp_path / "fake_checks99.py").write_text(FAKE_CHECKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    importlib.import_module("fake_checks99")
    try:
        code = nbformat.v4.new_code_cell
        cells = [code(SETUP), code("import torch\nimport fake_checks99")]
        bodies = {"99.1": "2 * x.cumsum(-1)", "99.2": "x", "99.3": 'raise NotImplementedError("exercise 99.3")'}
        for eid, body in bodies.items():
            n = eid[-1]
            cells += [code(f"# EXERCISE {eid}\ndef fn{n}(x, scale=2.0):\n    return {body}"
                           if "raise" not in body else f"# EXERCISE {eid}\ndef fn{n}(x, scale=2.0):\n    {body}"),
                      code(f'check("{eid}", fn{n})')]
        cells.append(code("undefined_name"))
        cells.append(nbformat.v4.new_markdown_cell(UNDERSTANDING_CELL))
        nb = _master(cells)
        for c in nb.cells:
            c.metadata = {"colab": {"base_uri": "https://localhost:8080/"}, "outputId": "abc"}
        path = tmp_path / "Copy of 99_fake.ipynb"
        path.write_text(json.dumps(nb))
        marks = tmp_path / "marks.json"
        assert cli.main(["grade", str(path), "--timeout", "120", "--json", str(marks), "--csv", str(tmp_path / "m.csv")]) == 1
        out = capsys.readouterr().out
        assert json.loads(marks.read_text())[0]["understanding"] == {"questions": 2, "status": "ungraded", "points": 0}
        assert "understanding,ungraded,0,2 questions, answers in the notebook" in (tmp_path / "m.csv").read_text().replace('"', "")
        rows = {line.split()[0]: line for line in out.splitlines() if line.strip().startswith("99.")}
        assert rows["99.1"].split()[-1] == "passed"
        assert rows["99.2"].split()[-1] == "failed"
        assert "✘ 99.2 fn2: wrong answer on case 'random [3, 4]'" in out
        assert "your function returned its input `x` unchanged" in out
        assert rows["99.3"].endswith("not attempted")
        assert rows["99.4"].endswith("missing")
        assert "also: 1 later cell(s) failed downstream of unfinished or failing exercises (code cells 8)" in out
        assert "understanding: 2 questions, ungraded — answers in the notebook" in out
        assert "score: 1/4 exercises passed" in out
    finally:
        for i in range(1, 5):
            checks.REGISTRY.pop(f"99.{i}", None)
        sys.modules.pop("fake_checks99", None)


def test_grade_reports_a_missing_notebook_in_one_line(capsys):
    assert cli.main(["grade", "no/such.ipynb"]) == 2
    assert "no notebook at no/such.ipynb" in capsys.readouterr().err


def test_compare_reports_an_array_where_a_string_was_expected():
    import numpy as np

    from endorm_mini.grading import compare

    assert "ndarray" in compare(np.array([1, 2]), "abc", 1e-5, 1e-8, "output")
    assert compare(np.bool_(True), True, 1e-5, 1e-8, "output") is None


def test_compare_does_not_accept_any_number_for_an_infinite_answer():
    from endorm_mini.grading import compare

    assert compare(3.0, float("inf"), 1e-5, 1e-8, "output") is not None
    assert compare(float("inf"), float("inf"), 1e-5, 1e-8, "output") is None


def test_setup_notebook_overrides_from_the_environment(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    env = {"ENDORM_MINI_MODEL": str(model), "ENDORM_MINI_DTYPE": "BF16", "ENDORM_MINI_DATA": str(tmp_path),
           "ENDORM_MINI_BRANCH": "gpu"}
    setup = grading.setup_notebook(environ=env)
    assert setup == grading.Setup("cpu", str(model), "bf16", str(tmp_path), True)
    assert setup.rehearsal and setup.half == "bf16"
    assert capsys.readouterr().out == (
        f"endorm-mini setup: device=cpu · branch=gpu (ENDORM_MINI_BRANCH) · MODEL={model} (ENDORM_MINI_MODEL) "
        f"· dtype=bf16 (ENDORM_MINI_DTYPE) · data={tmp_path} (ENDORM_MINI_DATA) · seed=0 · local\n")
    run_dir = Path(setup.run_dir("09_gsm8k"))               # a rehearsal never reuses a real run's folder
    assert run_dir.is_dir() and run_dir != Path(setup.run_dir("09_gsm8k"))
    # Each variable alone; MODEL replaces the model of either branch; empty means unset.
    assert grading.setup_notebook(cpu_model="tiny-arith", environ={"ENDORM_MINI_MODEL": "tiny-domains"}).model \
        == "tiny-domains"
    assert grading.setup_notebook(environ={"ENDORM_MINI_MODEL": "org/name", "ENDORM_MINI_DTYPE": ""}) \
        == grading.Setup("cpu", "org/name", None, None, False)
    gpu = grading.setup_notebook(environ={"ENDORM_MINI_BRANCH": "gpu"})
    assert gpu.model == grading.GPU_MODEL and gpu.gpu_branch and gpu.half == "bf16"
    assert gpu.run_dir("x") != gpu.run_dir("x")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)     # a T4
    on_gpu = grading.setup_notebook(environ={})
    assert on_gpu.gpu_branch and not on_gpu.rehearsal and on_gpu.half == "fp16"
    assert on_gpu.run_dir("06_rmbench") == str(Path("runs/06_rmbench/Qwen2.5-0.5B-Instruct"))
    assert grading.setup_notebook(environ={"ENDORM_MINI_DTYPE": "fp32"}).half == "fp32"
    cpu = grading.setup_notebook(environ={"ENDORM_MINI_BRANCH": "cpu"})
    assert cpu.device == "cuda" and not cpu.gpu_branch and cpu.model == grading.CPU_MODEL


@pytest.mark.parametrize("env, message", [
    ({"ENDORM_MINI_DTYPE": "int8"}, "ENDORM_MINI_DTYPE='int8': use one of fp32, bf16, fp16"),
    ({"ENDORM_MINI_BRANCH": "tpu"}, "ENDORM_MINI_BRANCH='tpu': use one of auto, cpu, gpu"),
    ({"ENDORM_MINI_DATA": "/no/such/folder"}, "ENDORM_MINI_DATA='/no/such/folder': not a folder"),
    ({"ENDORM_MINI_MODEL": "tiny-nope"}, "ENDORM_MINI_MODEL='tiny-nope': no such zoo model"),
    ({"ENDORM_MINI_MODEL": "./no/such/model"}, "ENDORM_MINI_MODEL='./no/such/model': not a zoo name"),
    ({"ENDORM_MINI_MODEL": "a b"}, "ENDORM_MINI_MODEL='a b': not a zoo name"),
])
def test_setup_notebook_refuses_bad_overrides(env, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        grading.setup_notebook(environ=env)


def test_setup_notebook_refuses_a_model_folder_without_config(tmp_path):
    with pytest.raises(ValueError, match="the folder has no config.json"):
        grading.setup_notebook(environ={"ENDORM_MINI_MODEL": str(tmp_path)})


INDEPENDENT = '''
import torch
def soft_value(logits, alpha=1.0):
    raise NotImplementedError("exercise 4.1")

def endogenous_rewards(logits, actions, alpha=1.0, terminal=None):
    f = logits.float()
    values = soft_value(f, alpha)
    if terminal is not None:
        values = values.clone()
        values[terminal.bool(), -1] = 0.0
    q = f[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    return (q - values[:, :-1]) / alpha, values, q - values[:, 1:]
'''


def test_a_check_stands_the_reference_in_for_an_unfinished_earlier_exercise(capsys):
    """Exercises are checked independently: 4.2 rests on 4.1; with 4.1 still the stub, 4.2's
    check runs on the package's soft_value (not refused as "calls the reference"), says so,
    and puts the learner's stub back; a finished but wrong 4.1 is the learner's own."""
    scope: dict = {}
    exec(INDEPENDENT, scope)
    stub = scope["soft_value"]
    check("4.2", scope["endogenous_rewards"])
    assert capsys.readouterr().out == ("✔ 4.2 endogenous_rewards: passed (with the package's "
                                       "soft_value (4.1) standing in: not finished yet)\n")
    assert scope["soft_value"] is stub
    exec("def soft_value(logits, alpha=1.0):\n    return logits.amax(-1)\n", scope)  # wrong, finished
    with pytest.raises(ExerciseError, match="4.2 endogenous_rewards: wrong answer"):
        check("4.2", scope["endogenous_rewards"])


def test_a_syntax_error_in_an_exercise_is_named_with_its_line():
    from endorm_mini.course import checks, retest
    cell = "%%time\n# EXERCISE 0.1 · soft_value\ndef soft_value(logits, alpha=1.0):\n    return logits +* 2\n"
    row = retest.retest(checks.get("0.1"), [cell], seed=0)
    assert row["result"] == "failed" and "syntax error on its line 4: invalid syntax" in row["detail"], row

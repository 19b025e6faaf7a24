"""The registry of exercise checks: one module ``lessonNN.py`` per lesson.

A lesson's checks module declares each exercise with :func:`exercise`, decorating a
function that yields the test cases (seeded random inputs and edge cases)::

    from endorm_mini import reward
    from endorm_mini.course.checks import case, exercise

    @exercise("0.1", "soft_value", reference=reward.soft_value,
              equation="the soft value (docs/paper.md §5): V(s) = α logsumexp(f(s,·)/α)",
              hint="subtract the max logit before exponentiating",
              mistakes={"forgot α": lambda logits, alpha=1.0: torch.logsumexp(logits, -1)})
    def soft_value_cases(rng):
        yield case("random logits", torch.randn(4, 7, generator=rng))

A notebook then calls ``endorm_mini.grading.check("0.1", soft_value)``, which finds the
exercise here (importing ``endorm_mini.course.checks.lesson00`` on first use) and runs it.
"""
from __future__ import annotations

import importlib
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

REGISTRY: dict[str, "Exercise"] = {}


@dataclass
class Case:
    """One input to the learner's function and the reference."""
    label: str                  # what the case probes, shown when it fails ("large logits")
    args: tuple = ()            # positional arguments
    kwargs: dict = field(default_factory=dict)


def case(label: str, *args: Any, **kwargs: Any) -> Case:
    """``case("large logits", logits, alpha=0.5)``: a labelled call of the exercise function."""
    return Case(label, args, kwargs)


@dataclass
class Exercise:
    """A learner-written function, checked against the package's reference on seeded cases."""
    id: str                      # "4.2": lesson 4, exercise 2 (matches ``# EXERCISE 4.2``)
    name: str                    # the function the learner writes, shown in messages
    reference: Callable          # the package's implementation; the learner may not call it
    cases: Callable[[Any], Iterable[Case]]  # rng (torch.Generator) -> cases; edge cases too
    equation: str = ""           # what to re-read on a failure ("eq. 12: r̂ = ...")
    hint: str = ""               # code-level help: shown by check() after repeated failures
    concept: str = ""            # the idea to use, no code: what check() shows first
    rtol: float = 1e-5           # relative tolerance of every float comparison
    atol: float = 1e-6           # absolute tolerance of every float comparison
    outputs: tuple[str, ...] = ()  # names of the returned tuple's parts, for messages
    mistakes: dict[str, Callable] = field(default_factory=dict)  # explanation -> a wrong impl
    forbid: tuple = ()           # C functions (by __name__) or Python functions not to call
    seed: int | None = None      # the cases' seed; derived from ``id`` when None
    module: str = ""             # the checks module that registered it

    def __post_init__(self):
        if self.seed is None:  # different but fixed inputs per exercise
            self.seed = zlib.crc32(self.id.encode()) % 2**31

    @property
    def lesson(self) -> int:
        return int(self.id.split(".")[0])


def exercise(exercise_id: str, name: str, reference: Callable, **options: Any):
    """Decorator: register the decorated case generator as exercise ``exercise_id``.

    ``options`` are the other :class:`Exercise` fields (equation, hint, concept, rtol,
    atol, outputs, mistakes, forbid, seed). Returns the :class:`Exercise`.
    """
    parts = exercise_id.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"exercise id must look like '4.2', got {exercise_id!r}")

    def register(cases: Callable) -> Exercise:
        ex = Exercise(exercise_id, name, reference, cases, module=cases.__module__, **options)
        old = REGISTRY.get(exercise_id)
        if old is not None and old.module != ex.module:  # a reload of the same module is fine
            raise ValueError(f"exercise {exercise_id} is registered twice: "
                             f"in {old.module} and in {ex.module}")
        REGISTRY[exercise_id] = ex
        return ex
    return register


def lesson_module(lesson: int) -> str:
    return f"{__name__}.lesson{lesson:02d}"


def _order(ex: Exercise) -> tuple[int, ...]:
    return tuple(int(p) for p in ex.id.split("."))


def lesson_exercises(lesson: int) -> list[Exercise]:
    """The exercises of lesson ``lesson`` (importing only its checks module), sorted."""
    try:
        importlib.import_module(lesson_module(lesson))
    except ModuleNotFoundError as err:
        if err.name != lesson_module(lesson):  # a missing module is no exercises; a bug inside it is a bug
            raise
    return sorted((ex for ex in REGISTRY.values() if ex.lesson == lesson), key=_order)


def get(exercise_id: str) -> Exercise:
    """The registered exercise ``exercise_id``, importing its lesson's checks on first use."""
    if exercise_id not in REGISTRY:
        lesson = exercise_id.split(".")[0]
        if not lesson.isdigit():
            raise ValueError(f"exercise id must look like '4.2', got {exercise_id!r}")
        lesson_exercises(int(lesson))
    if exercise_id not in REGISTRY:
        raise ValueError(f"no check is registered for exercise {exercise_id!r} "
                         f"(expected in {lesson_module(int(exercise_id.split('.')[0]))})")
    return REGISTRY[exercise_id]


def is_stub(fn: Any, exercise_id: str) -> bool:
    """Is ``fn`` still exercise ``exercise_id``'s stub? Its ``raise NotImplementedError("exercise
    N.M")`` leaves that string among the function's constants; a learner's answer drops it.
    The one rule for "unfinished", shared by checks, grading and the notebooks' ``%%needs``."""
    code = getattr(fn, "__code__", None)
    return code is not None and f"exercise {exercise_id}" in code.co_consts

"""Kept for learners' copies of lessons made before the worlds moved: ``from endorm_mini import
tasks`` still works. New code imports :mod:`endorm_mini.worlds`, :mod:`endorm_mini.verifiers`
and :mod:`endorm_mini.sampling`."""
from .sampling import generate
from .verifiers import arith_accuracy, is_correct, math_correct
from .worlds import *  # noqa: F403 - the old module's names, all of them
from .worlds import __all__ as _worlds

__all__ = [*_worlds, "arith_accuracy", "generate", "is_correct", "math_correct"]

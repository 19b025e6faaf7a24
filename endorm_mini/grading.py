"""What a notebook imports: ``from endorm_mini.grading import check, setup_notebook, claim``.

Every lesson and every learner's copy imports these names from here, so they stay here; the
course machinery itself is :mod:`endorm_mini.course`.
"""
from .course.api import ClaimError, ExerciseError, ExerciseNotImplemented, check, claim
from .course.compare import compare
from .course.setup import CPU_MODEL, GPU_MODEL, Setup, read_overrides, setup_cell, setup_notebook

__all__ = ["CPU_MODEL", "GPU_MODEL", "ClaimError", "ExerciseError", "ExerciseNotImplemented",
           "Setup", "check", "claim", "compare", "read_overrides", "setup_cell", "setup_notebook"]

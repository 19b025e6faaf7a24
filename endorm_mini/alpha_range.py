"""α, the soft-Q temperature (π̂ = softmax(f̂/α), docs/paper.md eq. 10): the range where the
endogenous reward means what the paper says, shared by the reward, the run settings and the
commands. Outside it a run still goes (α is a free parameter), but with a warning and the
reason. Standard library only: the commands check α before loading anything.
"""
from __future__ import annotations

import math
import warnings

LOW, HIGH = 1e-3, 1e3


class AlphaWarning(UserWarning):
    """α is outside ``LOW … HIGH``: the reward is dominated by something else than preference."""


def alpha_problem(alpha: float) -> str | None:
    """Why ``alpha`` gives a meaningless reward, or ``None`` when it is in ``LOW … HIGH``."""
    if not math.isfinite(alpha) or alpha <= 0 or LOW <= alpha <= HIGH:
        return None  # non-finite or ≤ 0 values are refused elsewhere, not warned about
    if alpha > HIGH:
        return (f"α = {alpha:g} is above {HIGH:g}: π̂ = softmax(f̂/α) is then almost uniform, "
                "each token costs about α·log(vocabulary size), and the shorter response "
                "wins whatever it says (preferences flip)")
    return (f"α = {alpha:g} is below {LOW:g}: π̂ = softmax(f̂/α) is then almost one-hot, every "
            "token but the model's first choice gets log π̂ ≈ −(logit gap)/α, and one such token "
            "outweighs the rest of the response")


def warn_alpha(alpha: float, stacklevel: int = 3) -> None:
    """An :class:`AlphaWarning` with the reason when ``alpha`` is outside ``LOW … HIGH``."""
    if (problem := alpha_problem(alpha)) is not None:
        warnings.warn(problem, AlphaWarning, stacklevel=stacklevel)

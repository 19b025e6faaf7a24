"""argparse types shared by the commands (a low layer: the command modules import it, and
``cli`` imports them): a bad value is refused by argparse, in one line naming the flag."""
from __future__ import annotations

import argparse
import math


def positive_float(text: str) -> float:
    """A finite number > 0 (``--alpha``); ``nan``, ``inf``, 0 and below are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number ≥ 1 (``--steps``, ``--limit``); 0, negatives and fractions are refused."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {text!r}")
    return value

"""Comparing a learner's answer with the reference's: one line saying where and how they differ."""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np
import torch


def describe(x: Any) -> str:
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return f"{type(x).__name__}{list(x.shape)} {str(x.dtype).replace('torch.', '')}"
    return repr(x) if x is None or isinstance(x, (bool, numbers.Number, str)) else type(x).__name__


def _num(x: torch.Tensor) -> str:
    return f"{x.item():.6g}" if x.is_floating_point() else str(x.item())


def _compare_tensors(got: Any, want: Any, rtol: float, atol: float, path: str) -> str | None:
    got = torch.from_numpy(got) if isinstance(got, np.ndarray) else got
    want = torch.from_numpy(want) if isinstance(want, np.ndarray) else want
    if not isinstance(got, torch.Tensor):
        return f"{path}: expected a tensor of shape {list(want.shape)}, got {describe(got)}"
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
            return f"{path}: expected a {type(want).__name__} of {len(want)} items, got {describe(got)}" \
                + (f" of {len(got)} items" if isinstance(got, (tuple, list)) else "")
        for i, (g, w) in enumerate(zip(got, want)):
            sub = names[i] if i < len(names) else f"{path}[{i}]"
            if (problem := compare(g, w, rtol, atol, sub)) is not None:
                return problem
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return f"{path}: expected a dict with keys {sorted(want)}, got {describe(got)}" \
                + (f" with keys {sorted(got)}" if isinstance(got, dict) else "")
        return next((p for k in want if (p := compare(got[k], want[k], rtol, atol,
                                                      f"{path}[{k!r}]")) is not None), None)
    if dataclasses.is_dataclass(want) and not isinstance(want, type):
        if type(got) is not type(want):
            return f"{path}: expected a {type(want).__name__}, got {describe(got)}"
        return next((p for f in dataclasses.fields(want) if (p := compare(
            getattr(got, f.name), getattr(want, f.name), rtol, atol, f"{path}.{f.name}")) is not None), None)
    if isinstance(want, numbers.Number) and not isinstance(want, bool):
        if getattr(got, "ndim", None) == 0:  # a 0-d tensor or array for a number is fine
            got = got.item()
        if not isinstance(got, numbers.Number) or isinstance(got, bool):
            return f"{path}: expected a number, got {describe(got)}"
        if isinstance(want, numbers.Integral) and not isinstance(got, numbers.Integral):
            return f"{path}: expected an integer, got {got!r}"
        if got == want or (math.isfinite(want) and abs(got - want) <= atol + rtol * abs(want)):
            return None
        return f"{path}: got {got:.6g}, expected {want:.6g} (rtol={rtol:g}, atol={atol:g})"
    try:
        equal = bool(got == want)
    except (ValueError, TypeError, RuntimeError):  # e.g. an array for a string: no single truth
        equal = False
    return None if equal else f"{path}: got {describe(got) if hasattr(got, 'shape') else repr(got)}, expected {want!r}"

"""The one device argument every entry point takes."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; anything else is passed to ``torch.device``.

    A device this machine lacks (``"cuda"`` without CUDA, ``"cuda:3"`` with one GPU,
    ``"mps"`` off Apple silicon) or an unknown name raises ``ValueError`` listing the
    devices that exist, before any model is loaded or moved.
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if isinstance(device, torch.device):
        resolved = device
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"unknown device {device!r}; devices here: {', '.join(available_devices())}") \
                from None
    problem = _unavailable(resolved)
    if problem:
        raise ValueError(f"device {str(device)!r} is not available: {problem}; "
                         f"devices here: {', '.join(available_devices())}")
    return resolved


def available_devices() -> list[str]:
    """The device names that work on this machine, ``"auto"`` first."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names.append("cuda")
        if count > 1:
            names += [f"cuda:{i}" for i in range(count)]
    if _mps_available():
        names.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        names.append("xpu")
    return names


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def _unavailable(device: torch.device) -> str | None:
    """Why ``device`` cannot be used here, or ``None`` when it can."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
                return f"this torch ({torch.__version__}) is built without CUDA"
            return "torch sees no CUDA GPU"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA GPU(s)"
        return None
    if device.type == "mps":
        return None if _mps_available() else "MPS (Apple silicon GPU) is not available here"
    backend = getattr(torch, device.type, None)   # xpu, hpu, mtia, ...: their own is_available()
    if device.type not in ("cpu", "meta") and callable(getattr(backend, "is_available", None)) \
            and not backend.is_available():
        return f"torch sees no {device.type} device"
    return None


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``None`` keeps the model's own dtype; names like ``"bf16"`` map to torch dtypes."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}") from None


def real_model_threads() -> int:
    """CPU threads for a real (~100M-parameter) model: ``OMP_NUM_THREADS`` when it is set, else
    up to two. Two pay off for such a model on a laptop's cores; a runner that sets one
    thread per process (the test suite runs notebooks side by side) keeps one: two threads
    in each of two busy processes on two cores wait on each other (lesson 06 ran 3× slower)."""
    import os

    wanted = os.environ.get("OMP_NUM_THREADS", "")
    if wanted.isdigit() and int(wanted) > 0:
        return int(wanted)
    return min(2, os.cpu_count() or 1)

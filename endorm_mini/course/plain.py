"""Plain data between the judge and the sandbox (:mod:`.retest` and :mod:`.sandbox`).

What the learner's function returns crosses to the judge as plain data only: a tree of
tagged lists whose leaves are tensors, numbers, strings and ``None``, written with
``torch.save`` and read back with ``torch.load(weights_only=True)``, which refuses any
pickled class or function. :func:`decode` then checks every tag and rebuilds only numpy
arrays and the package's own dataclasses and named tuples (never ``endorm_mini.course``).
Messages are length-prefixed bytes on a pipe.
"""
from __future__ import annotations

import dataclasses
import importlib
import io
import os
import struct
from typing import Any

import numpy as np
import torch

DEPTH = 8          # deeper structures are cut (an answer is never that deep)
MAX_MESSAGE = 1 << 30


class Opaque:
    """Something the sandbox could not send as plain data (a function, a model, ...)."""

    def __init__(self, what: str):
        self.what = what

    def __repr__(self):
        return f"<{self.what}>"

    def __eq__(self, other):
        return isinstance(other, Opaque) and other.what == self.what

    __hash__ = None


def encode(value: Any, depth: int = 0, attrs: bool = False) -> list:
    """``value`` as tagged plain data. ``attrs``: other objects by their attributes (to see
    whether inputs changed), else as :class:`Opaque`."""
    if depth > DEPTH:
        return ["opaque", "a structure nested too deeply"]
    if isinstance(value, torch.Tensor):
        return ["tensor", value.detach().as_subclass(torch.Tensor).clone()]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufc":
            return ["ndarray", torch.from_numpy(np.ascontiguousarray(value).copy())]
        return ["ndarray-list", encode(value.tolist(), depth + 1, attrs)]
    if isinstance(value, np.generic):
        return ["npscalar", str(value.dtype), value.item()] if value.dtype.kind in "biuf" else \
            ["opaque", type(value).__name__]
    if callable(value) and not isinstance(value, type):
        return ["opaque", "a function"]
    if value is None or type(value) in (bool, int, float, str, complex):
        return ["value", value]
    if isinstance(value, (bool, int, float, str)):      # subclasses: the plain value
        return ["value", (bool if isinstance(value, bool) else int if isinstance(value, int)
                          else float if isinstance(value, float) else str)(value)]
    cls = type(value)
    where = f"{cls.__module__}:{cls.__qualname__}"
    if isinstance(value, tuple) and hasattr(cls, "_fields"):
        return ["record", where, [[f, encode(getattr(value, f), depth + 1, attrs)] for f in cls._fields]]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ["record", where, [[f.name, encode(getattr(value, f.name), depth + 1, attrs)]
                                  for f in dataclasses.fields(value)]]
    if isinstance(value, (list, tuple)):
        return ["list" if isinstance(value, list) else "tuple", [encode(v, depth + 1, attrs) for v in value]]
    if isinstance(value, dict):
        return ["dict", [[encode(k, depth + 1, attrs), encode(v, depth + 1, attrs)] for k, v in value.items()]]
    if attrs and hasattr(value, "__dict__") and not callable(value):
        return ["attrs", cls.__qualname__, [[k, encode(v, depth + 1, attrs)] for k, v in sorted(vars(value).items())
                                            if isinstance(k, str)]]
    return ["opaque", f"a {cls.__qualname__}"]


def _record_class(where: str):
    module, _, qualname = where.partition(":")
    if not module.startswith("endorm_mini.") or module.startswith("endorm_mini.course"):
        return None
    try:
        owner = importlib.import_module(module)
        for part in qualname.split("."):
            owner = getattr(owner, part)
    except (ImportError, AttributeError):
        return None
    ok = isinstance(owner, type) and (dataclasses.is_dataclass(owner) or
                                      (issubclass(owner, tuple) and hasattr(owner, "_fields")))
    return owner if ok else None


class BadData(ValueError):
    """What came back is not plain data."""


def decode(data: Any) -> Any:
    """The value :func:`encode` described; :class:`BadData` for anything malformed."""
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise BadData(f"not a tagged value: {type(data).__name__}")
    tag, rest = data[0], data[1:]
    if tag == "tensor" and len(rest) == 1 and type(rest[0]) is torch.Tensor:
        return rest[0]
    if tag == "ndarray" and len(rest) == 1 and type(rest[0]) is torch.Tensor:
        return rest[0].numpy()
    if tag == "ndarray-list" and len(rest) == 1:
        return np.array(decode(rest[0]), dtype=object)
    if tag == "npscalar" and len(rest) == 2 and isinstance(rest[0], str):
        try:
            return np.dtype(rest[0]).type(rest[1])
        except TypeError as err:
            raise BadData(str(err)) from None
    if tag == "value" and len(rest) == 1 and (rest[0] is None or type(rest[0]) in (bool, int, float, str, complex)):
        return rest[0]
    if tag in ("list", "tuple") and len(rest) == 1 and isinstance(rest[0], list):
        items = [decode(v) for v in rest[0]]
        return items if tag == "list" else tuple(items)
    if tag == "dict" and len(rest) == 1 and isinstance(rest[0], list):
        out = {}
        for pair in rest[0]:
            if not isinstance(pair, list) or len(pair) != 2:
                raise BadData("a malformed dict entry")
            key = decode(pair[0])
            if not isinstance(key, (bool, int, float, str, tuple, type(None))):
                raise BadData(f"a dict key of type {type(key).__name__}")
            out[key] = decode(pair[1])
        return out
    if tag in ("record", "attrs") and len(rest) == 2 and isinstance(rest[0], str) and isinstance(rest[1], list):
        fields = {}
        for pair in rest[1]:
            if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str):
                raise BadData("a malformed field")
            fields[pair[0]] = decode(pair[1])
        cls = _record_class(rest[0]) if tag == "record" else None
        if cls is not None:
            try:
                return cls(**fields)
            except TypeError:
                pass
        return {"__object__": rest[0], **fields}
    if tag == "opaque" and len(rest) == 1 and isinstance(rest[0], str):
        return Opaque(rest[0])
    raise BadData(f"an unknown or malformed tag {tag!r}")


def dumps(data: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return buffer.getvalue()


def loads(raw: bytes) -> Any:
    """Plain data only: ``weights_only`` refuses every pickled class and function."""
    try:
        return torch.load(io.BytesIO(raw), weights_only=True)
    except Exception as err:  # noqa: BLE001 - anything unreadable is bad data
        raise BadData(f"unreadable ({type(err).__name__})") from None


def send(fd: int, raw: bytes) -> None:
    view = memoryview(struct.pack("<Q", len(raw)) + raw)
    while view:
        view = view[os.write(fd, view):]


def receive(fd: int) -> bytes:
    """One message; ``EOFError`` when the other side has gone."""
    size = struct.unpack("<Q", _exactly(fd, 8))[0]
    if size > MAX_MESSAGE:
        raise BadData(f"a message of {size} bytes")
    return _exactly(fd, size)


def _exactly(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)

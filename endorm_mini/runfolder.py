"""An output folder a command writes a run into: writable, one command's, one run at a time.

Every command that writes a folder goes through :func:`check_writable` before any work (a
file given as the folder, or a folder it cannot write, is one line, not a traceback after
the model loaded), then writes its run inside :func:`run_folder`, which

- records which command wrote the folder (``.endorm-mini-run.json``) and refuses another
  command's folder, naming it and what is in it (``grpo --out`` on an rmbench run);
- holds a lock (``.endorm-mini.lock``, ``fcntl.flock``: the system releases it when the
  process ends, however it ends), so a second run into the same folder at the same time is
  refused at once instead of mixing its files with the first's.

A folder written before the record existed is recognised by its files (:data:`SIGNS`).
Refusals are ``ValueError`` (one line from the command line). Standard library only.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no lock (one run at a time is then up to the user)
    fcntl = None

RECORD, LOCK = ".endorm-mini-run.json", ".endorm-mini.lock"
# The files that show which command wrote a folder that has no RECORD (an older run).
SIGNS = {"rmbench": ("rewards.jsonl", "rewards.rank-0.jsonl"), "ppo": ("ppo.pt",),
         "grpo": ("checkpoint-*", "ranks"), "diagonal": ("diagonal.json",),
         "tour": ("token_rewards.png",)}


def check_writable(path, flag: str = "--out") -> Path:
    """``path`` as a ``Path`` when it is a folder this process can write in, or one it can
    make (nothing is made here); else a one-line ``ValueError`` naming ``flag``."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {path}: that is a file, not a folder; give a folder "
                         "(it is made if it does not exist)")
    existing = folder
    while not existing.exists():           # the nearest folder that exists: it makes the rest
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag} {path}: {existing} is a file, so the folder cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "cannot write in it" if existing == folder else f"cannot make it in {existing}"
        raise ValueError(f"{flag} {path}: {what} (permission denied); choose a folder of yours")
    return folder


def check_output_file(path, flag: str = "--out") -> Path:
    """``path`` as a ``Path`` when it is a file this process can write (its folder exists or
    can be made; the file itself is not made here); else a one-line ``ValueError``."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"{flag} {path}: that is a folder; give a file name")
    try:
        check_writable(target.parent, flag)
    except ValueError as err:
        why = str(err).split(": ", 1)[1]
        raise ValueError(f"{flag} {path}: it cannot be written: its folder {target.parent}: "
                         f"{why}") from None
    return target


def owner(folder: Path) -> str | None:
    """The command that wrote ``folder``: its record, else guessed from its files."""
    record = folder / RECORD
    if record.is_file():
        try:
            return json.loads(record.read_text(encoding="utf-8"))["command"]
        except (ValueError, KeyError, TypeError):
            return None
    for command, patterns in SIGNS.items():
        if any(any(folder.glob(pattern)) for pattern in patterns):
            return command
    return None


def contents(folder: Path, most: int = 4) -> str:
    """A few of the folder's entries, for a refusal (``rewards.jsonl, run.json, ...``)."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()
                   if p.name not in (RECORD, LOCK))
    return ", ".join(names[:most]) + (f", ... ({len(names)} in all)" if len(names) > most else "")


def claim(folder: Path, command: str, flag: str = "--out") -> None:
    """Record ``command`` as the folder's writer; refuse a folder another command wrote."""
    found, held = owner(folder), contents(folder)
    if found is not None and found != command and held:
        raise ValueError(f"{flag} {folder} holds an `endorm-mini {found}` run ({held}); "
                         f"`{command}` will not write into it: choose another {flag}")
    if found != command:    # a new folder, or one a refused run left empty
        (folder / RECORD).write_text(json.dumps({"command": command}) + "\n", encoding="utf-8")


@contextlib.contextmanager
def run_folder(path, command: str, flag: str = "--out", primary: bool = True):
    """Make the folder, lock it and claim it for ``command`` for the block; yields its ``Path``.

    ``primary=False`` (the other processes of a ``torchrun`` run, which share the folder the
    first process locked) only checks that the folder can be written.
    """
    folder = check_writable(path, flag)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    if not primary:
        yield folder
        return
    with _locked(folder, command, flag, made):
        yield folder


@contextlib.contextmanager
def _locked(folder: Path, command: str, flag: str, made: bool):
    """Hold the folder's lock and claim it for the block; a folder made for a run that was
    refused before writing anything is removed again (only by the process that holds it)."""
    with open(folder / LOCK, "a+", encoding="utf-8") as lock:
        if fcntl is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.seek(0)
                who = lock.read().strip() or "another process"
                raise ValueError(f"{flag} {folder} is in use by another run ({who}): wait for "
                                 f"it to end or choose another {flag}") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"endorm-mini {command}, process {os.getpid()}\n")
        lock.flush()
        try:
            claim(folder, command, flag)
            yield folder
        except BaseException:
            if made and not contents(folder):   # refused before writing anything
                for name in (RECORD, LOCK):
                    (folder / name).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise

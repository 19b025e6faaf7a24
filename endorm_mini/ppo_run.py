"""The files and signals of a PPO run, kept out of the algorithm's file (``ppo.train`` calls them).

With ``checkpoint_dir`` set, a run keeps two files there:

- ``log.csv``: one row of statistics per update, rewritten (atomically) after every update;
- ``ppo.pt``: weights, optimizer, grad scaler, RNG states and the history, saved every
  ``checkpoint_every`` updates, after the last one, and when SIGINT (Ctrl-C) or SIGTERM
  stops the run. It also records the run's identity: its configuration, a fingerprint of
  the reference model and one of the prompts.

Nothing is lost and nothing is silently mixed: a new run refuses a folder that already
holds a run; ``resume`` refuses a log with no checkpoint to go on from (the updates after
it would be redone and the log overwritten) and a checkpoint of another run, naming what
differs. A stop signal lets the update in progress finish, saves, then raises
:class:`RunStopped`; a second Ctrl-C stops at once (back to the last checkpoint).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import threading
import warnings

import torch

LOG, CHECKPOINT = "log.csv", "ppo.pt"
# Settings a resumed run may change: they do not change what is learned.
RESUMABLE = ("steps", "device", "progress", "checkpoint_dir", "checkpoint_every",
             "gradient_checkpointing")


class RunStopped(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run; the checkpoint of the last update was saved first."""

    def __init__(self, signum: int, step: int, folder: str | None):
        self.signum, self.step, self.folder = signum, step, folder
        where = f"; {CHECKPOINT} and {LOG} are in {folder}" if folder else ""
        name = signal.Signals(signum).name
        super().__init__(f"{name} stopped the run after update {step}{where}")


# ---------------------------------------------------------------- identity of a run
def model_fingerprint(model) -> dict:
    """Class, name, size and a float64 checksum of the weights: another model shows here."""
    total = torch.zeros((), dtype=torch.float64)
    n = 0
    for p in model.parameters():
        total += p.detach().double().abs().sum().cpu()
        n += p.numel()
    name = getattr(getattr(model, "config", None), "_name_or_path", "")
    return {"class": type(model).__name__, "name": name, "parameters": n,
            "checksum": float(total)}


def run_identity(config, ref_model, prompts) -> dict:
    """What a resumed run must share with the run it continues."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in RESUMABLE}
    text = json.dumps(list(prompts), default=str, ensure_ascii=False)
    prompts_id = {"count": len(prompts), "sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}
    return {**settings, "reference model": model_fingerprint(ref_model), "prompts": prompts_id}


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def differences(old: dict, new: dict) -> list[str]:
    """``"key: old → new"`` for every entry that differs."""
    return [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in {**old, **new}
            if not _same(old.get(k), new.get(k))]


# ---------------------------------------------------------------- the folder
class RunFiles:
    """``log.csv`` and ``ppo.pt`` in ``config.checkpoint_dir``; nothing is written without one."""

    def __init__(self, config, identity: dict | None = None):
        self.folder, self.every = config.checkpoint_dir, config.checkpoint_every
        self.steps = config.steps
        self.identity = identity
        self.log = os.path.join(self.folder, LOG) if self.folder else None
        self.checkpoint = os.path.join(self.folder, CHECKPOINT) if self.folder else None

    def _logged_updates(self) -> int | None:
        if not os.path.exists(self.log):
            return None
        with open(self.log, newline="") as f:
            return max(sum(1 for _ in csv.reader(f)) - 1, 0)

    def check(self, resume: bool) -> bool:
        """Refuse what would lose or mix a run (before anything loads); True: a checkpoint
        to resume from."""
        if not self.folder:
            if resume:
                raise ValueError("resume=True needs checkpoint_dir: the folder of the run to "
                                 "go on with")
            return False
        logged = self._logged_updates()
        if os.path.exists(self.checkpoint) and not resume:
            raise ValueError(f"{self.folder} already holds a run ({CHECKPOINT}, {logged or 0} "
                             f"updates in {LOG}): go on with it with resume=True (--resume), or "
                             "choose another checkpoint_dir (--out); nothing was overwritten")
        if not os.path.exists(self.checkpoint):
            if logged is not None:
                raise ValueError(f"{self.log} holds {logged} updates but there is no {CHECKPOINT} "
                                 f"to resume from (saved every {self.every} updates): a new run "
                                 f"would overwrite it; move it away or choose another "
                                 "checkpoint_dir (--out)")
            return False
        return True

    def start(self, resume: bool, parts: dict, generators, device) -> tuple[int, list]:
        """``(first update, history)``: 0 and [] for a new run, the checkpoint's to resume."""
        if not self.check(resume):
            return 0, []
        state = torch.load(self.checkpoint, map_location=device)
        if "identity" not in state:
            warnings.warn(f"{self.checkpoint} was written by an older endorm-mini and does not "
                          "record its configuration: it cannot be checked against this run's")
        elif changed := differences(state["identity"], self.identity):
            raise ValueError(f"{self.checkpoint} is a run with other settings "
                             f"({'; '.join(changed)}): resume it with the same ones, or start a "
                             "new run in another checkpoint_dir (--out)")
        if state["step"] > self.steps:
            raise ValueError(f"{self.checkpoint} is at update {state['step']}, past steps="
                             f"{self.steps}: ask for steps ≥ {state['step']} to go on")
        for name, part in parts.items():
            part.load_state_dict(state[name])
        for g, rng in zip(generators, state["rng"]):
            g.set_state(rng.cpu())
        print(f"resuming at {state['step']}/{self.steps} from {self.checkpoint}", flush=True)
        return state["step"], state["history"]

    def after_update(self, history: list, parts: dict, generators, stop_signal: int = 0):
        """Rewrite the log; save a checkpoint on schedule, after the last update, and when a
        stop signal came (then raise :class:`RunStopped`)."""
        if not self.folder:
            return
        os.makedirs(self.folder, exist_ok=True)
        with open(self.log + ".tmp", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
        os.replace(self.log + ".tmp", self.log)  # atomic: a kill mid-write keeps the old log
        step = history[-1]["step"]
        if step % self.every and step != self.steps and not stop_signal:
            return
        state = {name: part.state_dict() for name, part in parts.items()}
        state.update(step=step, history=history, rng=[g.get_state() for g in generators],
                     identity=self.identity)
        torch.save(state, self.checkpoint + ".tmp")
        os.replace(self.checkpoint + ".tmp", self.checkpoint)  # a kill mid-save keeps the last
        if stop_signal:
            raise RunStopped(stop_signal, step, self.folder)


# ---------------------------------------------------------------- SIGINT, SIGTERM
class StopFlag:
    """Set by the first SIGINT/SIGTERM: ``signum`` (0 until then)."""
    signum = 0


@contextlib.contextmanager
def stop_signals(enabled: bool = True):
    """Turn SIGINT and SIGTERM into a :class:`StopFlag` for the block (main thread only).

    The first signal only sets the flag (the caller finishes its step and saves); a second
    SIGINT raises ``KeyboardInterrupt`` at once. Outside the main thread nothing changes.
    """
    flag = StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.signum = signum
        print(f"\n{signal.Signals(signum).name}: the update in progress finishes, the checkpoint "
              "is saved, then the run stops (Ctrl-C again: stop now, back to the last checkpoint)",
              file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, old in previous.items():
            signal.signal(s, old)

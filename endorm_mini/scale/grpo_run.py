"""The files of an ``endorm-mini grpo`` run, kept out of the command's file.

``--out`` holds TRL's checkpoints (``checkpoint-N/``: weights, optimizer, RNG states and the
trainer state with its log history) and, written by the first process only:

- ``run.json``: the settings that decide what is learned (a resumed run must share them);
- ``log.csv``: one row of metrics per GRPO step, rewritten (atomically) after every step from
  the trainer's log history, so a resumed run's log goes on from its checkpoint's;
- ``base.json``: the base model's held-out accuracy (greedy and sampled), measured before the
  first step, so that a run killed and resumed still reports it;
- ``grpo.png`` and ``summary.json`` at the end (accuracy before → after, steps, processes).

Every process writes ``ranks/rank-R.json``: how many completions it scored with each reward
function. Under ``torchrun`` / ``accelerate launch`` each process scores its own shard of the
completions (TRL gathers the rewards afterwards), and these files show it.

As with ``endorm-mini ppo`` nothing is lost and nothing is silently mixed: a folder that holds
a run is refused without ``--resume``; ``--resume`` with no checkpoint, with other settings, or
with ``--steps`` not past the checkpoint is refused, naming why.
"""
from __future__ import annotations

import collections
import contextlib
import csv
import json
import os
import time

from tqdm.auto import tqdm

from ..ppo_run import differences

RUN, LOG, PLOT, SUMMARY, RANKS = "run.json", "log.csv", "grpo.png", "summary.json", "ranks"
BASE = "base.json"
# log.csv column <- TRL's log key (the columns present in the run are written, in this order)
COLUMNS = {
    "reward": "reward",                               # the weighted sum GRPO trains on
    "reward_std": "reward_std",
    "accuracy": "rewards/correct/mean",               # the verifier on the rollouts
    "endogenous": "rewards/endogenous/mean",          # eq. 12's total of the reference
    "kl": "kl",                                       # only when --beta > 0
    "entropy": "entropy",
    "loss": "loss",
    "completion_length": "completions/mean_length",
    "clipped_ratio": "completions/clipped_ratio",     # cut at --max-completion-length
    "learning_rate": "learning_rate",
    "seconds": "step_time",
}
PANELS = (("reward", "reward per completion (GRPO's)"),
          ("accuracy", "accuracy of the rollouts"),
          ("completion_length", "completion length (tokens)"))


def last_checkpoint(out: str) -> str | None:
    """The newest ``checkpoint-N`` folder TRL saved in ``out`` (``None``: there is none)."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(out) if os.path.isdir(out) else None


def checkpoint_step(folder: str) -> int:
    with open(os.path.join(folder, "trainer_state.json")) as f:
        return int(json.load(f)["global_step"])


def check_folder(out: str, resume: bool, settings: dict, steps: int) -> str | None:
    """Refuse what would lose or mix a run, before anything loads; the checkpoint to resume
    from (``None`` for a new run)."""
    checkpoint = last_checkpoint(out)
    log = os.path.join(out, LOG)
    if not resume:
        if checkpoint or os.path.exists(log):
            held = os.path.basename(checkpoint) if checkpoint else LOG
            raise ValueError(f"{out} already holds a run ({held}): go on with it with --resume, "
                             "or choose another --out; nothing was overwritten")
        return None
    if checkpoint is None:
        raise ValueError(f"--resume: no checkpoint-N folder in {out} to go on from")
    step = checkpoint_step(checkpoint)
    if steps <= step:
        raise ValueError(f"--resume: {checkpoint} is at step {step}; ask for --steps > {step}")
    path = os.path.join(out, RUN)
    if os.path.exists(path):
        with open(path) as f:
            changed = differences(json.load(f), settings)
        if changed:
            raise ValueError(f"--resume: {out} is a run with other settings "
                             f"({'; '.join(sorted(changed))}): resume it with the same ones")
    return checkpoint


def write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1)
    os.replace(path + ".tmp", path)  # atomic: a kill mid-write keeps the old file


def log_rows(log_history: list[dict]) -> list[dict]:
    """One row per training step of TRL's log history, our column names."""
    rows = []
    for entry in log_history:
        if "reward" not in entry:        # the end-of-training summary, evaluation entries
            continue
        row = {"step": entry["step"]}
        for column, key in COLUMNS.items():
            if key in entry:
                row[column] = entry[key]
        rows.append(row)
    return rows


def write_log(out: str, rows: list[dict]) -> None:
    """``log.csv``, rewritten whole: a kill mid-write keeps the previous one."""
    if not rows:
        return
    names = ["step"] + [c for c in COLUMNS if any(c in r for r in rows)]
    path = os.path.join(out, LOG)
    with open(path + ".tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".tmp", path)


def plot_log(out: str, rows: list[dict]) -> None:
    """``grpo.png``: the panels of ``PANELS`` that the run logged, against the step."""
    from ..viz import plot_history

    panels = [(k, label) for k, label in PANELS if rows and all(k in r for r in rows)]
    plot_history(rows, os.path.join(out, PLOT), panels=panels, xlabel="GRPO step")


class RankTally:
    """Counts the completions this process scored, per reward function."""

    def __init__(self):
        self.scored = collections.Counter()

    def wrap(self, name: str, reward_function):
        """``reward_function`` under ``name`` (TRL logs ``rewards/NAME/mean``), counted."""
        def scored(prompts, completions, completion_ids, **kwargs):
            rewards = reward_function(prompts=prompts, completions=completions,
                                      completion_ids=completion_ids, **kwargs)
            self.scored[name] += len(rewards)
            return rewards
        scored.__name__ = name
        scored.inner = reward_function
        return scored

    def write(self, out: str, rank: int, world_size: int, first_step: int, last_step: int):
        write_json(os.path.join(out, RANKS, f"rank-{rank}.json"),
                   {"rank": rank, "world_size": world_size, "first_step": first_step,
                    "last_step": last_step, "completions_scored": dict(self.scored)})


def run_log_callback(out: str):
    """A ``TrainerCallback``: a progress bar and ``log.csv`` after every step (first process)."""
    from transformers import TrainerCallback

    class RunLog(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="GRPO",
                                unit="step")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero:
                return
            rows = log_rows(state.log_history)
            write_log(out, rows)
            if self.bar is not None and rows:
                shown = {k: f"{rows[-1][k]:.3f}" for k in ("reward", "accuracy") if k in rows[-1]}
                self.bar.set_postfix(shown, refresh=False)
                self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return RunLog()


@contextlib.contextmanager
def profiled():
    """``{name: [seconds, …]}`` of TRL's own profiling blocks while the ``with`` block runs
    (TRL times them for wandb/mlflow/trackio only): ``transformers.generate``, each reward
    function by its name, ``_prepare_inputs`` (a step's generation and scoring),
    ``compute_loss``. ``step_costs`` turns them into what a step costs."""
    from trl.extras.profiling import ProfilingContext

    times = collections.defaultdict(list)
    original = ProfilingContext.__exit__

    def timed_exit(self, *exc):
        if self._start_time is not None:   # TRL names them "GRPOTrainer.<name>": the name kept
            times[self.name.split(".", 1)[-1]].append(time.perf_counter() - self._start_time)
        return original(self, *exc)

    ProfilingContext.__exit__ = timed_exit
    try:
        yield times
    finally:
        ProfilingContext.__exit__ = original


def step_costs(times: dict, step_seconds: list[float], rewards: tuple[str, ...]) -> list[dict]:
    """Per GRPO step, seconds of ``generate`` (the rollouts), ``reward`` (the reward functions
    ``rewards``) and ``update`` (the rest of TRL's ``step_time``: the policy's log-probs, the loss
    and its backward; the optimizer's step comes after TRL's clock stops), from ``profiled``'s
    times and TRL's logged ``step_time``s.
    One generation and one scoring per step (TRL's default ``steps_per_generation``)."""
    costs = []
    for i, total in enumerate(step_seconds):
        generate = times["transformers.generate"][i]
        reward = sum(times[name][i] for name in rewards)
        costs.append({"generate": generate, "reward": reward,
                      "update": total - times["_prepare_inputs"][i], "total": total})
    return costs

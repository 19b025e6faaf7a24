"""``endorm-mini rmbench`` split across the processes of ``torchrun`` / ``accelerate launch``.

Both launchers start N copies of the command and tell each who it is in the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). With
``WORLD_SIZE`` > 1 the command runs :func:`run_rmbench_sharded` instead of
``bench.runner.run_rmbench``:

1. every process selects the same items (the loader and ``--limit`` are deterministic) and
   takes its shard, the items whose index in that selection is its ``RANK`` modulo
   ``WORLD_SIZE``; on CUDA it scores on the GPU of its ``LOCAL_RANK``;
2. each appends its records to its own file, ``DIR/rewards.rank-R.jsonl``, flushed line by
   line; after a kill, a rerun repairs each shard (a torn last line cut off, malformed lines
   set aside, as ``rewards.jsonl`` is) and scores only what no file in ``DIR`` holds yet,
   whatever the number of processes before;
3. when every process is done, rank 0 merges ``rewards.jsonl`` and all shards into
   ``rewards.jsonl`` in the original item order (``bench.runner.merge``) and writes the
   summary with the single-process code (``bench.runner.write_summary``): the shards stay,
   each a part of the merged file. The file formats live in ``bench.runner``; this module
   only runs the processes.

The table equals a single-process run's to the last digit: every reward is one call of the
method on one item's six responses, so the batch a response is scored in is the same
whichever process scores it, and the summary is computed from the same records in the same
order. (Bit-equal given the same kernels: same device type, dtype and number of CPU threads;
``torchrun`` sets ``OMP_NUM_THREADS=1`` when it is unset.)

The processes meet three times (a barrier before and after reading what is done, and one
gather when all are done) through ``torch.distributed`` on gloo: only a few Python objects
cross, no tensor, so gloo serves on GPU machines too, needs no device, and waits as long
as :attr:`ProcessGroup.timeout_min` says (nccl's watchdog would end a wait of a rank that
finished its shard minutes before the slowest one).

``--device-map auto`` (:func:`load_spread`) is the other way beyond one GPU: one process,
one model spread over all GPUs (then CPU, then disk) by accelerate's big-model loading. The
two do not combine: every process would spread its own copy over the same GPUs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from tqdm.auto import tqdm

from ..bench.rmbench import item_key
from ..bench.runner import (check_meta, merge, open_run, parse_records, read_records, score_items,
                            shard_path, shard_paths, write_summary)

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def world_size(environ=None) -> int:
    """``WORLD_SIZE`` as the launchers set it; 1 when it is not set (a plain run)."""
    environ = os.environ if environ is None else environ
    return _env_int(environ, "WORLD_SIZE", "1")


def _env_int(environ, name: str, default: str | None = None) -> int:
    value = environ.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number (torchrun and accelerate launch set "
                         f"it), got {value!r}") from None


@dataclass
class ProcessGroup:
    """Who this process is among those ``torchrun`` / ``accelerate launch`` started."""

    rank: int
    """This process's index among all processes, 0 … world_size − 1 (``RANK``)."""
    world_size: int
    """How many processes share the items (``WORLD_SIZE``)."""
    local_rank: int
    """This process's index on its machine: the GPU it uses (``LOCAL_RANK``)."""
    timeout_min: float = 24 * 60.0
    """How long a process waits for the others (the slowest shard) before giving up."""

    def __post_init__(self):
        if self.world_size < 1:
            raise ValueError(f"WORLD_SIZE must be ≥ 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"RANK must be in 0 … {self.world_size - 1}, got {self.rank}")
        if self.local_rank < 0:
            raise ValueError(f"LOCAL_RANK must be ≥ 0, got {self.local_rank}")

    @classmethod
    def from_env(cls, environ=None) -> "ProcessGroup":
        """The group the launcher described in the environment (a missing name is named)."""
        environ = os.environ if environ is None else environ
        missing = [name for name in ENV if name not in environ]
        if missing:
            raise ValueError(f"a multi-process run needs {', '.join(missing)} in the environment; "
                             "start it with torchrun or accelerate launch")
        return cls(rank=_env_int(environ, "RANK"), world_size=_env_int(environ, "WORLD_SIZE"),
                   local_rank=_env_int(environ, "LOCAL_RANK"))

    def shard(self, items: list) -> list:
        """This process's items: those whose index is its rank modulo the world size."""
        return list(items)[self.rank::self.world_size]

    def device(self, requested: str = "auto") -> str:
        """``auto`` / ``cuda`` → this process's GPU, ``cuda:LOCAL_RANK`` (made the current
        device), when CUDA is here; ``cpu`` (or ``auto`` without CUDA) → the CPU. One GPU named
        for all processes is refused."""
        import torch

        if requested not in ("auto", "cuda"):
            if requested.startswith("cuda"):
                raise ValueError(f"--device {requested}: in a multi-process run every process "
                                 "would use that one GPU; use --device cuda (each its "
                                 "LOCAL_RANK's)")
            return requested
        if not torch.cuda.is_available():
            if requested == "cuda":
                raise ValueError("--device cuda: torch sees no CUDA GPU here")
            return "cpu"
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise ValueError(f"LOCAL_RANK {self.local_rank} but this machine has {count} CUDA "
                             "GPU(s): start at most that many processes per machine")
        # Its GPU becomes the current one too, so nothing of this process lands on GPU 0.
        torch.cuda.set_device(self.local_rank)
        return f"cuda:{self.local_rank}"

    def log(self, message: str) -> None:
        """One line on stdout, naming the process."""
        print(f"[rank {self.rank}/{self.world_size}] {message}", flush=True)


def _connect(group: ProcessGroup):
    """``torch.distributed`` on gloo (see the module doc), joined unless the caller already
    did; returns (module, whether we joined it, and so leave it)."""
    import torch.distributed as dist

    if dist.is_initialized():
        if dist.get_world_size() != group.world_size or dist.get_rank() != group.rank:
            raise ValueError(f"the running process group (rank {dist.get_rank()} of "
                             f"{dist.get_world_size()}) is not the environment's "
                             f"(rank {group.rank} of {group.world_size})")
        return dist, False
    dist.init_process_group("gloo", rank=group.rank, world_size=group.world_size,
                            timeout=timedelta(minutes=group.timeout_min))
    return dist, True


def _meet(collective, *args, **kwargs):
    """A ``torch.distributed`` collective; a peer that stopped (an error, a kill) becomes one
    line here instead of gloo's traceback (the launcher then stops every process)."""
    try:
        return collective(*args, **kwargs)
    except RuntimeError:   # gloo: "Connection closed by peer", a timeout, ...
        raise ValueError("another process stopped while this one waited for it (its own "
                         "message says why); a rerun goes on from every shard") from None


def run_rmbench_sharded(items, method, out_dir, group: ProcessGroup, meta: dict | None = None,
                        limit: int | None = None, system: str | None = None,
                        skipped: list[str] | None = None, skip_errors: bool = False,
                        progress: bool = True, limit_per_domain: int | None = None):
    """``bench.runner.run_rmbench`` as one of ``group.world_size`` processes (module doc).

    Every process calls it with the same arguments. Returns the score table on rank 0, when
    the merged ``rewards.jsonl`` and the summary are written, and ``None`` on the others.
    """
    items, selected, out, meta = open_run(items, out_dir, meta, system, limit, limit_per_domain)
    check_meta(out, meta, write=False)       # every process refuses a folder of another run
    dist, joined = _connect(group)
    try:
        own = shard_path(out, group.rank)
        # Repairs before anyone reads: each process its own shard, rank 0 the merged file.
        read_records(own)
        if group.rank == 0:
            check_meta(out, meta)
            read_records(out / "rewards.jsonl")
        _meet(dist.barrier)
        done = {item_key(r) for path in [out / "rewards.jsonl"] + shard_paths(out)
                for r in parse_records(path)}
        _meet(dist.barrier)                   # nobody appends before everyone has read
        index = {item_key(item): k for k, item in enumerate(selected)}
        mine = group.shard(selected)
        todo = [item for item in mine if item_key(item) not in done]
        group.log(f"{len(todo)} of its {len(mine)} items to score into {own}")
        with open(own, "a", encoding="utf-8") as f, \
                tqdm(desc=f"rmbench ({meta.get('method', 'reward')}) rank 0", unit="item",
                     disable=not progress or group.rank != 0, initial=len(mine) - len(todo),
                     total=len(mine)) as bar:
            _, refused = score_items(todo, method, f, system, skip_errors, bar)
        group.log(f"done ({len(refused)} refused)")
        gathered = [None] * group.world_size if group.rank == 0 else None
        _meet(dist.gather_object, refused, gathered, dst=0)   # also: everyone is done
        if group.rank != 0:
            return None
        refused = {key: why for part in gathered for key, why in part.items()}
        merged = {item_key(r): r for r in merge(out, selected)}
        ordered = sorted(refused, key=index.__getitem__)   # the single run's order
        skipped = list(skipped or []) + [refused[key] for key in ordered]
        return write_summary(out, items, selected, merged, refused, skipped, meta, limit,
                             limit_per_domain)
    except ValueError as err:                 # one line that names the process
        raise ValueError(f"[rank {group.rank}/{group.world_size}] {err}") from None
    finally:
        if joined:
            dist.destroy_process_group()


def load_spread(name: str, dtype=None):
    """``(model, tokenizer)`` spread over every GPU, then the CPU, then disk, by accelerate's
    big-model loading (``from_pretrained(..., device_map="auto")``): for a model larger than
    one GPU. One process only (see the module doc)."""
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:  # transformers' device_map runs on it
        raise ValueError("--device-map auto needs the accelerate package: "
                         "pip install 'endorm-mini[scale]'")
    from ..models import load

    return load(name, dtype=dtype, device_map="auto")

"""The first cell of every notebook: pick the device, the branch and the model; seed everything.

``SETUP = setup_notebook()`` prints one line naming every override; ``setup_cell`` writes the
cell's source (``build-lessons`` keeps every notebook's first cell the same). Environment
variables ``ENDORM_MINI_*`` override its choices (see :func:`setup_notebook`).
"""
from __future__ import annotations

import dataclasses
import os
import random
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import needs, project
from .api import ClaimError, ExerciseError

CPU_MODEL = "tiny-domains"                 # a zoo checkpoint: runs anywhere in seconds
GPU_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"   # a real Hugging Face model when cuda is present


# Environment variables read by setup_notebook: run a notebook's GPU branch on another model,
# dtype or data, or on a CPU (a rehearsal: see endorm_mini.offline for stand-ins of the hub's).
ENV_MODEL, ENV_DTYPE, ENV_DATA, ENV_BRANCH = ("ENDORM_MINI_MODEL", "ENDORM_MINI_DTYPE", "ENDORM_MINI_DATA",
                                              "ENDORM_MINI_BRANCH")
DTYPE_NAMES = ("fp32", "bf16", "fp16")
BRANCHES = ("auto", "cpu", "gpu")


@dataclasses.dataclass(frozen=True)
class Setup:
    """What the first cell picked (``SETUP = setup_notebook()``).

    It unpacks as ``DEVICE, MODEL = setup_notebook()``, the first cell of notebooks built
    before SETUP existed, so a learner's older copy keeps running after an update."""
    device: str                # "cuda" or "cpu": where the notebook's tensors go
    model: str                 # MODEL: a zoo name, a local folder or a Hugging Face name
    dtype: str | None = None   # fp32 | bf16 | fp16 from ENDORM_MINI_DTYPE; None: each cell's own
    data: str | None = None    # ENDORM_MINI_DATA: a local folder replacing the hub downloads
    gpu_branch: bool = False   # run the GPU sections (RUN_REAL): on cuda, or ENDORM_MINI_BRANCH

    def __iter__(self):
        return iter((self.device, self.model))

    @property
    def half(self) -> str:
        """The half precision of the real sections: the dtype override if given, else bf16
        where the GPU has it (fp16 on a T4), and bf16 on a CPU."""
        if self.dtype is not None:
            return self.dtype
        if self.device == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16"

    @property
    def rehearsal(self) -> bool:
        """The GPU branch on a CPU (``ENDORM_MINI_BRANCH=gpu``): it runs to show the code works,
        with the real sections' sizes cut down; its numbers mean nothing."""
        return self.gpu_branch and self.device != "cuda"

    def run_dir(self, name: str) -> str:
        """Where a real section writes what a rerun resumes from: ``runs/NAME/<model folder
        name>``, so that two models never share one; in a rehearsal a fresh temporary folder
        (a random stand-in's checkpoints must never be resumed by a real run)."""
        if self.rehearsal:
            return tempfile.mkdtemp(prefix=f"endorm-mini-{name}-")
        return str(Path("runs") / name / Path(self.model.rstrip("/")).name)


def _setup_model(value: str) -> str:
    """ENDORM_MINI_MODEL checked: a zoo name, an existing model folder, or a hub-style name."""
    from .. import fetch, models

    if value in models.available() or value in fetch.SOURCES:
        return value
    path = Path(value).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(f"{ENV_MODEL}={value!r}: the folder has no config.json; point it at a saved "
                             "model (save_pretrained, or endorm_mini.offline.random_qwen2)")
        return str(path.resolve())
    if value.startswith("tiny-"):
        raise ValueError(f"{ENV_MODEL}={value!r}: no such zoo model; known: {', '.join(models.available())}")
    if value.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", value):
        raise ValueError(f"{ENV_MODEL}={value!r}: not a zoo name ({', '.join(models.available())}), an "
                         "existing folder, or a hub name like 'Qwen/Qwen2.5-0.5B-Instruct'")
    return value


def read_overrides(environ=None) -> dict[str, str]:
    """The ``ENDORM_MINI_*`` variables that are set (not empty), checked and normalised:
    ``{"model", "dtype", "data", "branch"}`` keys, each only when given. A bad value raises
    ``ValueError`` naming the variable and what it accepts."""
    environ = os.environ if environ is None else environ
    raw = {key: environ.get(var, "").strip() for key, var in
           (("model", ENV_MODEL), ("dtype", ENV_DTYPE), ("data", ENV_DATA), ("branch", ENV_BRANCH))}
    out = {}
    if raw["model"]:
        out["model"] = _setup_model(raw["model"])
    if raw["dtype"]:
        name = raw["dtype"].lower()
        name = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(name, name)
        if name not in DTYPE_NAMES:
            raise ValueError(f"{ENV_DTYPE}={raw['dtype']!r}: use one of {', '.join(DTYPE_NAMES)}")
        out["dtype"] = name
    if raw["data"]:
        data = Path(raw["data"]).expanduser()
        if not data.is_dir():
            raise ValueError(f"{ENV_DATA}={raw['data']!r}: not a folder; it holds the real sections' data "
                             "(endorm_mini.offline.DATA_LAYOUT; write_data makes a tiny one)")
        out["data"] = str(data.resolve())
    if raw["branch"]:
        if raw["branch"].lower() not in BRANCHES:
            raise ValueError(f"{ENV_BRANCH}={raw['branch']!r}: use one of {', '.join(BRANCHES)} "
                             "(gpu: run the GPU sections even without cuda)")
        out["branch"] = raw["branch"].lower()
    return out


def setup_notebook(cpu_model: str = CPU_MODEL, gpu_model: str = GPU_MODEL, seed: int = 0,
                   environ=None) -> Setup:
    """Pick the device (cuda if present, else cpu), the branch and the model; seed everything.

    Called by every notebook's first cell, after the Colab install; prints one line, which
    names every override. The GPU branch (``gpu_model``, the real sections) runs on cuda.
    Environment variables (``environ``: default ``os.environ``) override:

    - ``ENDORM_MINI_MODEL``: MODEL on either branch (a zoo name, a model folder, a hub name);
    - ``ENDORM_MINI_DTYPE``: fp32, bf16 or fp16 for the cells that choose a dtype for MODEL;
    - ``ENDORM_MINI_DATA``: a folder of the real sections' data files, read instead of the hub;
    - ``ENDORM_MINI_BRANCH``: ``gpu`` runs the GPU branch even on a CPU (a rehearsal with
      cut-down sizes), ``cpu`` the CPU branch even on cuda, ``auto`` (default) by the device.

    A bad value raises ``ValueError``.
    """
    over = read_overrides(environ)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    branch = over.get("branch", "auto")
    gpu_branch = device == "cuda" if branch == "auto" else branch == "gpu"
    model = over.get("model", gpu_model if gpu_branch else cpu_model)
    if device == "cpu":
        # ~100k-parameter models: thread hand-offs cost more than the matmuls (4× measured).
        torch.set_num_threads(1)
        # DeepSpeed, where installed (the dev extra), looks for a GPU when TRL or accelerate
        # first asks it and prints a timestamped warning that it found none: tell it instead.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    where = "Colab" if "google.colab" in sys.modules else "local"
    parts = [f"device={device}"]
    if "branch" in over:
        parts.append(f"branch={'gpu' if gpu_branch else 'cpu'} ({ENV_BRANCH})")
    parts.append(f"MODEL={model}" + (f" ({ENV_MODEL})" if "model" in over else ""))
    parts += [f"dtype={over['dtype']} ({ENV_DTYPE})"] if "dtype" in over else []
    parts += [f"data={over['data']} ({ENV_DATA})"] if "data" in over else []
    needs.install(quiet=(ExerciseError, ClaimError))  # %%needs N.M; a failed check in one line
    print(f"endorm-mini setup: {' · '.join(parts)} · seed={seed} · {where}")
    return Setup(device, model, over.get("dtype"), over.get("data"), gpu_branch)


def setup_cell(colab: str, cpu_model: str = CPU_MODEL, gpu_model: str = GPU_MODEL) -> str:
    """The source of a notebook's first cell; ``colab`` states its Colab runtime and memory."""
    models = "" if (cpu_model, gpu_model) == (CPU_MODEL, GPU_MODEL) else \
        f"cpu_model={cpu_model!r}, gpu_model={gpu_model!r}"
    return (
        f"# Run this cell first. Colab runtime: {colab}\n"
        "import subprocess, sys\n"
        'if "google.colab" in sys.modules:  # on Colab: install the course package (~1 min)\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q",\n'
        f'                    "{project.install_spec()}"], check=True)\n'
        "from endorm_mini.grading import check, setup_notebook\n"
        "# ENDORM_MINI_* environment variables can override its choices: help(setup_notebook)\n"
        f"SETUP = setup_notebook({models})\n"
        "DEVICE, MODEL = SETUP.device, SETUP.model"
    )

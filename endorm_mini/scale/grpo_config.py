"""The settings of an ``endorm-mini grpo`` run (``GRPORun``, re-exported by ``scale.grpo``),
apart from the run so that reading them needs neither torch nor TRL (an instant ``--help``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..alpha_range import warn_alpha
from . import grpo_data

# What a run trains on: verifiers.REWARD_KINDS (spelled out here: verifiers imports torch;
# tests/test_grpo_cli.py holds the two equal).
REWARDS = ("endogenous", "verifier", "hybrid")

# Settings a resumed run may change: they do not change what is learned.
RESUMABLE = ("steps", "out", "save_every", "eval_samples", "report_to")
# --report-to: TRL's (transformers') logging integrations -> the package each one needs
TRAINERS = ("grpo", "rloo")    # TRL's GRPOTrainer, or RLOOTrainer (leave-one-out baseline)
REPORTERS = {"none": (), "tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",),
             "trackio": ("trackio",)}


@dataclass
class GRPORun:
    """One GRPO run. Defaults: the tiny-arith run that takes seconds on a CPU."""
    model: str = "tiny-arith"       #: the policy: zoo name, local folder or hub name
    ref_model: str | None = None    #: frozen reference whose eq. 12 reward is used (None: --model)
    dataset: str = grpo_data.TINY_ARITH  #: tiny-arith, a hub data set or a json/jsonl/csv file
    prompt_column: str = "prompt"   #: the data set's prompt column
    answer_column: str = "answer"   #: the data set's answer column (the verifier's gold)
    split: str = "train"            #: the hub data set's split
    system: str | None = None       #: a system prompt put before every prompt
    reward: str = "endogenous"      #: endogenous | verifier | hybrid (endogenous + w · verifier)
    alpha: float = 1.0              #: α of the endogenous reward (eq. 10–12)
    verifier_weight: float = 1.0    #: w of the verifier's 1/0 in the hybrid reward
    steps: int = 40                 #: GRPO optimizer steps
    prompts_per_step: int = 8       #: prompts per step, all processes together
    num_generations: int = 8        #: completions per prompt (the group of the baseline)
    max_completion_length: int = 4  #: tokens per completion (tiny-arith answers: ≤ 2 + eos)
    learning_rate: float = 5e-4     #: AdamW learning rate (tiny models; ~1e-6 for 7B)
    beta: float = 0.0               #: KL coefficient to the reference (TRL's beta; paper 0.01)
    gradient_accumulation_steps: int = 1  #: micro-batches per step (memory, not the batch)
    temperature: float = 1.0        #: sampling temperature of the rollouts
    vllm: bool = False              #: generate with vLLM colocated on the training GPUs
    reuse_kl_reference: bool = False  #: eq. 12 from TRL's KL reference forward (no 2nd copy)
    seed: int = 0                   #: seeds TRL (data order, sampling, initialisation)
    out: str = "runs/grpo"          #: run folder: checkpoints, log.csv, grpo.png, summary.json
    save_every: int = 20            #: a TRL checkpoint every N steps (and after the last)
    eval_problems: int | None = None  #: held-out problems (None: 100 for tiny-arith, else 0)
    eval_samples: int = 8           #: sampled responses (T = 1) per held-out problem
    report_to: str = "none"         #: TRL's logging: none, tensorboard, wandb or trackio
    trainer: str = "grpo"           #: TRL's GRPOTrainer or RLOOTrainer (same flags, same reward)

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        for name in ("steps", "prompts_per_step", "num_generations", "max_completion_length",
                     "gradient_accumulation_steps", "save_every", "eval_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise ValueError("num_generations must be ≥ 2: GRPO's baseline is the group mean")
        for name in ("alpha", "learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.reward != "verifier":
            warn_alpha(self.alpha)  # outside 1e-3 … 1e3: a warning with the reason
        if self.beta < 0:
            raise ValueError(f"beta must be ≥ 0, got {self.beta}")
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer must be one of {TRAINERS}, got {self.trainer!r}")
        if self.report_to not in REPORTERS:
            raise ValueError(f"report_to must be one of {tuple(REPORTERS)}, got "
                             f"{self.report_to!r}")
        if self.eval_problems is not None and self.eval_problems < 0:
            raise ValueError(f"eval_problems must be ≥ 0, got {self.eval_problems}")
        if self.reuse_kl_reference:
            from .kl_reference import check_reusable

            check_reusable(self.alpha, self.temperature, self.beta)
            if self.reward == "verifier":
                raise ValueError("--reuse-kl-reference gives the endogenous reward: it needs "
                                 "--reward endogenous or hybrid")
            if self.ref_model not in (None, self.model):
                raise ValueError(f"--reuse-kl-reference: TRL's KL reference is the policy's "
                                 f"starting weights ({self.model}), not --ref-model "
                                 f"{self.ref_model}: drop one of the two")
        if self.eval_problems is None:
            self.eval_problems = grpo_data.ARITH_HELD_OUT if self.arithmetic else 0

    @property
    def arithmetic(self) -> bool:
        return self.dataset == grpo_data.TINY_ARITH

    def settings(self) -> dict:
        """What a resumed run must share with the run it continues."""
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k not in RESUMABLE}
        if not self.reuse_kl_reference:   # a run.json written before the option resumes
            del settings["reuse_kl_reference"]
        if self.trainer == "grpo":        # so does one written before --trainer
            del settings["trainer"]
        return settings


def check_installed(run: GRPORun) -> None:
    """``ValueError`` (one line, exit 2) for an option whose package is not installed, before
    anything loads or is written: ``--vllm`` without vllm, ``--report-to`` without its
    logger."""
    import importlib.util

    def installed(*names):
        return any(importlib.util.find_spec(name) is not None for name in names)

    if run.vllm and not installed("vllm"):
        raise ValueError("--vllm: vllm is not installed (pip install vllm, at a version TRL "
                         "supports, on a GPU machine), or drop --vllm")
    needs = REPORTERS[run.report_to]
    if needs and not installed(*needs):
        raise ValueError(f"--report-to {run.report_to}: {needs[0]} is not installed (pip "
                         f"install {needs[0]}), or drop --report-to")

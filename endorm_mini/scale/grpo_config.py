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
RESUMABLE = ("steps", "out", "save_every", "eval_samples")


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
    seed: int = 0                   #: seeds TRL (data order, sampling, initialisation)
    out: str = "runs/grpo"          #: run folder: checkpoints, log.csv, grpo.png, summary.json
    save_every: int = 20            #: a TRL checkpoint every N steps (and after the last)
    eval_problems: int | None = None  #: held-out problems (None: 100 for tiny-arith, else 0)
    eval_samples: int = 8           #: sampled responses (T = 1) per held-out problem

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
        if self.eval_problems is not None and self.eval_problems < 0:
            raise ValueError(f"eval_problems must be ≥ 0, got {self.eval_problems}")
        if self.eval_problems is None:
            self.eval_problems = grpo_data.ARITH_HELD_OUT if self.arithmetic else 0

    @property
    def arithmetic(self) -> bool:
        return self.dataset == grpo_data.TINY_ARITH

    def settings(self) -> dict:
        """What a resumed run must share with the run it continues."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RESUMABLE}

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
RESUMABLE = ("steps", "out", "save_every", "eval_samples", "report_to", "vllm_mode",
             "vllm_server_host", "vllm_server_port")
# --report-to: TRL's (transformers') logging integrations -> the package each one needs
TRAINERS = ("grpo", "rloo")    # TRL's GRPOTrainer, or RLOOTrainer (leave-one-out baseline)
VLLM_MODES = ("colocate", "server")   # TRL's vllm_mode: on the training GPUs, or `trl vllm-serve`
LORA_DEFAULTS = {"lora_rank": 0, "lora_alpha": None, "lora_target_modules": "all-linear"}
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
    vllm: bool = False              #: generate with vLLM (TRL's use_vllm)
    vllm_mode: str = "colocate"     #: colocate (on the training GPUs) or server (trl vllm-serve)
    vllm_server_host: str = "0.0.0.0"  #: server mode: the host of `trl vllm-serve` (TRL's default)
    vllm_server_port: int = 8000    #: server mode: its port (TRL's default)
    lora_rank: int = 0              #: LoRA rank r through peft (0: train every weight)
    lora_alpha: float | None = None  #: LoRA's scale α_LoRA (None: 2 × rank)
    lora_target_modules: str = "all-linear"  #: peft's target_modules: all-linear or a,b,…
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
        if self.vllm_mode not in VLLM_MODES:
            raise ValueError(f"vllm_mode must be one of {VLLM_MODES}, got {self.vllm_mode!r}")
        if self.vllm_mode == "server" and not self.vllm:
            raise ValueError("--vllm-mode server needs --vllm (generation by `trl vllm-serve`)")
        if not 0 < self.vllm_server_port < 65536:
            raise ValueError(f"vllm_server_port must be 1 … 65535, got {self.vllm_server_port}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be ≥ 0 (0: no LoRA), got {self.lora_rank}")
        if self.lora_rank and self.lora_alpha is None:
            self.lora_alpha = 2.0 * self.lora_rank     # the usual α_LoRA = 2r (scale 2)
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}")
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
        if not self.lora_rank:            # and one written before --lora-rank
            for name in LORA_DEFAULTS:
                del settings[name]
        return settings

    def lora_targets(self) -> str | list[str]:
        """peft's ``target_modules``: ``"all-linear"`` (every linear layer but the LM head: for
        Llama and Qwen q/k/v/o and the MLP's gate/up/down) or the names given."""
        if self.lora_target_modules == "all-linear":
            return "all-linear"
        return [name.strip() for name in self.lora_target_modules.split(",") if name.strip()]


def check_installed(run: GRPORun) -> None:
    """``ValueError`` (one line, exit 2) for an option whose package is not installed, before
    anything loads or is written: ``--vllm`` without vllm, ``--report-to`` without its
    logger, ``--lora-rank`` without peft."""
    import importlib.util

    def installed(*names):
        return any(importlib.util.find_spec(name) is not None for name in names)

    if run.vllm and not installed("vllm"):
        raise ValueError(f"--vllm: vllm is not installed (pip install vllm, at a version TRL "
                         f"supports, on a GPU machine; --vllm-mode {run.vllm_mode}), or drop "
                         "--vllm")
    if run.lora_rank and not installed("peft"):
        raise ValueError("--lora-rank: peft is not installed (pip install peft, or the scale "
                         "extra), or drop --lora-rank")
    needs = REPORTERS[run.report_to]
    if needs and not installed(*needs):
        raise ValueError(f"--report-to {run.report_to}: {needs[0]} is not installed (pip "
                         f"install {needs[0]}), or drop --report-to")

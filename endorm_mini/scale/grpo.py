"""GRPO with the endogenous reward, on TRL's ``GRPOTrainer`` (the ``endorm-mini grpo`` command:
:mod:`endorm_mini.commands.grpo`).

The policy samples ``--num-generations`` completions per prompt; each is rewarded by the
endogenous reward of a frozen reference (eq. 12: ``α Σ log π̂_ref + V(s_1) − V(s_{T+1})``,
``EndogenousRewardFunction``), by the verifier, or by both; GRPO's group baseline subtracts
each prompt's mean reward, so ``V(s_1)`` cancels and the policy is pushed toward completions
the reference finds likely (docs/paper.md §5, §7). The same command runs

- single-process: ``endorm-mini grpo --out runs/grpo``;
- under ``torchrun --nproc_per_node N`` or ``accelerate launch [--config_file configs/…]``
  (CPU: ``ACCELERATE_USE_CPU=1``, gloo): every process generates and scores its own shard,
  TRL gathers the rewards for the group baseline; only the first process writes ``log.csv``,
  ``grpo.png`` and ``summary.json`` (``grpo_run``).

``endorm-mini grpo-eval`` measures a model's accuracy on a data set (MATH-500 style) with the
kit's verifier (``verifiers.math_correct``: math-verify when installed).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from dataclasses import dataclass

from .. import verifiers
from ..verifiers import REWARD_KINDS as REWARDS
from . import grpo_data, grpo_run

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


# ---------------------------------------------------------------- TRL's pieces
def world_size() -> int:
    """Processes of this run: ``torchrun`` and ``accelerate launch`` set WORLD_SIZE."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def grpo_config(run: GRPORun, weights: list[float], hub: dict | None = None):
    """TRL's ``GRPOConfig`` for ``run``: a step is ``prompts_per_step × num_generations``
    completions over all processes; on a CPU no bf16 and no gradient checkpointing (the
    tiny run's speed), on a GPU both (TRL's defaults; bf16 where the GPU has it).

    The policy is loaded in fp32 everywhere (TRL's default): on a GPU ``bf16=True`` is autocast
    around fp32 master weights, so AdamW's steps of ~1e-6 are not lost to bf16 rounding; under
    DeepSpeed its bf16 engine keeps the fp32 master copy in the (sharded) optimizer state.
    """
    import torch
    from trl import GRPOConfig, RLOOConfig

    completions = run.prompts_per_step * run.num_generations
    per_step = world_size() * run.gradient_accumulation_steps
    if completions % per_step:
        raise ValueError(f"--prompts-per-step × --num-generations = {completions} completions "
                         f"must split evenly over {world_size()} process(es) × "
                         f"{run.gradient_accumulation_steps} accumulation step(s)")
    gpu = torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "") != "1"
    bf16 = gpu and torch.cuda.is_bf16_supported()   # a T4 has none: fp32 there
    config_class = RLOOConfig if run.trainer == "rloo" else GRPOConfig   # the same fields
    return config_class(
        output_dir=run.out, max_steps=run.steps, seed=run.seed,
        per_device_train_batch_size=completions // per_step,
        gradient_accumulation_steps=run.gradient_accumulation_steps,
        num_generations=run.num_generations, max_completion_length=run.max_completion_length,
        temperature=run.temperature, learning_rate=run.learning_rate,
        lr_scheduler_type="constant", warmup_steps=0, beta=run.beta,
        reward_weights=weights, use_vllm=run.vllm, vllm_mode="colocate",
        use_cpu=not gpu, bf16=bf16, activation_checkpointing=gpu,
        model_init_kwargs={"dtype": "float32", **(hub or {})},
        logging_steps=1, save_strategy="steps", save_steps=run.save_every, save_total_limit=2,
        report_to=run.report_to, disable_tqdm=True, dataloader_num_workers=0)


def reward_weights(run: GRPORun) -> list[float]:
    """TRL's ``reward_weights`` for ``reward_functions``: GRPO trains on their weighted sum.
    The verifier is always there: at weight 0 it only logs the rollouts' accuracy."""
    verifier = {"endogenous": 0.0, "verifier": 1.0, "hybrid": run.verifier_weight}[run.reward]
    return [verifier] if run.reward == "verifier" else [1.0, verifier]


def reward_functions(run: GRPORun, tokenizer, tally: grpo_run.RankTally) -> list:
    """The endogenous reward of the frozen reference (eq. 12), then the verifier, each counted
    by ``tally`` and logged by TRL as ``rewards/endogenous/…``, ``rewards/correct/…``.

    A completion ends on the ids TRL stops on: the policy tokenizer's eos and every eos id of
    the policy's ``generation_config.json`` (``policy_eos_ids``), whatever the reference is;
    prompts are rendered with the policy's tokenizer (TRL's processing class)."""
    from ..models import locate
    from .kl_reference import KLReferenceReward
    from .reward import EndogenousRewardFunction, policy_eos_ids

    eos = policy_eos_ids(*_path_and_tokenizer(run.model, tokenizer))
    funcs = []
    if run.reward != "verifier" and run.reuse_kl_reference:
        # No second copy: TRL's KL reference forward gives α Σ log π̂; V(s_{T+1}) for cut ones
        funcs.append(tally.wrap("endogenous", KLReferenceReward(run.alpha, eos)))
    elif run.reward != "verifier":
        # Loaded here, once per process, whole on this process's device (bf16 on a GPU, fp32
        # on a CPU; outside ZeRO-3's sharding), frozen; the policy's tokenizer must be the
        # reference's (refused otherwise).
        locate(run.ref_model or run.model)   # a bad --ref-model is one line
        endogenous = EndogenousRewardFunction(run.ref_model or run.model, alpha=run.alpha,
                                              policy_tokenizer=tokenizer, eos_token_ids=eos)
        funcs.append(tally.wrap("endogenous", endogenous))
    verifier = verifiers.arith_verifier if run.arithmetic else verifiers.math_verifier
    funcs.append(tally.wrap("correct", verifier))
    return funcs


def _path_and_tokenizer(model: str, tokenizer) -> tuple:
    """``(path, tokenizer, hub options)`` of the policy, for ``policy_eos_ids``."""
    from ..models import locate

    path, hub = locate(model)
    return path, tokenizer, hub


def load_data(run: GRPORun, tokenizer) -> tuple[list[dict], list[dict]]:
    """``(train, held_out)`` rows ``{"prompt", "answer"}`` (prompts as given, not rendered)."""
    if run.arithmetic:
        train, held = grpo_data.arith_split(run.eval_problems)
        return grpo_data.arith_rows(train), grpo_data.arith_rows(held)
    rows = grpo_data.load_rows(run.dataset, run.prompt_column, run.answer_column, run.split)
    return grpo_data.split_rows(rows, run.eval_problems)


# ---------------------------------------------------------------- the run
def train(run: GRPORun, resume: bool = False) -> dict:
    """Train by GRPO; the summary (accuracy before → after on held-out problems, seconds)."""
    from ..chat import ensure_pad_token
    from ..models import locate

    check_installed(run)
    checkpoint = grpo_run.check_folder(run.out, resume, run.settings(), run.steps)
    path, hub = locate(run.model)   # a bad --model is one line, before the heavy imports
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback, ProgressCallback
    from trl import GRPOTrainer, RLOOTrainer

    from .kl_reference import reusing_trainer

    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left", **hub)
    ensure_pad_token(tokenizer)
    train_rows, held = load_data(run, tokenizer)
    dataset = Dataset.from_list([
        {"prompt": grpo_data.as_prompt(r["prompt"], tokenizer, run.system), "answer": r["answer"]}
        for r in train_rows])
    tally = grpo_run.RankTally()
    args = grpo_config(run, reward_weights(run), hub)  # sets up the processes: the reward after
    funcs = reward_functions(run, tokenizer, tally)
    base = RLOOTrainer if run.trainer == "rloo" else GRPOTrainer
    trainer_class = reusing_trainer(base) if run.reuse_kl_reference else base
    trainer = trainer_class(model=path, reward_funcs=funcs, args=args, train_dataset=dataset,
                            processing_class=tokenizer)
    if run.reuse_kl_reference:   # the reward reads the reference forward of the same step
        trainer.kl_reference_reward = funcs[0].inner
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    trainer.add_callback(grpo_run.run_log_callback(run.out))
    # TRL 1.16 asks transformers 5 for `is_gradient_checkpointing`, deprecated there: noise to
    # a user who changed nothing (lesson 12 hides it too).
    warnings.filterwarnings("ignore", message=r"`\w*gradient_checkpointing\w*` is deprecated",
                            category=FutureWarning)
    main = trainer.is_world_process_zero()
    if main:
        grpo_run.write_json(os.path.join(run.out, grpo_run.RUN), run.settings())
    # The first process measures the base alone; the others wait at training's first collective.
    # base.json keeps it for the summary of a run killed and resumed before its end.
    before = evaluate(trainer, run, tokenizer, held) if main and not checkpoint else None
    if before is not None:
        grpo_run.write_json(os.path.join(run.out, grpo_run.BASE), before)
    first = grpo_run.checkpoint_step(checkpoint) + 1 if checkpoint else 1
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - t0
    rank, size = trainer.args.process_index, trainer.args.world_size
    tally.write(run.out, rank, size, first, trainer.state.global_step)
    trainer.save_model(os.path.join(run.out, "final"))
    if not main:
        return {}
    return finish(trainer, run, tokenizer, held, before, seconds, size)


def evaluate(trainer, run: GRPORun, tokenizer, held: list[dict]) -> dict | None:
    """Accuracy of the trainer's policy on the held-out problems (first process only), greedy
    and sampled (T = 1, ``eval_samples`` each): ``{"greedy", "sampled"}``; ``None`` when there
    are none or DeepSpeed shards the weights."""
    if not held or trainer.is_deepspeed_enabled:
        return None
    model = trainer.accelerator.unwrap_model(trainer.model)
    figures = {}
    for name, temperature in (("greedy", 0.0), ("sampled", 1.0)):
        figures[name], _ = verifiers.sampled_accuracy(
            model, tokenizer, held, run.arithmetic, run.eval_samples, run.max_completion_length,
            temperature, system=run.system, seed=run.seed, device=trainer.accelerator.device)
    model.train()
    return figures


def base_figures(out: str) -> dict | None:
    """The base model's held-out accuracy, measured before the first step of the run in
    ``out``: ``base.json``, or the summary of a run that wrote none (``None``: not measured)."""
    for name in (grpo_run.BASE, grpo_run.SUMMARY):
        path = os.path.join(out, name)
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            if name == grpo_run.BASE:
                return saved
            if saved.get("base_accuracy") is not None:
                return {"greedy": saved.get("base_greedy_accuracy"),
                        "sampled": saved["base_accuracy"]}
    return None


def headline(before: dict | None, after: dict, samples: int, problems: int) -> str:
    """Greedy and sampled accuracy before → after, both labelled; when sampling got better and
    greedy decoding did not, the policy got more confident, not more correct: said so."""
    def was(key):
        value = (before or {}).get(key)
        return "?" if value is None else f"{value:.3f}"

    text = (f"held-out accuracy on {problems} problems: greedy {was('greedy')} → "
            f"{after['greedy']:.3f}; sampled accuracy (T = 1, {samples} per problem) "
            f"{was('sampled')} → {after['sampled']:.3f}")
    if before and None not in (before.get("greedy"), before.get("sampled")) \
            and after["sampled"] > before["sampled"] and after["greedy"] <= before["greedy"]:
        text += " (greedy did not rise: the policy got more confident, not more correct)"
    return text


def finish(trainer, run: GRPORun, tokenizer, held, before, seconds, size) -> dict:
    """The first process: accuracy after, ``grpo.png``, ``summary.json``, one line printed."""
    rows = grpo_run.log_rows(trainer.state.log_history)
    grpo_run.write_log(run.out, rows)
    grpo_run.plot_log(run.out, rows)
    if before is None:   # resumed: the base is the first run's
        before = base_figures(run.out)
    after = evaluate(trainer, run, tokenizer, held)
    summary = {"base_accuracy": (before or {}).get("sampled"),
               "accuracy": after and after["sampled"],
               "base_greedy_accuracy": (before or {}).get("greedy"),
               "greedy_accuracy": after and after["greedy"], "eval_problems": len(held),
               "eval_samples": run.eval_samples, "steps": trainer.state.global_step,
               "processes": size, "seconds": round(seconds, 2), "reward": run.reward,
               "trainer": run.trainer,
               "model": run.model, "ref_model": run.ref_model or run.model}
    grpo_run.write_json(os.path.join(run.out, grpo_run.SUMMARY), summary)
    where = f"{size} processes" if size > 1 else "1 process"
    if after is None:
        result = "no held-out accuracy (evaluate the final model with endorm-mini grpo-eval)"
    else:
        result = headline(before, after, run.eval_samples, len(held))
    print(f"{result} after {summary['steps']} {run.trainer.upper()} steps on {where} "
          f"({seconds:.1f} s in this run); wrote log.csv, grpo.png, summary.json, final/ to "
          f"{run.out}")
    return summary

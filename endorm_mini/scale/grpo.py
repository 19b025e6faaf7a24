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

import json
import os
import time
import warnings

from .. import verifiers
from . import grpo_data, grpo_run
from .grpo_config import (REPORTERS, REWARDS, RESUMABLE, TRAINERS, GRPORun,  # noqa: F401
                          check_installed)  # re-exported


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
    DeepSpeed its bf16 engine keeps the fp32 master copy in the (sharded) optimizer state. With
    LoRA the frozen base is bf16 on a bf16 GPU (it takes no step; peft keeps the adapter fp32).
    """
    import torch
    from trl import GRPOConfig, RLOOConfig

    from ..models import model_options

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
        reward_weights=weights, use_vllm=run.vllm, vllm_mode=run.vllm_mode,
        vllm_server_host=run.vllm_server_host, vllm_server_port=run.vllm_server_port,
        use_cpu=not gpu, bf16=bf16, activation_checkpointing=gpu,
        model_init_kwargs={"dtype": "bfloat16" if run.lora_rank and bf16 else "float32",
                           **model_options(hub or {})},
        logging_steps=1, save_strategy="steps", save_steps=run.save_every, save_total_limit=2,
        report_to=run.report_to, disable_tqdm=True, dataloader_num_workers=0)


def lora_config(run: GRPORun):
    """peft's ``LoraConfig`` for ``--lora-rank`` (``None`` without): rank r, scale α_LoRA/r, on
    ``run.lora_targets()``, no dropout (GRPO's ratio needs the same forward twice). TRL wraps the
    policy and, with β > 0, takes its KL reference from the policy with the adapter disabled:
    the frozen base, no second copy."""
    if not run.lora_rank:
        return None
    from peft import LoraConfig

    return LoraConfig(r=run.lora_rank, lora_alpha=run.lora_alpha, lora_dropout=0.0,
                      target_modules=run.lora_targets(), task_type="CAUSAL_LM")


def save_merged(trainer, tokenizer, folder: str) -> None:
    """A LoRA run's ``final/``: the adapter merged into the base, a whole model that loads like
    any other (``grpo-eval --model``); the adapter alone is in ``final-adapter/``. Merging
    changes ``trainer.model`` in place: the last thing a run does."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.merge_and_unload().save_pretrained(folder)
    tokenizer.save_pretrained(folder)


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
    if checkpoint and os.environ.get("RANK", "0") == "0":
        print(f"resuming at {grpo_run.checkpoint_step(checkpoint)}/{run.steps} from "
              f"{checkpoint}", flush=True)
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
    if run.lora_rank and args.deepspeed_plugin is not None:
        raise ValueError("--lora-rank is for one GPU (or DDP), not DeepSpeed: drop one of them")
    funcs = reward_functions(run, tokenizer, tally)
    base = RLOOTrainer if run.trainer == "rloo" else GRPOTrainer
    trainer_class = reusing_trainer(base) if run.reuse_kl_reference else base
    trainer = trainer_class(model=path, reward_funcs=funcs, args=args, train_dataset=dataset,
                            processing_class=tokenizer, peft_config=lora_config(run))
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
    trainer.save_model(os.path.join(run.out, "final-adapter" if run.lora_rank else "final"))
    summary = finish(trainer, run, tokenizer, held, before, seconds, size) if main else {}
    # Every process waits for the first one's evaluation, then leaves the group together: a
    # process that exits with its gloo/NCCL group alive aborts in C++ ("terminate called
    # without an active exception") and torchrun reports the whole run failed.
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()   # finishes --report-to's trackers, leaves the group
    return summary


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
    if run.lora_rank:
        save_merged(trainer, tokenizer, os.path.join(run.out, "final"))
    where = f"{size} processes" if size > 1 else "1 process"
    if after is None:
        result = "no held-out accuracy (evaluate the final model with endorm-mini grpo-eval)"
    else:
        result = headline(before, after, run.eval_samples, len(held))
    print(f"{result} after {summary['steps']} {run.trainer.upper()} steps on {where} "
          f"({seconds:.1f} s in this run); wrote log.csv, grpo.png, summary.json, final/ to "
          f"{run.out}")
    return summary

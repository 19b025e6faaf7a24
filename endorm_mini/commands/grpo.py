"""``endorm-mini grpo`` (GRPO with the endogenous reward, on TRL: :mod:`endorm_mini.scale.grpo`)
and ``endorm-mini grpo-eval`` (a model's accuracy on a math data set)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from ..scale import grpo_data
from ..scale.grpo_config import REPORTERS, REWARDS, TRAINERS, VLLM_MODES, GRPORun
from .argtypes import positive_float, positive_int


def _quiet_bars() -> None:
    """No progress bars from loading weights and data: they would break the GRPO bar, and an
    error stays one line."""
    import datasets
    from transformers.utils import logging

    logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _grpo_command(args: argparse.Namespace) -> int:
    from ..runfolder import check_writable, run_folder

    check_writable(args.out)
    names = [f.name for f in dataclasses.fields(GRPORun)]
    run = GRPORun(**{k: v for k, v in vars(args).items() if k in names})
    first = os.environ.get("RANK", "0") == "0"   # torchrun's other processes share the folder
    with run_folder(args.out, "grpo", primary=first):
        from ..scale.grpo import train
        from ..scale.grpo_run import checkpoint_step, last_checkpoint

        _quiet_bars()
        try:
            train(run, resume=args.resume)
        except KeyboardInterrupt:
            from tqdm import tqdm

            for bar in list(getattr(tqdm, "_instances", ())):   # the GRPO bar first, not after
                bar.close()
            saved = last_checkpoint(args.out)
            try:
                at = checkpoint_step(saved) if saved else 0
            except (OSError, ValueError, KeyError):   # stopped while that checkpoint was saved
                at = "?"
            how = "with --resume " if saved else ""
            print(f"\nendorm-mini grpo: interrupted at {at}/{run.steps} (its last checkpoint); "
                  f"rerun the same command {how}to resume", file=sys.stderr)
            return 130
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Every file is written and the process group is left (scale.grpo.train). A process of
        # a torchrun/accelerate run then skips C++ teardown: under load, a thread of the
        # distributed stack outliving it aborted a finished run ("terminate called without an
        # active exception"), and torchrun reported the whole run failed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _eval_command(args: argparse.Namespace) -> int:
    """Greedy and sampled accuracy of ``--model`` on ``--dataset`` (all rows or ``--limit``),
    one process, both printed and labelled."""
    from .. import verifiers
    from ..models import load

    if args.out:
        from ..runfolder import check_output_file

        check_output_file(args.out)   # before the model loads
    _quiet_bars()
    model, tokenizer = load(args.model, device=args.device, dtype=args.dtype)
    arithmetic = args.dataset == grpo_data.TINY_ARITH
    if arithmetic:
        rows = grpo_data.arith_rows(grpo_data.arith_split()[1])
    else:
        rows = grpo_data.load_rows(args.dataset, args.prompt_column, args.answer_column,
                                   args.split)
    rows = rows[:args.limit] if args.limit else rows
    decodings = [("greedy", 0.0)] + ([] if args.greedy_only else [("sampled", args.temperature)])
    accuracy, records = {}, []
    for decoding, temperature in decodings:
        accuracy[decoding], judged = verifiers.sampled_accuracy(
            model, tokenizer, rows, arithmetic, args.samples, args.max_new_tokens, temperature,
            args.system, args.seed, args.batch_size, args.device)
        records += [{"prompt": prompt, "answer": gold, "response": response, "correct": right,
                     "decoding": decoding} for prompt, gold, response, right in judged]
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    figures = f"greedy accuracy {accuracy['greedy']:.4f}"
    if "sampled" in accuracy:
        figures += (f", sampled accuracy {accuracy['sampled']:.4f} (T = {args.temperature:g}, "
                    f"{args.samples} per problem)")
    print(f"{figures} on {len(rows)} problems of {args.dataset} (model {args.model})")
    return 0


def _data_flags(p) -> None:
    p.add_argument("--dataset", default=grpo_data.TINY_ARITH,
                   help="tiny-arith (offline), digit-sums (offline: \"What is 3 + 5?\", for a "
                        "chat model), a Hugging Face data set name, or a local "
                        ".json/.jsonl/.csv file")
    p.add_argument("--prompt-column", default="prompt", help="the data set's prompt column")
    p.add_argument("--answer-column", default="answer", help="the data set's answer column")
    p.add_argument("--split", default="train", help="the hub data set's split")
    p.add_argument("--system", help="a system prompt put before every prompt")
    p.add_argument("--seed", type=int, default=0, help="seeds the data order and the sampling")


def register_cli(sub) -> None:
    d = GRPORun
    p = sub.add_parser("grpo", help="GRPO (TRL) with the endogenous reward; torchrun/accelerate",
                       description="Train by TRL's GRPO with the endogenous reward of a frozen "
                                   "reference; write log.csv, grpo.png, summary.json and TRL "
                                   "checkpoints (resumable) to --out.")
    p.add_argument("--model", default=d.model, help="policy: zoo name, local path or hub name")
    p.add_argument("--ref-model", help="frozen reference whose endogenous reward is the reward "
                                       "(default: the policy's starting weights)")
    _data_flags(p)
    p.add_argument("--reward", default=d.reward, choices=REWARDS,
                   help="endogenous (eq. 12 of the reference), verifier (1/0), or hybrid")
    p.add_argument("--alpha", type=positive_float, default=d.alpha,
                   help="α of the endogenous reward (> 0; warned outside 1e-3 … 1e3)")
    p.add_argument("--verifier-weight", type=float, default=d.verifier_weight,
                   help="w in the hybrid reward endogenous + w · verifier")
    p.add_argument("--steps", type=positive_int, default=d.steps,
                   help="GRPO steps in all (≥ 1; with --resume, the total, not more)")
    p.add_argument("--prompts-per-step", type=positive_int, default=d.prompts_per_step,
                   help="prompts per step, all processes together")
    p.add_argument("--num-generations", type=positive_int, default=d.num_generations,
                   help="completions per prompt (≥ 2)")
    p.add_argument("--max-completion-length", type=positive_int,
                   default=d.max_completion_length, help="tokens per completion")
    p.add_argument("--learning-rate", type=positive_float, default=d.learning_rate,
                   help="AdamW learning rate (tiny models; about 1e-6 for 7B)")
    p.add_argument("--beta", type=float, default=d.beta, help="KL coefficient (paper: 0.01)")
    p.add_argument("--gradient-accumulation-steps", type=positive_int,
                   default=d.gradient_accumulation_steps,
                   help="micro-batches per step (less memory, the same batch)")
    p.add_argument("--temperature", type=positive_float, default=d.temperature,
                   help="sampling temperature of the rollouts")
    p.add_argument("--vllm", action="store_true",
                   help="generate with vLLM (GRPOConfig's use_vllm; where: --vllm-mode)")
    p.add_argument("--vllm-mode", default=d.vllm_mode, choices=VLLM_MODES,
                   help="colocate: vLLM on the training GPUs; server: a `trl vllm-serve` on "
                        "GPUs of its own, at --vllm-server-host:--vllm-server-port")
    p.add_argument("--vllm-server-host", default=d.vllm_server_host,
                   help="server mode: the host running `trl vllm-serve`")
    p.add_argument("--vllm-server-port", type=positive_int, default=d.vllm_server_port,
                   help="server mode: its port")
    p.add_argument("--lora-rank", type=int, default=d.lora_rank,
                   help="train a LoRA adapter of this rank through peft (one GPU; 0: every "
                        "weight); the policy with the adapter off is TRL's KL reference")
    p.add_argument("--lora-alpha", type=positive_float,
                   help="LoRA's α (the adapter is scaled by α/rank; default 2 × rank)")
    p.add_argument("--lora-target-modules", default=d.lora_target_modules,
                   help="the layers LoRA adapts: all-linear (every linear layer but the LM "
                        "head: Llama's and Qwen's attention and MLP) or names, comma-separated")
    p.add_argument("--reuse-kl-reference", action="store_true",
                   help="take the endogenous reward from TRL's KL reference forward (no second "
                        "copy of the model; needs --beta > 0 and --alpha = --temperature)")
    p.add_argument("--trainer", default=d.trainer, choices=TRAINERS,
                   help="TRL's GRPOTrainer (group-mean baseline) or RLOOTrainer (leave-one-out "
                        "baseline, the KL in the reward); the same flags and reward")
    p.add_argument("--report-to", default=d.report_to, choices=tuple(REPORTERS),
                   help="TRL's logging besides log.csv (the package must be installed)")
    p.add_argument("--out", default=d.out, help="run folder")
    p.add_argument("--save-every", type=positive_int, default=d.save_every,
                   help="a checkpoint every N steps (and after the last)")
    p.add_argument("--resume", action="store_true",
                   help="go on from the last checkpoint in --out (same settings; --steps is "
                        "the total, so ask for more than the checkpoint's step)")
    p.add_argument("--eval-problems", type=int,
                   help="held-out problems for accuracy before/after (default 100 for "
                        "tiny-arith, else 0: use grpo-eval)")
    p.add_argument("--eval-samples", type=positive_int, default=d.eval_samples,
                   help="sampled responses (T = 1) per held-out problem")
    p.set_defaults(func=_grpo_command)

    e = sub.add_parser("grpo-eval", help="accuracy of a model on a math data set (math-verify)",
                       description="Greedy and sampled accuracy on MATH-500-style data with "
                                   "the kit's verifier (verifiers.math_correct: math-verify "
                                   "when installed).")
    e.add_argument("--model", default=d.model, help="zoo name, local path (a run's final/) "
                                                    "or hub name")
    _data_flags(e)
    e.add_argument("--limit", type=positive_int, help="only the first N problems")
    e.add_argument("--samples", type=positive_int, default=4,
                   help="sampled responses per problem (beside the greedy one)")
    e.add_argument("--temperature", type=positive_float, default=1.0,
                   help="the sampling temperature (> 0; greedy accuracy is always measured)")
    e.add_argument("--greedy-only", action="store_true", help="greedy accuracy alone")
    e.add_argument("--max-new-tokens", type=positive_int, default=1024,
                   help="tokens per response")
    e.add_argument("--batch-size", type=positive_int, default=64,
                   help="problems generated for at once")
    e.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda")
    e.add_argument("--dtype", help="fp32, bf16 or fp16")
    e.add_argument("--out", help="a .jsonl of every response and its verdict")
    e.set_defaults(func=_eval_command)

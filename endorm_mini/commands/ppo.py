"""``endorm-mini ppo``: PPO on the noisy arithmetic problems, with a log, a plot and checkpoints.

Writes ``log.csv``, ``ppo.pt`` (every ``--checkpoint-every`` updates, after the last, and on
Ctrl-C/SIGTERM) and ``ppo.png`` to ``--out``; ``--resume`` goes on from ``ppo.pt``. A
folder that holds another run, or a log with no checkpoint, is refused (``ppo_run``); another
command's folder, or one a run is writing now, too (``runfolder``).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

from ..ppo_config import REWARDS, PPOConfig
from .argtypes import positive_float, positive_int

# Texts a model for this task must be able to write: digits, signs and a few answers.
TASK_TEXTS = ("0123456789", "-12", "37+58", "95")


def _check_tokenizer(name: str) -> None:
    """Refuse a model whose tokenizer cannot write the problems and their answers (before the
    model loads: only the tokenizer is read)."""
    from transformers import AutoTokenizer

    from ..models import locate

    path, hub = locate(name)
    tokenizer = AutoTokenizer.from_pretrained(path, **hub)
    lost = [t for t in TASK_TEXTS
            if tokenizer.decode(tokenizer.encode(t, add_special_tokens=False)).strip() != t]
    if lost:
        raise ValueError(f"--model {name}: its tokenizer cannot write the arithmetic problems "
                         f"and answers ({lost[0]!r} does not survive encode → decode); choose a "
                         "model whose vocabulary has digits (e.g. tiny-arith)")


def _check_answers(name: str, model, tokenizer, prompts, device) -> None:
    """Refuse a model that gives the right answers' tokens less probability than a uniform
    guess over its vocabulary would: it has no arithmetic for PPO to reinforce (tiny-domains,
    which never saw a digit, "trains" from 0.003 to 0.004)."""
    from ..reward import EndogenousReward
    from ..worlds import arith_answer

    sample = prompts[::max(len(prompts) // 20, 1)]
    scorer = EndogenousReward(model, tokenizer, alpha=1.0, device=device)   # π̂ = the model
    results = scorer.score_batch(sample, [str(arith_answer(p)) for p in sample], progress=False)
    per_token = [float(r.logprobs[:-1].mean()) for r in results if len(r.logprobs) > 1]
    mean, uniform = sum(per_token) / len(per_token), -math.log(len(tokenizer))
    if mean < uniform:
        raise ValueError(f"--model {name} gives the right answers less probability than a "
                         f"uniform guess (mean log π {mean:.2f} per token < log 1/{len(tokenizer)}"
                         f" = {uniform:.2f}): it cannot express arithmetic, so PPO has nothing to "
                         "reinforce; choose a model that answers in numbers (e.g. tiny-arith)")


def _ppo_command(args: argparse.Namespace) -> int:
    from ..runfolder import check_writable, run_folder

    cfg = PPOConfig(steps=args.steps, reward=args.reward, alpha=args.alpha, kl_coef=args.kl_coef,
                    lr=args.lr, seed=args.seed, device=args.device, dtype=args.dtype,
                    checkpoint_dir=args.out, checkpoint_every=args.checkpoint_every)
    check_writable(args.out)
    from ..ppo_run import RunFiles

    RunFiles(cfg).check(args.resume)  # a folder that would lose a run fails before any loading
    _check_tokenizer(args.model)
    with run_folder(args.out, "ppo"):
        return _run(args, cfg)


def _run(args: argparse.Namespace, cfg: PPOConfig) -> int:
    from ..models import load
    from ..ppo import train
    from ..ppo_run import RunStopped
    from ..verifiers import arith_accuracy, is_correct
    from ..viz import plot_history
    from ..worlds import arith_problems

    model, tokenizer = load(args.model, device=args.device)
    prompts, n = arith_problems(), args.eval_samples
    _check_answers(args.model, model, tokenizer, prompts, args.device)
    before = arith_accuracy(model, tokenizer, prompts, 1.0, n, device=args.device)
    t0 = time.perf_counter()
    try:
        history = train(model, tokenizer, prompts, cfg, is_correct=is_correct,
                        resume=args.resume).history
    except RunStopped as stop:
        print(f"endorm-mini ppo: interrupted at {stop.step}/{cfg.steps}; rerun the same command "
              "with --resume to resume", file=sys.stderr)
        return 128 + stop.signum
    seconds = time.perf_counter() - t0
    after = arith_accuracy(model, tokenizer, prompts, 1.0, n, device=args.device)
    plot_history(history, os.path.join(args.out, "ppo.png"))
    print(f"sampled accuracy (T = 1, {n} per problem): base {before:.3f} → {after:.3f} after "
          f"{len(history)} updates ({seconds:.1f} s in this run); wrote log.csv, ppo.png, "
          f"ppo.pt to {args.out}")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("ppo", help="PPO on noisy arithmetic with the endogenous reward",
                       description="Train a model by PPO on the arithmetic problems; write "
                                   "log.csv, ppo.png, ppo.pt (resumable) to --out.")
    p.add_argument("--model", default="tiny-arith", help="zoo name, local path or hub name")
    p.add_argument("--reward", default="endogenous", choices=REWARDS[:-1],
                   help="what PPO maximises: the endogenous reward (per token, or its sum), "
                        "the verifier's 1/0, or both")
    p.add_argument("--alpha", type=positive_float, default=PPOConfig.alpha,
                   help="α of the endogenous reward (> 0; warned outside 1e-3 … 1e3)")
    p.add_argument("--steps", type=positive_int, default=PPOConfig.steps,
                   help="PPO updates in all (≥ 1; with --resume, the total, not more)")
    p.add_argument("--out", default="runs/ppo", help="folder for log.csv, ppo.png, ppo.pt")
    p.add_argument("--checkpoint-every", type=positive_int, default=PPOConfig.checkpoint_every,
                   help="save ppo.pt every N updates (also after the last and on Ctrl-C/SIGTERM)")
    p.add_argument("--resume", action="store_true",
                   help="continue from --out/ppo.pt (the same settings; --steps may grow)")
    p.add_argument("--kl-coef", type=float, default=PPOConfig.kl_coef,
                   help="β: per-token KL penalty to the frozen reference (paper: 0.01)")
    p.add_argument("--lr", type=float, default=PPOConfig.lr,
                   help="AdamW learning rate (tiny models; about 1e-6 for a 0.5B model)")
    p.add_argument("--seed", type=int, default=PPOConfig.seed,
                   help="seeds the prompts drawn, the sampling and the minibatch order")
    p.add_argument("--eval-samples", type=positive_int, default=2,
                   help="samples per problem for the accuracy")
    p.add_argument("--device", default=PPOConfig.device,
                   help="auto (cuda, then mps, then cpu), cpu, cuda or mps")
    p.add_argument("--dtype", help="CUDA autocast dtype: bf16 or fp16 (default: fp32)")
    p.set_defaults(func=_ppo_command)

"""``endorm-mini ppo``: PPO on the noisy arithmetic problems, with a log, a plot and checkpoints.

Writes ``log.csv``, ``ppo.pt`` (every ``--checkpoint-every`` updates, after the last, and on
Ctrl-C/SIGTERM) and ``ppo.png`` to ``--out``; ``--resume`` goes on from ``ppo.pt``. A
folder that holds another run, or a log with no checkpoint, is refused (``ppo_run``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from ..ppo import REWARDS, PPOConfig, train
from ..ppo_run import RunFiles, RunStopped
from ..viz import plot_history
from .argtypes import positive_float, positive_int


def _ppo_command(args: argparse.Namespace) -> int:
    from ..models import load
    from ..verifiers import arith_accuracy, is_correct
    from ..worlds import arith_problems

    cfg = PPOConfig(steps=args.steps, reward=args.reward, alpha=args.alpha, kl_coef=args.kl_coef,
                    lr=args.lr, seed=args.seed, device=args.device, dtype=args.dtype,
                    checkpoint_dir=args.out, checkpoint_every=args.checkpoint_every)
    RunFiles(cfg).check(args.resume)  # a folder that would lose a run fails before any loading
    model, tokenizer = load(args.model, device=args.device)
    prompts, n = arith_problems(), args.eval_samples
    before = arith_accuracy(model, tokenizer, prompts, 1.0, n, device=args.device)
    t0 = time.perf_counter()
    try:
        history = train(model, tokenizer, prompts, cfg, is_correct=is_correct,
                        resume=args.resume).history
    except RunStopped as stop:
        print(f"endorm-mini ppo: {stop}; go on with --resume", file=sys.stderr)
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
    p.add_argument("--reward", default="endogenous", choices=REWARDS[:-1])
    p.add_argument("--alpha", type=positive_float, default=PPOConfig.alpha,
                   help="α of the endogenous reward (> 0)")
    p.add_argument("--steps", type=positive_int, default=PPOConfig.steps, help="PPO updates (≥ 1)")
    p.add_argument("--out", default="runs/ppo", help="folder for log.csv, ppo.png, ppo.pt")
    p.add_argument("--checkpoint-every", type=positive_int, default=PPOConfig.checkpoint_every,
                   help="save ppo.pt every N updates (also after the last and on Ctrl-C/SIGTERM)")
    p.add_argument("--resume", action="store_true",
                   help="continue from --out/ppo.pt (the same settings; --steps may grow)")
    p.add_argument("--kl-coef", type=float, default=PPOConfig.kl_coef)
    p.add_argument("--lr", type=float, default=PPOConfig.lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-samples", type=positive_int, default=2,
                   help="samples per problem for the accuracy")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", help="CUDA autocast dtype: bf16 or fp16")
    p.set_defaults(func=_ppo_command)

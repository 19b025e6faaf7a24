"""GRPO with a real model: ``endorm-mini grpo --model smollm2-135m`` on ``digit-sums``
(issue 18, item 4), the endogenous, verifier and hybrid rewards beside a control.

The task: "What is a + b?" for the 81 sums of two digits 1 … 9 (``--dataset digit-sums``),
answers checked by their last number, at most ``--tokens`` (16) tokens. SmolLM2-135M-Instruct
knows these sums but half the time spends its 16 tokens explaining ("To add 7 and 2, you
simply add them together: 7") and is cut before the answer: greedy accuracy 0.321 on all 81
(measured: 1 thread, the 4-bit offline copy), inside the issue's 20–60 % band, so there is
room both ways. The last ``--held-out`` problems are never trained on; accuracy is measured
on them, greedy and sampled (T = 1, ``--eval-samples`` each), before and after, by the
command itself (``summary.json``).

Runs, each its own ``endorm-mini grpo`` in one process, same seed and sizes:

- ``control``     one step at learning rate 1e-30, which moves no weight: its "after" is the
                  base measured again by the same code (the random reward of a run that
                  learns nothing; the gap between the runs' "before" figures is the noise);
- ``endogenous``  eq. 12 of the frozen base (the verifier at weight 0, logged only);
- ``verifier``    the verifier's 1/0 alone;
- ``hybrid``      both (``--verifier-weight 1``).

The CPU where the kit is built is 2 shared cores: the default sizes (8 steps of 4 prompts × 4
completions) take minutes per run there, too few steps to expect much; on a free machine or a
GPU raise ``--steps``. Results go to ``--out`` (one folder per run) and are printed as one
table.

Measured (``--steps 3 --prompts 2 --generations 4 --held-out 18 --eval-samples 1``, 1 thread
on the shared 2-core CPU, 3–6 minutes a run), greedy / sampled accuracy before → after:
control 0.333 → 0.333 / 0.111 → 0.111; endogenous 0.333 → 0.444 / 0.111 → 0.167; verifier
0.333 → 0.722 / 0.111 → 0.111; hybrid as endogenous (its totals of tens of nats swamp the
verifier's 1). One problem is 0.056: only the verifier's greedy gain is above the noise.

    python benchmarks/grpo_real.py                       # 8 steps per run
    python benchmarks/grpo_real.py --steps 2 --held-out 9 --eval-samples 1   # a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

RUNS = ("control", "endogenous", "verifier", "hybrid")


def run_one(name: str, args) -> dict:
    from endorm_mini.cli import main

    out = os.path.join(args.out, name)
    if os.path.exists(os.path.join(out, "summary.json")):   # a finished run is kept
        with open(os.path.join(out, "summary.json")) as f:
            return json.load(f)
    reward = "endogenous" if name == "control" else name
    steps = 1 if name == "control" else args.steps
    argv = ["grpo", "--model", "smollm2-135m", "--dataset", "digit-sums", "--reward", reward,
            "--steps", str(steps), "--prompts-per-step", str(args.prompts),
            "--num-generations", str(args.generations), "--max-completion-length",
            str(args.tokens), "--learning-rate", str(args.lr), "--eval-problems",
            str(args.held_out), "--eval-samples", str(args.eval_samples), "--seed",
            str(args.seed), "--save-every", "1000", "--out", out]
    if name == "control":
        argv += ["--learning-rate", "1e-30"]   # the last one counts: a step that moves nothing
    start = time.perf_counter()
    code = main(argv)
    if code:
        sys.exit(f"{name}: endorm-mini grpo exited {code}")
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    summary["wall_seconds"] = round(time.perf_counter() - start, 1)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=8, help="GRPO steps per trained run")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--generations", type=int, default=4, help="completions per prompt")
    p.add_argument("--tokens", type=int, default=16, help="tokens per completion")
    p.add_argument("--lr", type=float, default=1e-5, help="learning rate")
    p.add_argument("--held-out", type=int, default=27, help="held-out problems (of 81)")
    p.add_argument("--eval-samples", type=int, default=2, help="sampled answers per problem")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    p.add_argument("--out", default="runs/grpo_real")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    results = {name: run_one(name, args) for name in args.runs}
    print(f"\nsmollm2-135m on digit-sums, {args.held_out} held-out problems, {args.tokens} tokens; "
          f"{args.steps} steps × {args.prompts} prompts × {args.generations} completions, "
          f"lr {args.lr}, seed {args.seed}, {args.threads} thread(s)")
    print(f"{'run':<11} {'greedy before → after':>22} {'sampled before → after':>23} {'seconds':>8}")
    for name, s in results.items():
        print(f"{name:<11} {s['base_greedy_accuracy']:>10.3f} → {s['greedy_accuracy']:<9.3f} "
              f"{s['base_accuracy']:>11.3f} → {s['accuracy']:<9.3f} {s.get('wall_seconds', 0):>8}")


if __name__ == "__main__":
    main()

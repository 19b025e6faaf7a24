"""How fast the command line answers without doing any work (issue 20, item 3).

`endorm-mini --help`, every `endorm-mini COMMAND --help` and an argument error, each timed as
a fresh process (`python -m endorm_mini.cli ...`), the best of --rounds, against `python -c
pass` (the interpreter's own start). Prints seconds and the ratio to the baseline; the target
is under 1 s each. A benchmark, not a test: timings depend on the machine and its load
(tests/test_cli_fast.py checks the cause instead: building the parser imports no torch).

    python benchmarks/cli.py              # 5 rounds
    python benchmarks/cli.py --rounds 1   # a smoke run
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.0   # seconds
CASES = [("python -c pass (baseline)", ["-c", "pass"]), ("endorm-mini --help", ["--help"])]
COMMANDS = ["tour", "score", "zoo", "zoo list", "zoo fetch", "zoo retrain", "rmbench",
            "diagonal", "ppo", "grade", "build-lessons", "start", "grpo", "grpo-eval"]
CASES += [(f"endorm-mini {c} --help", [*c.split(), "--help"]) for c in COMMANDS]
CASES += [("argument error: ppo --steps 0", ["ppo", "--steps", "0"]),
          ("argument error: rmbench (no --out)", ["rmbench"]),
          ("argument error: score --alpha -1", ["score", "--prompt", "p", "--response", "r",
                                                "--alpha", "-1"]),
          ("argument error: unknown command", ["nonsense"])]


def seconds(args: list[str], rounds: int) -> float:
    cmd = [sys.executable, *args] if args[0] == "-c" else [sys.executable, "-m",
                                                           "endorm_mini.cli", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env, check=False)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs per case; the best counts")
    args = parser.parse_args()
    base = seconds(CASES[0][1], args.rounds)
    print(f"{'case':<44}{'seconds':>9}{'× python':>10}  under {TARGET:g} s")
    slow = 0
    for name, argv in CASES:
        t = base if argv == CASES[0][1] else seconds(argv, args.rounds)
        slow += t >= TARGET
        print(f"{name:<44}{t:>9.3f}{t / base:>10.1f}  {'yes' if t < TARGET else 'NO'}")
    print(f"{len(CASES) - slow}/{len(CASES)} under {TARGET:g} s (best of {args.rounds}; "
          f"python {sys.version.split()[0]})")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())

"""The endogenous reward's share of a TRL GRPO step (issue 13, item 6).

The tiny work: TRL's ``GRPOTrainer`` on tiny-arith, the policy and the frozen reference both
the zoo's ``tiny-arith`` (fp32, CPU, one process), 16 prompts × 4 completions a step,
``max_completion_length`` 8, β = 0 (GRPO's default: the reward's is the only reference
forward), learning rate 1e-6 (so both runs generate alike). Two reward functions in the same
run, in alternating rounds:

- ``zero``        a zero-cost Python reward (0.0 for every completion): the step without reward
- ``endogenous``  ``EndogenousRewardFunction("tiny-arith")`` (eq. 12 on the trainer's ids)

Step times come from a ``TrainerCallback`` (median over the measured steps), the reward's
time from its own clock; the clock is this process's CPU time (``--clock cpu``, the default:
on a shared machine a neighbour's load stretches wall time at random, not CPU time) or wall
time (``--clock wall``; use it with ``--threads`` > 1). Printed: the reward's share of an
endogenous step (its time / the step) and the step's growth over the zero-cost run
((endogenous − zero) / endogenous).

    python benchmarks/grpo_reward.py                # 30 measured steps after 5 warm-up, 3 rounds
    python benchmarks/grpo_reward.py --quick        # a smoke run
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS, GROUP, LENGTH = 16, 4, 8


def zero_reward(prompts, completions, completion_ids, **kwargs):
    """The baseline: a reward that costs nothing."""
    return [0.0] * len(completion_ids)


class Clock:
    """Step times from a TrainerCallback; the reward's time from a wrapper around it."""

    now = staticmethod(time.process_time)   # main() sets the clock

    def __init__(self):
        self.steps, self.rewards = [], []
        self.last, self.reward = None, 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            t0 = self.now()
            try:
                return fn(*args, **kwargs)
            finally:
                self.reward += self.now() - t0
        timed.__name__ = getattr(fn, "__name__", "reward")
        return timed

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class StepClock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                clock.last = clock.now()

            def on_step_end(self, args, state, control, **kwargs):
                clock.steps.append(clock.now() - clock.last)
                clock.rewards.append(clock.reward)
                clock.reward = 0.0
        return StepClock()


def run(kind: str, steps: int, warm: int, seed: int = 0) -> tuple[float, float]:
    """Median seconds per step and per reward call over ``steps`` after ``warm`` steps."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from endorm_mini.scale.reward import EndogenousRewardFunction
    from endorm_mini import models
    from endorm_mini.worlds import arith_problems

    model, tokenizer = models.load("tiny-arith", device="cpu")
    reward = zero_reward if kind == "zero" else EndogenousRewardFunction("tiny-arith")
    rows = [{"prompt": [{"role": "user", "content": p}]} for p in arith_problems()]
    clock = Clock()
    args = GRPOConfig(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to="none", bf16=False,
                      per_device_train_batch_size=PROMPTS * GROUP, num_generations=GROUP,
                      max_completion_length=LENGTH, beta=0.0, learning_rate=1e-6,
                      max_steps=warm + steps, save_strategy="no", logging_strategy="no",
                      activation_checkpointing=False, disable_tqdm=True, seed=seed)
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, args=args,
                          reward_funcs=[clock.wrap(reward)],
                          train_dataset=Dataset.from_list(rows), callbacks=[clock.callback()])
    trainer.train()
    return statistics.median(clock.steps[warm:]), statistics.median(clock.rewards[warm:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="measured steps per run")
    parser.add_argument("--warm", type=int, default=5, help="warm-up steps per run, not measured")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds; each kind's fastest step is kept")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared CPU: 1)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="CPU time of this process (default) or wall time")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 steps, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warm, args.rounds = 3, 1, 1
    import torch
    torch.set_num_threads(args.threads)
    Clock.now = staticmethod(time.process_time if args.clock == "cpu" else time.perf_counter)
    best = {"zero": (float("inf"), 0.0), "endogenous": (float("inf"), 0.0)}
    for r in range(args.rounds):
        order = ("zero", "endogenous") if r % 2 == 0 else ("endogenous", "zero")
        for kind in order:
            step, reward = run(kind, args.steps, args.warm)
            print(f"round {r + 1} {kind:<10} {step * 1e3:7.1f} ms/step, reward "
                  f"{reward * 1e3:6.2f} ms ({reward / step:.1%})")
            best[kind] = min(best[kind], (step, reward))
    (zero, _), (endo, reward) = best["zero"], best["endogenous"]
    print(f"GRPO step on tiny-arith ({PROMPTS} prompts × {GROUP}, ≤ {LENGTH} tokens, "
          f"{args.threads} thread(s), {args.clock} time): zero-cost reward {zero * 1e3:.1f} ms, "
          f"endogenous {endo * 1e3:.1f} ms")
    print(f"endogenous reward: {reward * 1e3:.2f} ms = {reward / endo:.1%} of the step "
          f"(target ≤ 15%); step {(endo - zero) / endo:+.1%} over the zero-cost reward")


if __name__ == "__main__":
    main()

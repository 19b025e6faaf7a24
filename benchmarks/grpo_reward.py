"""The endogenous reward's share of a TRL GRPO step (issue 13, item 6; issue 22, item 7).

The tiny work: TRL's ``GRPOTrainer`` on tiny-arith, the policy and the frozen reference both
the zoo's ``tiny-arith`` (fp32, CPU, one process), 16 prompts × 4 completions a step,
``max_completion_length`` 8, learning rate 1e-6 (so the runs generate alike). Four runs, in
alternating rounds:

- ``zero``        β = 0, a zero-cost Python reward (0.0 for every completion): the step without
                  reward
- ``endogenous``  β = 0, ``EndogenousRewardFunction("tiny-arith")`` (eq. 12 on the trainer's
                  ids): the reward's own reference forward
- ``zero-kl``     β = 0.01, the zero-cost reward: TRL's KL reference forward, no reward
- ``reuse``       β = 0.01, ``--reuse-kl-reference`` (``scale.kl_reference``, α = T = 1): the
                  reward from TRL's KL reference forward; its time is the reward call plus
                  ``V(s_{T+1})`` through the LM head (``last_values``) inside that forward

Step times come from a ``TrainerCallback`` (median over the measured steps), the reward's
time from its own clock; the clock is this process's CPU time (``--clock cpu``, the default:
on a shared machine a neighbour's load stretches wall time at random, not CPU time) or wall
time (``--clock wall``; use it with ``--threads`` > 1). Printed: each reward's share of its
step (its time / the step) and the step's growth over the zero-cost run at the same β
((reward − zero) / reward); then the reward's memory per process in the 7B recipe
(``recipe.reward_memory``).

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


BETA = {"zero": 0.0, "endogenous": 0.0, "zero-kl": 0.01, "reuse": 0.01}
BASELINE = {"endogenous": "zero", "reuse": "zero-kl"}   # the same step without the reward


def run(kind: str, steps: int, warm: int, seed: int = 0) -> tuple[float, float]:
    """Median seconds per step and per reward call over ``steps`` after ``warm`` steps."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from endorm_mini import models
    from endorm_mini.scale import kl_reference
    from endorm_mini.scale.reward import EndogenousRewardFunction
    from endorm_mini.worlds import arith_problems

    model, tokenizer = models.load("tiny-arith", device="cpu")
    clock = Clock()
    if kind == "reuse":
        reward = kl_reference.KLReferenceReward(1.0, tokenizer.eos_token_id)
        untimed = kl_reference.last_values
        kl_reference.last_values = clock.wrap(untimed)   # V(s_{T+1}) counts as the reward's
        trainer_class = kl_reference.reusing_trainer(GRPOTrainer)
    else:
        reward = EndogenousRewardFunction("tiny-arith") if kind == "endogenous" else zero_reward
        trainer_class = GRPOTrainer
    rows = [{"prompt": [{"role": "user", "content": p}]} for p in arith_problems()]
    args = GRPOConfig(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to="none", bf16=False,
                      per_device_train_batch_size=PROMPTS * GROUP, num_generations=GROUP,
                      max_completion_length=LENGTH, beta=BETA[kind], learning_rate=1e-6,
                      max_steps=warm + steps, save_strategy="no", logging_strategy="no",
                      activation_checkpointing=False, disable_tqdm=True, seed=seed)
    trainer = trainer_class(model=model, processing_class=tokenizer, args=args,
                            reward_funcs=[clock.wrap(reward)],
                            train_dataset=Dataset.from_list(rows), callbacks=[clock.callback()])
    if kind == "reuse":
        trainer.kl_reference_reward = reward
    try:
        trainer.train()
    finally:
        if kind == "reuse":
            kl_reference.last_values = untimed
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
    best = {kind: (float("inf"), 0.0) for kind in BETA}
    for r in range(args.rounds):
        order = tuple(BETA) if r % 2 == 0 else tuple(reversed(BETA))
        for kind in order:
            step, reward = run(kind, args.steps, args.warm)
            print(f"round {r + 1} {kind:<10} {step * 1e3:7.1f} ms/step, reward "
                  f"{reward * 1e3:6.2f} ms ({reward / step:.1%})", flush=True)
            best[kind] = min(best[kind], (step, reward))
    print(f"GRPO step on tiny-arith ({PROMPTS} prompts × {GROUP}, ≤ {LENGTH} tokens, "
          f"{args.threads} thread(s), {args.clock} time), the fastest round of each:")
    for kind, baseline in BASELINE.items():
        (zero, _), (step, reward) = best[baseline], best[kind]
        print(f"  {kind:<10} (β = {BETA[kind]:g}): reward {reward * 1e3:.2f} ms = "
              f"{reward / step:.1%} of a {step * 1e3:.1f} ms step (target ≤ 3% with the reuse); "
              f"step {(step - zero) / step:+.1%} over {baseline} ({zero * 1e3:.1f} ms)")
    from endorm_mini.scale import recipe

    memory = recipe.reward_memory()
    print(f"7B recipe ({recipe.MODEL}, {recipe.GPUS} GPUs, ZeRO-3, "
          f"{memory['micro_batch']} completions a micro-step), the reward's memory per process: "
          f"own reference {memory['own']:.2f} GB (whole bf16 copy); --reuse-kl-reference "
          f"{memory['reuse']:.2f} GB (transient: the LM head gathered for V(s_{{T+1}}) + the "
          f"micro-batch's fp32 logits at one position)")

if __name__ == "__main__":
    main()

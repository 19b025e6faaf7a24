"""``endorm-mini tour``: what the kit does, offline, in about a minute on a laptop CPU.

1. The endogenous reward of one response, token by token (eq. 12), and the check that
   its sum telescopes to ``α·Σ log π̂ + V(s_1)`` (eq. 11–12, terminal ``V = 0``).
2. The same reward as a judge: a mini RM-Bench (four domains, Easy/Normal/Hard) and the
   persona diagonal — no reward model is trained.
3. Why RL on it helps: the imitating model is right when decoding greedily but only
   about as often as its noisy teacher when sampling.
A figure of the per-token rewards is saved to the folder it names.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

PROMPT, GOOD, BAD = "What is the capital of France?", "Paris.", "Lyon."


def run_tour(out_dir: str | Path = "endorm-mini-tour", device: str = "cpu", n_per_domain: int = 10,
             seed: int = 0) -> dict:
    """Print the tour and save its figure; returns the figures measured (for tests)."""
    import matplotlib
    import torch
    matplotlib.use("Agg")

    from .. import models, verifiers, worlds
    from ..bench import diagonal, methods, rmbench
    from ..device import resolve_device
    from ..reward import EndogenousReward
    from ..viz import plot_token_rewards

    resolve_device(device)   # a device this machine lacks fails here, before any output
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    print("endorm-mini tour: the reward model hidden inside a language model\n")

    # 1. one response, token by token
    model, tokenizer = models.load("tiny-domains", device=device)
    reward = EndogenousReward(model, tokenizer, alpha=1.0, device=device)
    good, bad = reward.score(PROMPT, GOOD), reward.score(PROMPT, BAD)
    print(f"1. tiny-domains ({sum(p.numel() for p in model.parameters()):,} parameters) scores "
          f"{GOOD!r} for {PROMPT!r}:")
    print(good.table())
    identity = reward.alpha * float(good.logprobs.sum()) + float(good.values[0])
    print(f"   telescoping: Σ r̂ = {good.total:.4f} and α·Σ log π̂ + V(s_1) = {identity:.4f} "
          f"({'equal' if abs(identity - good.total) < 1e-4 else 'DIFFERENT'})")
    print(f"   {BAD!r} totals {bad.total:.4f}: the model prefers "
          f"{GOOD if good.total > bad.total else BAD!r} — V(s_1) cancels between the two.\n")
    ax = plot_token_rewards(good, title=f"endogenous reward of {GOOD!r} (total {good.total:.2f})")
    figure = out_dir / "token_rewards.png"
    ax.figure.savefig(figure, dpi=120)

    # 2. a judge with no training: mini RM-Bench and the persona diagonal
    items = worlds.mini_rmbench(n_per_domain, seed=seed)
    method = methods.make_method("endogenous", model, tokenizer)
    rewards = [{"id": x["id"], "domain": x["domain"], "chosen": method(x["prompt"], x["chosen"]),
                "rejected": method(x["prompt"], x["rejected"])} for x in items]
    table = rmbench.score(items, rewards)
    print(f"2. mini RM-Bench ({len(items)} items, RM-Bench's format and scoring), endogenous reward:")
    print(rmbench.format_table(table))
    matrix, rows, columns = diagonal.persona_diagonal(method, n=8, seed=seed, progress=False)
    print("\n   the persona diagonal (rows: system prompt of the judge; columns: whose answer "
          "is chosen; preference accuracy):")
    print(diagonal.format_matrix(matrix, rows, columns))

    # 3. imitation vs its mode: the gap RL on the endogenous reward closes
    arith, arith_tok = models.load("tiny-arith", device=device)
    problems = worlds.arith_problems()[::4]
    greedy = verifiers.arith_accuracy(arith, arith_tok, problems, temperature=0.0, device=device)
    sampled = verifiers.arith_accuracy(arith, arith_tok, problems, temperature=1.0, seed=seed, device=device)
    teacher = json.loads((Path(models.resolve("tiny-arith")) / "metadata.json").read_text())
    print(f"\n3. tiny-arith imitated a teacher: {teacher['summary']}.\n   Greedy accuracy "
          f"{greedy:.2f}, sampled (T = 1) {sampled:.2f}. RL on its own endogenous reward "
          "climbs toward the greedy figure (lesson 09).")
    print(f"\nfigure saved to {figure}")
    print("next: `endorm-mini start` copies the lessons into my-lessons/, your folder; open "
          "00_start_here.ipynb there. `endorm-mini --help` lists the commands.")
    return {"total": good.total, "identity": identity, "overall": table["overall"]["avg"],
            "greedy": greedy, "sampled": sampled, "figure": figure, "diagonal": matrix}


def _tour_command(args: argparse.Namespace) -> int:
    from ..runfolder import check_writable, run_folder

    check_writable(args.out)           # a file or a read-only folder: one line, before the tour
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # tiny checkpoints load instantly; keep the tour readable
    torch.set_num_threads(1)           # ~100k-parameter models: extra threads only add hand-offs
    with run_folder(args.out, "tour"):
        run_tour(args.out, device=args.device, seed=args.seed)
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("tour", help="a one-minute offline tour of the kit",
                       description="Per-token endogenous rewards, the telescoping check, a mini "
                                   "RM-Bench and the persona diagonal on the shipped tiny models.")
    p.add_argument("--out", default="endorm-mini-tour", help="folder for the figure")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (tiny models: cpu is fastest)")
    p.add_argument("--seed", type=int, default=0, help="seeds the mini-bench and the sampling")
    p.set_defaults(func=_tour_command)

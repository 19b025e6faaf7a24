"""RM-Bench rebuilt, reward methods, and the domain diagonal (DESIGN.md; docs/paper.md §7 Q1–Q2).

- ``rmbench``:       load RM-Bench (files or Hugging Face), score Easy / Normal / Hard
- ``methods``:       reward methods with one interface, over ``EndogenousReward``
- ``bradley_terry``: a trained Bradley–Terry reward model (eq. 4), the trained baseline
- ``runner``:        score a benchmark into ``rewards.jsonl`` incrementally, resumable
- ``diagonal``:      one reward per system prompt, evaluated on every persona's pairs

Commands: ``endorm-mini rmbench`` and ``endorm-mini diagonal`` (registered here).
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from ..argtypes import positive_float, positive_int
from . import rmbench
from .methods import METHODS


def _load_model(name: str, device: str, dtype):
    """(model, tokenizer) for a zoo name, a local folder or a hub name (``zoo.load``)."""
    from ..zoo import load

    return load(name, device=device, dtype=dtype)


def _rmbench_items(args) -> tuple[list[dict], list[str], str]:
    """(items, problems, data label) for ``--data mini`` or a path."""
    if args.data == "mini":
        from .. import tasks

        raw = tasks.mini_rmbench(args.mini_n, seed=args.seed)
        items = [rmbench.validate_item(it, f"mini-bench, index {k}") for k, it in enumerate(raw)]
        return items, [], f"mini(n={args.mini_n}, seed={args.seed})"
    items, problems = rmbench.read_items(args.data)
    if not items:  # an empty file, or nothing valid in it: name the file
        reason = f": {problems[0]}" if problems else ""
        raise ValueError(f"no valid items in {args.data}{reason}")
    if problems and not args.skip_invalid:
        more = f" (and {len(problems) - 1} more; --skip-invalid scores the rest)" if len(problems) > 1 else \
            " (--skip-invalid scores the rest)"
        raise ValueError(problems[0] + more)
    return items, problems, str(Path(args.data).resolve())


def _rmbench_command(args: argparse.Namespace) -> int:
    from .methods import make_method
    from .runner import SetAside, run_rmbench, select, summary_path

    items, problems, data = _rmbench_items(args)
    selected = select(items, args.limit, args.limit_per_domain)  # bad limits fail before loading
    for problem in problems:
        print(f"skipped: {problem}")
    model = tokenizer = reference = None
    if args.method != "random":
        model, tokenizer = _load_model(args.model, args.device, args.dtype)
    if args.method == "dpo":
        if not args.ref_model:
            raise ValueError("--method dpo needs --ref-model (the reference the policy was trained from)")
        reference = _load_model(args.ref_model, args.device, args.dtype)
    method = make_method(args.method, model, tokenizer, alpha=args.alpha, gamma=args.gamma, beta=args.beta,
                         reference=reference, seed=args.seed, device=args.device)
    meta = {"model": None if args.method == "random" else args.model, "method": args.method, "data": data,
            "alpha": args.alpha, "gamma": args.gamma if args.method == "discounted" else None,
            "beta": args.beta if args.method == "dpo" else None, "ref_model": args.ref_model,
            "dtype": args.dtype, "seed": args.seed if args.method == "random" else None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SetAside)
        table = run_rmbench(items, method, args.out, meta=meta, limit=args.limit,
                            limit_per_domain=args.limit_per_domain, system=args.system,
                            skipped=problems, skip_errors=args.skip_invalid,
                            progress=not args.no_progress)
    for w in caught:  # the set-aside lines as a line of output; other warnings as they were
        if issubclass(w.category, SetAside):
            print(f"set aside: {w.message}")
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(f"RM-Bench accuracy (%) of {args.method} rewards from {meta['model'] or 'a seeded coin'}, "
          f"{table['overall']['n']} items:")
    print(rmbench.format_table(table))
    summary = summary_path(args.out, len(items), len(selected), args.limit, args.limit_per_domain)
    skipped = json.loads(summary.read_text())["skipped"]
    for problem in skipped[len(problems):]:
        print(f"skipped: {problem}")
    if skipped:
        print(f"{len(skipped)} item(s) skipped (listed above and in summary.json)")
    print(f"rewards: {Path(args.out) / 'rewards.jsonl'}  table: {summary}")
    return 0


def _diagonal_command(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt

    from .. import tasks
    from .diagonal import diagonal_dominates, format_matrix, persona_diagonal, plot_diagonal
    from .methods import make_method

    personas = [p.strip() for p in args.domains.split(",")] if args.domains else list(tasks.PERSONAS)
    for persona in personas:
        tasks.persona_system(persona)  # unknown names fail here, with the known ones listed
    model, tokenizer = _load_model(args.model, args.device, args.dtype)
    method = make_method(args.method, model, tokenizer, alpha=args.alpha, device=args.device)
    matrix, rows, columns = persona_diagonal(method, personas, n=args.n, seed=args.seed,
                                             progress=not args.no_progress)
    print(f"pairwise accuracy (%) of {args.method} rewards from {args.model}: "
          f"rows = system prompt of the reward, columns = persona of the pairs ({args.n} pairs each)")
    print(format_matrix(matrix, rows, columns))
    dominates = diagonal_dominates(matrix, rows, columns)
    print(f"diagonal dominates its row: {sum(dominates.values())}/{len(dominates)} personas")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig = plot_diagonal(matrix, rows, columns, path=out / "diagonal.png",
                        title=f"{args.method} reward of {args.model}: one judge per system prompt")
    plt.close(fig)
    (out / "diagonal.json").write_text(json.dumps(
        {"rows": rows, "columns": columns, "accuracy": matrix.tolist(), "dominates": dominates,
         "model": args.model, "method": args.method, "n": args.n, "seed": args.seed}, indent=2) + "\n")
    print(f"heatmap: {out / 'diagonal.png'}  matrix: {out / 'diagonal.json'}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny-domains", help="zoo name, local folder or Hugging Face name")
    p.add_argument("--alpha", type=positive_float, default=1.0,
                   help="soft-Q temperature α > 0 (1 = the model's own policy)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, ...")
    p.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: the model's own)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data and of --method random")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register_cli(sub) -> None:
    p = sub.add_parser("rmbench", help="score RM-Bench (or the tiny world's mini-bench) with a reward method",
                       description="Score every item's 3 chosen and 3 rejected responses, write "
                                   "DIR/rewards.jsonl as it goes (a rerun resumes), DIR/summary.json and "
                                   "print Easy/Normal/Hard per domain.")
    _common(p)
    p.add_argument("--data", default="mini", help="'mini' (generated offline), an RM-Bench JSON/JSONL "
                                                  "file, or the benchmark's data/ folder")
    p.add_argument("--method", default="endogenous", choices=METHODS)
    p.add_argument("--out", required=True, help="output folder (rewards.jsonl, summary.json, run.json)")
    limits = p.add_mutually_exclusive_group()
    limits.add_argument("--limit", type=positive_int, default=None,
                        help="score only the first N items (a quick look; its summary is "
                             "summary-limit-N.json)")
    limits.add_argument("--limit-per-domain", type=positive_int, default=None, metavar="N",
                        help="score only the first N items of each domain (a quick look at all "
                             "four; summary-limit-per-domain-N.json)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="skip malformed items (and items the model cannot score, e.g. too long) instead of stopping")
    p.add_argument("--system", default=None, help="a system prompt for every item (promptable rewards)")
    p.add_argument("--gamma", type=float, default=0.99, help="discount of --method discounted")
    p.add_argument("--beta", type=float, default=0.1, help="β of --method dpo")
    p.add_argument("--ref-model", default=None, help="reference model of --method dpo")
    p.add_argument("--mini-n", type=int, default=20, help="items per domain of --data mini")
    p.set_defaults(func=_rmbench_command)

    d = sub.add_parser("diagonal", help="one reward per persona system prompt, on every persona's pairs",
                       description="The domain diagonal (docs/paper.md §7 Q2): prints the accuracy matrix "
                                   "and saves DIR/diagonal.png and DIR/diagonal.json.")
    _common(d)
    d.add_argument("--domains", default=None, help="comma-separated personas (default: the tiny world's four)")
    d.add_argument("--method", default="endogenous", choices=[m for m in METHODS if m != "dpo"])
    d.add_argument("--n", type=int, default=20, help="preference pairs per persona")
    d.add_argument("--out", default="diagonal", help="output folder for the heatmap and matrix")
    d.set_defaults(func=_diagonal_command)

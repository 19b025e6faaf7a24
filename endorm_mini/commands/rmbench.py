"""``endorm-mini rmbench`` (RM-Bench's Easy/Normal/Hard with any reward method) and
``endorm-mini diagonal`` (one reward per system prompt on every persona's pairs)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from ..bench import METHODS
from .argtypes import positive_float, positive_int


def _load_model(name: str, device: str, dtype, device_map: str | None = None):
    """(model, tokenizer) for a zoo name, a local folder or a hub name (``models.load``); with
    ``device_map="auto"`` spread over the GPUs by accelerate (``scale.rmbench.load_spread``)."""
    if device_map is not None:
        from ..scale.rmbench import load_spread

        return load_spread(name, dtype=dtype)
    from ..models import load

    return load(name, device=device, dtype=dtype)


def _process_group(args):
    """The ``torchrun`` / ``accelerate launch`` process group, or None for a plain run."""
    world = os.environ.get("WORLD_SIZE", "1").strip()
    if world.isdigit() and int(world) <= 1:
        return None
    if args.device_map:
        raise ValueError(f"--device-map auto spreads one model over all of this machine's GPUs "
                         f"and cannot run in {world} processes (each would spread its own copy "
                         "over the same GPUs): run it as one process, without torchrun")
    from ..scale.rmbench import ProcessGroup

    return ProcessGroup.from_env()


def _rmbench_items(args) -> tuple[list[dict], list[str], str]:
    """(items, problems, data label) for ``--data mini``, ``real-mini`` or a path."""
    from ..bench import rmbench

    if args.data == "real-mini":
        from ..worlds.real_mini import PATH

        args.data = str(PATH)
    if args.data == "mini":
        from .. import worlds

        raw = worlds.mini_rmbench(args.mini_n, seed=args.seed)
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


def _done(out: Path, selected) -> int:
    """How many of the selected items ``out`` holds rewards for (its jsonl and shards)."""
    from ..bench.rmbench import item_key
    from ..bench.runner import parse_records, shard_paths

    keys = set()
    for path in [out / "rewards.jsonl"] + shard_paths(out):
        keys.update(item_key(r) for r in parse_records(path))
    return sum(item_key(item) in keys for item in selected)


def _rmbench_command(args: argparse.Namespace) -> int:
    from ..alpha_range import warn_alpha
    from ..bench.runner import select
    from ..runfolder import check_writable, run_folder

    check_writable(args.out)
    if args.method == "dpo" and not args.ref_model:
        raise ValueError("--method dpo needs --ref-model (the reference the policy was "
                         "trained from)")
    if args.method != "random":
        warn_alpha(args.alpha)
    group = _process_group(args)          # refusals come before any model is loaded
    items, problems, data = _rmbench_items(args)
    selected = select(items, args.limit, args.limit_per_domain)  # bad limits fail before loading
    first = group is None or group.rank == 0
    with run_folder(args.out, "rmbench", primary=first) as out:
        done = _done(out, selected)
        if first and 0 < done < len(selected):
            print(f"resuming at {done}/{len(selected)}: the items already in {out} are kept",
                  flush=True)
        try:
            return _score(args, group, items, problems, data, selected)
        except KeyboardInterrupt:
            print(f"\nendorm-mini rmbench: interrupted at {_done(out, selected)}/{len(selected)}"
                  "; rerun the same command to resume", file=sys.stderr)
            return 130


def _score(args, group, items, problems, data, selected) -> int:
    from ..bench import rmbench
    from ..bench.methods import make_method
    from ..bench.runner import SetAside, run_rmbench, summary_path

    device = group.device(args.device) if group else args.device
    if group is None or group.rank == 0:
        for problem in problems:
            print(f"skipped: {problem}")
    model = tokenizer = reference = None
    if args.method != "random":
        model, tokenizer = _load_model(args.model, device, args.dtype, args.device_map)
    if args.method == "dpo":
        reference = _load_model(args.ref_model, device, args.dtype, args.device_map)
    method = make_method(args.method, model, tokenizer, alpha=args.alpha, gamma=args.gamma, beta=args.beta,
                         reference=reference, seed=args.seed, device=device)
    meta = {"model": None if args.method == "random" else args.model, "method": args.method, "data": data,
            "alpha": args.alpha, "gamma": args.gamma if args.method == "discounted" else None,
            "beta": args.beta if args.method == "dpo" else None, "ref_model": args.ref_model,
            "dtype": args.dtype, "seed": args.seed if args.method == "random" else None}
    run = run_rmbench
    if group is not None:  # one shard per process, merged by rank 0 (scale.rmbench)
        from functools import partial

        from ..scale.rmbench import run_rmbench_sharded

        run = partial(run_rmbench_sharded, group=group)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SetAside)
        table = run(items, method, args.out, meta=meta, limit=args.limit,
                    limit_per_domain=args.limit_per_domain, system=args.system,
                    skipped=problems, skip_errors=args.skip_invalid, progress=not args.no_progress)
    for w in caught:  # the set-aside lines as a line of output; other warnings as they were
        if issubclass(w.category, SetAside):
            print(f"{f'[rank {group.rank}] ' if group else ''}set aside: {w.message}")
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if table is None:  # a process other than rank 0: its shard is written, rank 0 reports
        return 0
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
    if group is not None:
        print(f"shards: {Path(args.out) / 'rewards.rank-*.jsonl'} ({group.world_size} processes)")
    return 0


def _diagonal_command(args: argparse.Namespace) -> int:
    from ..alpha_range import warn_alpha
    from ..runfolder import check_writable, run_folder

    check_writable(args.out)
    warn_alpha(args.alpha)
    from .. import worlds

    personas = [p.strip() for p in args.domains.split(",")] if args.domains else list(worlds.PERSONAS)
    for persona in personas:
        worlds.persona_system(persona)  # unknown names fail here, with the known ones listed
    with run_folder(args.out, "diagonal"):
        return _diagonal(args, personas)


def _diagonal(args: argparse.Namespace, personas: list[str]) -> int:
    import matplotlib.pyplot as plt

    from ..bench.diagonal import diagonal_dominates, format_matrix, persona_diagonal, plot_diagonal
    from ..bench.methods import make_method

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
                                   "print Easy/Normal/Hard per domain. Under torchrun or accelerate "
                                   "launch each process scores its share into "
                                   "DIR/rewards.rank-R.jsonl and rank 0 merges.")
    _common(p)
    p.add_argument("--data", default="mini", help="'mini' (generated offline), 'real-mini' (real text, "
                   "written for the kit), an RM-Bench JSON/JSONL "
                                                  "file, or the benchmark's data/ folder")
    p.add_argument("--method", default="endogenous", choices=METHODS,
                   help="the reward: endogenous (eq. 12), meanlogprob, discounted (--gamma), "
                        "dpo (--ref-model), verifier (the model asked yes/no), judge (the model asked "
                        "'A or B?' for each chosen/rejected pair, both orders), random (a coin)")
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
    p.add_argument("--device-map", choices=["auto"], default=None,
                   help="auto: spread a model larger than one GPU over all GPUs (then CPU, disk) "
                        "with accelerate's big-model loading (--device is then unused); one "
                        "process only")
    p.set_defaults(func=_rmbench_command)

    d = sub.add_parser("diagonal", help="one reward per persona system prompt, on every persona's pairs",
                       description="The domain diagonal (docs/paper.md §7 Q2): prints the accuracy matrix "
                                   "and saves DIR/diagonal.png and DIR/diagonal.json.")
    _common(d)
    d.add_argument("--domains", default=None, help="comma-separated personas (default: the tiny world's four)")
    d.add_argument("--method", default="endogenous", choices=[m for m in METHODS if m != "dpo"],
                   help="the reward method (as in rmbench)")
    d.add_argument("--n", type=int, default=20, help="preference pairs per persona")
    d.add_argument("--out", default="diagonal", help="output folder for the heatmap and matrix")
    d.set_defaults(func=_diagonal_command)

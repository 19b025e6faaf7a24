"""``endorm-mini score``: the per-token endogenous reward of a response, or which of several
responses the reward prefers (``reward.EndogenousReward`` on a ``models.load``-ed model)."""
from __future__ import annotations

import argparse
import math
import warnings

from .argtypes import positive_float


def _score_command(args: argparse.Namespace) -> int:
    from ..alpha_range import warn_alpha
    from ..models import load
    from ..reward import EndogenousReward

    warn_alpha(args.alpha)  # before the model loads
    model, tokenizer = load(args.model, device=args.device, dtype=args.dtype)
    er = EndogenousReward(model, tokenizer, alpha=args.alpha, device=args.device)
    prompts = [args.prompt] * len(args.response)
    results = er.score_batch(prompts, args.response, system=args.system, progress=False)
    print(f"model {args.model}, α = {args.alpha}, prompt {args.prompt!r}")
    if len(results) == 1 or args.table:
        for response, result in zip(args.response, results):
            if len(results) > 1:
                print(f"\nresponse {response!r}:")
            print(result.table())
    if len(results) > 1:
        print(("\n" if args.table else "") + _compare(args.response, results))
    if not all(math.isfinite(r.total) for r in results):
        warnings.warn("a total is not finite")
    return 0


def _compare(responses: list[str], results: list) -> str:
    """Each response's total and ``α·Σ log π̂``, and the one the reward prefers."""
    lines = ["  total Σ r̂   α·Σ log π̂  tokens  response"]   # r̂, π̂: two code points, one column
    for response, r in zip(responses, results):
        sum_logprobs = r.alpha * float(r.logprobs.sum())
        lines.append(f"{r.total:>11.4f} {sum_logprobs:>11.4f} {len(r.tokens):>7}  {response!r}")
    totals = [r.total for r in results]
    best = max(range(len(totals)), key=totals.__getitem__)
    runner_up = max(t for k, t in enumerate(totals) if k != best)
    if totals[best] == runner_up:
        lines.append("the reward ties: no response is preferred")
    else:
        margin = totals[best] - runner_up
        lines.append(f"the endogenous reward prefers {responses[best]!r} (+{margin:.4f}); "
                     "V(s_1) is shared, so α·Σ log π̂ decides")
    return "\n".join(lines)


def register_cli(sub) -> None:
    p = sub.add_parser("score", help="per-token endogenous rewards of a response, or which of "
                                     "several it prefers",
                       description="One --response: print its per-token endogenous reward table "
                                   "(eq. 12) and total. Several (--response A --response B ...): "
                                   "print each total and the response the reward prefers.")
    p.add_argument("--model", default="tiny-domains", help="zoo name, local path or hub name")
    p.add_argument("--prompt", required=True, help="the prompt the response answers")
    p.add_argument("--response", required=True, action="append",
                   help="a response to score; repeat to compare several (e.g. a right and a "
                        "wrong answer)")
    p.add_argument("--table", action="store_true",
                   help="with several responses, print each per-token table too")
    p.add_argument("--system", default=None, help="optional system prompt")
    p.add_argument("--alpha", type=positive_float, default=1.0,
                   help="soft-Q temperature α > 0 (1 = the model's policy; warned outside "
                        "1e-3 … 1e3)")
    p.add_argument("--device", default="auto",
                   help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    p.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: the model's own)")
    p.set_defaults(func=_score_command)

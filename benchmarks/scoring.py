"""Scoring speed and memory: ``EndogenousReward`` vs a naive loop vs a bare forward (issue 5, item 6).

Three ways to score the same (prompt, response) token ids, each in its own process so
its peak memory is its own:

- ``bare``        the limit: one plain forward per response (``model(ids).logits``), nothing else
- ``naive``       how common reference code does it: one forward per response, then a full
                  fp32 log-softmax and logsumexp over every position and the whole vocabulary
- ``endogenous``  ``EndogenousReward.score_ids``: LM head only on response states, in chunks

Three models: the tiny zoo model (character tokenizer, texts as long as its context allows),
a randomly initialised Qwen2 with Qwen2.5's 151,936-token vocabulary and a small hidden
size, scored on random token ids (hundreds of tokens per response), and the real
SmolLM2-135M-Instruct (``smollm2-135m``, fetched once) on real-mini's responses in its own
chat template. Prints
responses/s, peak memory above the loaded model (VmHWM, reset after loading), the ratios
against the targets, and the largest score difference between ``naive`` and ``endogenous``.

    python benchmarks/scoring.py                 # all three models, 2 rounds, CPU, 1 thread
    python benchmarks/scoring.py --models smollm2-135m   # the real model on real-mini only
    python benchmarks/scoring.py --quick         # a smoke run
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

METHODS = ("bare", "naive", "endogenous")
QWEN_VOCAB = 151_936
REAL = "smollm2-135m"   # the real instruct model (4-bit copy, fetched once), on real-mini


def _rss_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read()).group(1))


def _reset_peak() -> None:
    """Set this process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def build(model_name: str, n: int, seed: int):
    """(model, eos id, prompt ids, response ids): the same in every worker for a given seed."""
    import random

    import torch

    rng = random.Random(seed)
    if model_name == "qwen-vocab":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(seed)
        config = Qwen2Config(vocab_size=QWEN_VOCAB, hidden_size=64, intermediate_size=256,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=2048, tie_word_embeddings=True,
                             eos_token_id=QWEN_VOCAB - 1, pad_token_id=QWEN_VOCAB - 2)
        model, eos = Qwen2ForCausalLM(config).eval(), QWEN_VOCAB - 1
        vocab = QWEN_VOCAB - 2
        prompt_len, response_len = (64, 160), (200, 600)
        prompts = [[rng.randrange(vocab) for _ in range(rng.randint(*prompt_len))] for _ in range(n)]
        responses = [[rng.randrange(vocab) for _ in range(rng.randint(*response_len))] + [eos] for _ in range(n)]
        return model, None, prompts, responses
    from endorm_mini import models, worlds
    from endorm_mini.chat import prompt_ids, response_ids

    model, tok = models.load(model_name, device="cpu")
    if model_name == REAL:  # real-mini's own texts: each item's six responses, every domain
        from endorm_mini.bench import rmbench
        from endorm_mini.bench.runner import select
        from endorm_mini.worlds.real_mini import PATH

        items = select(rmbench.load(PATH), limit_per_domain=-(-n // 24))
        pairs = [(item["prompt"], r) for item in items
                 for r in item["chosen"] + item["rejected"]][:n]
        return (model, tok, [prompt_ids(tok, p) for p, _ in pairs],
                [response_ids(tok, r) for _, r in pairs])
    context = model.config.get_text_config().max_position_embeddings
    # Real text from the tiny world, repeated to "hundreds of tokens": as long as the context allows.
    items = worlds.mini_rmbench(max(1, n // 12 + 1), seed=seed)
    prompts, responses = [], []
    for k in range(n):
        item = items[k % len(items)]
        p = prompt_ids(tok, item["prompt"])
        budget = context - len(p) - 1
        text = " ".join(item["chosen"][k % 3] for _ in range(64))[: rng.randint(budget // 2, budget)]
        prompts.append(p)
        responses.append(response_ids(tok, text.strip() or "ok"))
    return model, tok, prompts, responses


def worker(method: str, model_name: str, n: int, seed: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    model, tok, prompts, responses = build(model_name, n, seed)
    if tok is None:  # random ids: a stand-in tokenizer with just what EndogenousReward needs
        class Tok:
            eos_token_id = model.config.eos_token_id
            pad_token_id = model.config.pad_token_id
            eos_token = pad_token = "<eos>"

            def decode(self, ids):
                return str(ids[0])
        tok = Tok()
    if method == "endogenous":
        from endorm_mini.reward import EndogenousReward

        er = EndogenousReward(model, tok, device="cpu")
        run = lambda P, R: [r.total for r in er.score_ids(P, R, progress=False)]
    elif method == "naive":
        def run(P, R):
            out = []
            with torch.no_grad():
                for p, r in zip(P, R):
                    logits = model(torch.tensor([p + r])).logits[0].float()      # [L, V] every position
                    logp = torch.log_softmax(logits, -1)                          # [L, V] fp32
                    values = torch.logsumexp(logits, -1)                          # [L]
                    steps = torch.arange(len(p) - 1, len(p) + len(r) - 1)
                    lp = logp[steps, torch.tensor(r)]                             # [T]
                    ended = r[-1] == tok.eos_token_id
                    v_end = 0.0 if ended else float(values[len(p) + len(r) - 1])
                    out.append(float(lp.sum()) + float(values[len(p) - 1]) - v_end)  # α=1: Σ log π + V(s_1)
            return out
    else:
        def run(P, R):
            with torch.no_grad():
                for p, r in zip(P, R):
                    model(torch.tensor([p + r])).logits
            return []
    run(prompts[:1], responses[:1])  # warm-up: first-call allocations and kernel selection
    base_kb = _rss_kb("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    scores = run(prompts, responses)
    seconds = time.perf_counter() - start
    return {"method": method, "model": model_name, "n": n, "seconds": seconds,
            "tokens": sum(len(p) + len(r) for p, r in zip(prompts, responses)),
            "response_tokens": sum(len(r) for r in responses),
            "peak_mb": (_rss_kb("VmHWM") - base_kb) / 1024, "scores": scores}


def run_worker(method, model, n, seed, threads) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--models", model, "--n", str(n),
           "--seed", str(seed), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {method} on {model} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=f"tiny-domains,qwen-vocab,{REAL}",
                        help="comma-separated")
    parser.add_argument("--n", type=int, default=None,
                        help="responses scored per method (default: 24 on qwen-vocab, 480 on a tiny model, "
                             "so each timing lasts seconds)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all methods; the best time counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared CPU, OpenMP threads waiting for a busy "
                             "core made a 2 ms forward take 230 ms; use more on a machine of your own)")
    parser.add_argument("--quick", action="store_true", help="4 responses, 1 round")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.models, args.n, args.seed, args.threads)))
        return 0
    if args.quick:
        args.n, args.rounds = 4, 1
    failed = False
    for model in args.models.split(","):
        n = args.n or {"qwen-vocab": 24, REAL: 48}.get(model, 480)
        best: dict[str, dict] = {}
        for _ in range(args.rounds):  # interleaved, so load from other processes hits all alike
            for method in METHODS:
                res = run_worker(method, model, n, args.seed, args.threads)
                old = best.get(method)
                if old is None or res["seconds"] < old["seconds"]:
                    res["peak_mb"] = max(res["peak_mb"], old["peak_mb"] if old else 0.0)
                    best[method] = res
                else:
                    old["peak_mb"] = max(old["peak_mb"], res["peak_mb"])
        b = best["bare"]
        print(f"\n== {model}: {n} responses, {b['response_tokens'] / n:.0f} response tokens "
              f"and {(b['tokens'] - b['response_tokens']) / n:.0f} prompt tokens on average, "
              f"{args.threads} threads, best of {args.rounds}")
        print(f"{'method':<12}{'responses/s':>13}{'seconds':>10}{'peak MB':>10}")
        for method in METHODS:
            r = best[method]
            print(f"{method:<12}{n / r['seconds']:>13.2f}{r['seconds']:>10.2f}{r['peak_mb']:>10.1f}")
        speed = {m: n / best[m]["seconds"] for m in METHODS}
        diff = max(abs(a - c) for a, c in zip(best["endogenous"]["scores"], best["naive"]["scores"]))
        scale = max(abs(a) for a in best["naive"]["scores"])
        mem_ratio = best["endogenous"]["peak_mb"] / max(best["naive"]["peak_mb"], 1e-9)
        checks = [
            ("endogenous / bare forward speed", speed["endogenous"] / speed["bare"], ">= 0.90",
             speed["endogenous"] / speed["bare"] >= 0.90),
            ("endogenous / naive speed", speed["endogenous"] / speed["naive"], ">= 1.00",
             speed["endogenous"] / speed["naive"] >= 1.0),
            ("endogenous / naive peak memory", mem_ratio, "<= 0.50 (large vocab)",
             mem_ratio <= 0.5 or model != "qwen-vocab"),
            ("max |score difference| / max |score|", diff / scale, "<= 1e-5", diff / scale <= 1e-5),
        ]
        for name, value, target, ok in checks:
            failed |= not ok
            print(f"  {name:<38}{value:>10.4g}   target {target:<22}{'ok' if ok else 'MISSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU check, offline: lesson 09's PPO and the endogenous reward on a 0.5B-size Qwen2.

For a GPU machine without internet (one H100, say). Builds a randomly initialised Qwen2 with
Qwen2.5-0.5B's shapes (``endorm_mini.course.offline.random_qwen2``: 494M parameters, a 151,936-row
vocabulary, bf16 on disk, Qwen's tokenizer format and chat template) and tiny real-format
data (``offline.write_data``), then

1. **PPO as lesson 09's GSM8K section runs it**: the policy in fp32 trained under bf16
   autocast with gradient checkpointing, the frozen reference (= reward model) in bf16,
   8 questions × 4 samples per update, responses of up to 256 tokens, 8 minibatches,
   ``lr = 1e-6``, β = 0.01. Prints peak GPU memory and seconds per update (generation apart).
   A random model almost never emits eos, so every response runs to the horizon: the worst
   case of the lesson's time and memory.
2. **Scoring throughput** of ``EndogenousReward`` with the model in fp32, bf16 and fp16:
   responses/s, response tokens/s and peak memory, on RM-Bench-like lengths.
3. With ``--notebooks``: the GPU-branch notebooks (``offline.gpu_branch_notebooks``) top to
   bottom on cuda, with ``ENDORM_MINI_MODEL`` / ``ENDORM_MINI_DATA`` pointing at the stand-ins
   (``ENDORM_MINI_BRANCH=gpu`` too without cuda); seconds per notebook. Needs the ``dev``
   extra's nbclient, nbformat, ipykernel and nbval, which the workplace's H100 image lacks
   (it has torch 2.11, transformers 5.17, tokenizers 0.23): carry their wheels there.

Numbers of a random model are about memory and time only, never quality.

    python benchmarks/gpu_check.py                 # on a GPU: about 5 minutes on one H100
    python benchmarks/gpu_check.py --notebooks     # and the GPU-branch notebooks on cuda
    python benchmarks/gpu_check.py --skip-ppo --skip-scoring --notebooks --notebook-model smollm2-135m
    python benchmarks/gpu_check.py --tiny          # a CPU smoke test: tiny model, small sizes (~1 min)
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))       # run from a checkout without installing

import torch  # noqa: E402

from endorm_mini import models, ppo, verifiers, worlds  # noqa: E402
from endorm_mini.course import nbrun, offline  # noqa: E402
from endorm_mini.reward import EndogenousReward  # noqa: E402


def _peak_reset(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:   # this process's peak RSS (VmHWM) back to its current RSS (Linux ≥ 4.0)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def _peak_gib(device: str) -> str:
    if device == "cuda":
        torch.cuda.synchronize()
        return (f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated, "
                f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved")
    try:
        kib = int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
        return f"{kib / 2**20:.2f} GiB peak RSS (whole process)"
    except (OSError, AttributeError):
        return "n/a"


def check_ppo(folder, data, args, device: str) -> dict:
    """Lesson 09's real section, PPO part, with the stand-ins; returns the figures printed."""
    half = args.dtype
    _peak_reset(device)
    policy, tok = models.load(str(folder), device=device, dtype="fp32")
    ref, _ = models.load(str(folder), device=device, dtype=half)
    rows = worlds.gsm8k_rows("train", data)
    gold = {f"{r['question']}\n{worlds.GSM8K_INSTRUCTION}": worlds.gsm8k_gold(r["answer"]) for r in rows}
    prompts = list(gold)
    config = ppo.PPOConfig(steps=args.updates, prompts_per_update=args.prompts, samples_per_prompt=args.samples,
                           max_new_tokens=args.max_new_tokens, reward="endogenous", kl_coef=0.01, lr=1e-6,
                           minibatches=args.minibatches, dtype=None if half == "fp32" else half,
                           gradient_checkpointing=True, device=device, progress=False, seed=0)
    loaded = _peak_gib(device)
    start = time.perf_counter()
    history = ppo.train(policy, tok, prompts, config, ref_model=ref,
                        is_correct=lambda p, r: verifiers.math_correct(gold[p], r)).history
    seconds = time.perf_counter() - start
    later = history[1:] or history            # the first update also warms up kernels and the allocator
    per_update = sum(h["seconds"] for h in later) / len(later)
    gen = sum(h["gen_seconds"] for h in later) / len(later)
    length = sum(h["response_length"] for h in history) / len(history)
    print(f"PPO, {args.updates} updates of {args.prompts} × {args.samples} responses ≤ {args.max_new_tokens} tokens, "
          f"{args.minibatches} minibatches, policy fp32 + {half} autocast, reference {half}, gradient checkpointing:")
    print(f"  after loading policy + reference: {loaded}")
    print(f"  peak during PPO: {_peak_gib(device)}")
    print(f"  {per_update:.2f} s per update ({gen:.2f} s of it generating), first update "
          f"{history[0]['seconds']:.2f} s; {seconds:.1f} s in all; mean response length {length:.0f} tokens")
    del policy, ref
    return {"seconds_per_update": per_update, "generation_seconds": gen}


def check_scoring(folder, args, device: str) -> None:
    """EndogenousReward throughput per dtype on random texts of RM-Bench-like lengths."""
    import random

    rng = random.Random(0)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    words = [w for w in tok.get_vocab() if w.isalpha() and len(w) > 2] or ["word"]
    prompts = [" ".join(rng.choices(words, k=rng.randint(20, 60))) for _ in range(args.score_n)]
    responses = [" ".join(rng.choices(words, k=rng.randint(args.score_len // 2, args.score_len)))
                 for _ in range(args.score_n)]
    print(f"EndogenousReward, {args.score_n} responses of ~{args.score_len // 2}–{args.score_len} words:")
    for dtype in args.score_dtypes:
        model, tok = models.load(str(folder), device=device, dtype=dtype)
        reward = EndogenousReward(model, tok, device=device)
        reward.score_batch(prompts[:2], responses[:2], progress=False)          # warm-up
        _peak_reset(device)
        start = time.perf_counter()
        results = reward.score_batch(prompts, responses, progress=False)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        tokens = sum(len(r.token_ids) for r in results)
        print(f"  {dtype:>4}: {len(results) / seconds:8.1f} responses/s, {tokens / seconds:10.0f} response tokens/s, "
              f"peak {_peak_gib(device)}")
        del model, reward


def check_notebooks(folder, data, args, device: str) -> int:
    """The GPU-branch notebooks on this machine with the stand-ins; returns the number that failed."""
    import importlib

    try:
        import nbformat
        from nbclient.exceptions import CellExecutionError
        importlib.import_module("nbval.kernel")      # nbrun.run's kernel of this environment
    except ImportError as err:
        print(f"  cannot run notebooks here: {err} (pip install nbclient nbformat ipykernel nbval, "
              "the dev extra; offline, carry their wheels)")
        return 1

    env = {"ENDORM_MINI_MODEL": str(args.notebook_model or folder), "ENDORM_MINI_DATA": str(data)}
    if args.notebook_dtype:
        env["ENDORM_MINI_DTYPE"] = args.notebook_dtype
    if device != "cuda":
        env["ENDORM_MINI_BRANCH"] = "gpu"
    failed = 0
    for path in offline.gpu_branch_notebooks(ROOT / "solutions"):
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as cwd:
            try:
                nbrun.run(nb, cwd, timeout=1800, env=nbrun.kernel_env(**env))
                status = "ok"
            except CellExecutionError as err:
                failed += 1
                status = "FAILED: " + str(err).strip().splitlines()[-1][:300]
        print(f"  {path.name:<34}{time.perf_counter() - start:8.1f} s  {status}", flush=True)
    return failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true",
                        help="CPU smoke test: the tiny random Qwen2 and small sizes (on cuda if present)")
    parser.add_argument("--size", choices=sorted(offline.SIZES), help="model size (default: 0.5b; tiny with --tiny)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"),
                        help="PPO autocast and reference dtype (lesson 09's HALF)")
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8, help="questions per update")
    parser.add_argument("--samples", type=int, default=4, help="responses per question")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--minibatches", type=int, default=8)
    parser.add_argument("--score-n", type=int, default=64, help="responses to score per dtype")
    parser.add_argument("--score-len", type=int, default=400, help="longest response, in words")
    parser.add_argument("--score-dtypes", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--notebooks", action="store_true", help="also run the GPU-branch notebooks")
    parser.add_argument("--notebook-dtype", choices=("bf16", "fp16", "fp32"), default=None,
                        help="ENDORM_MINI_DTYPE for the notebooks (default: unset, their own choices as on Colab)")
    parser.add_argument("--notebook-model", default=None,
                        help="the GPU branch's model for --notebooks: a zoo name or folder, e.g. "
                             "smollm2-135m (a real model through every GPU branch; fetched or carried "
                             "there) (default: the random Qwen2 stand-in)")
    parser.add_argument("--skip-ppo", action="store_true")
    parser.add_argument("--skip-scoring", action="store_true")
    parser.add_argument("--out", default=None, help="folder for the stand-ins (default: a temporary one)")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        args.size = args.size or "tiny"
        for name, small in (("updates", 2), ("prompts", 2), ("max_new_tokens", 16), ("minibatches", 2),
                            ("score_n", 8), ("score_len", 60)):
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, small)
    args.size = args.size or "0.5b"
    if device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    root = Path(args.out or tempfile.mkdtemp(prefix="endorm-mini-gpu-check-"))
    gpu = torch.cuda.get_device_name() if device == "cuda" else "no GPU"
    print(f"gpu_check: device={device} ({gpu}) · torch {torch.__version__} · size={args.size} · dtype={args.dtype}")
    start = time.perf_counter()
    folder = offline.random_qwen2(root / f"qwen2-{args.size}", args.size, device=device)
    data = offline.write_data(root / "data")
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).parameters())
    print(f"built a random Qwen2 ({n:,} parameters) and tiny data in {time.perf_counter() - start:.1f} s: {root}")
    if not args.skip_ppo:
        check_ppo(folder, data, args, device)
    if not args.skip_scoring:
        check_scoring(folder, args, device)
    failed = 0
    if args.notebooks:
        print(f"GPU-branch notebooks on {device} with the stand-ins:")
        failed = check_notebooks(folder, data, args, device)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

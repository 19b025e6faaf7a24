"""PPO speed: ``endorm_mini.ppo`` vs TRL's trainers on the same work (issue 6.5; real model 18.6).

Two policies (``--model``), one code path. ``random-gpt2`` (default): a randomly initialised
2-layer GPT-2 (n_embd 64, the kit's character tokenizer), 64 sequences per update, prompts
from the arithmetic task. ``smollm2-135m``: the real SmolLM2-135M-Instruct (the fetched
folder ``endorm_mini.models.locate`` names), a CPU-sized 16 sequences per update (4 prompts
× 4 samples in the GRPO shape), the ``digit-sums`` prompts (``scale.grpo_data``), learning
rate 1e-6 (so the model stays itself and keeps answering in the same few tokens). Both fp32,
8-token responses, one epoch, one minibatch, prompts rendered by the chat template; tokens/s
= sequences × 8 / seconds per update (a real model ends early at eos: ``resp tokens`` is the
mean number each run generated, eos included). Each run is its own process (its peak
memory is its own):

- ``generate``      the limit: bare ``model.generate`` on the same batch and lengths
- ``floor``         the least any PPO update with a frozen reference does: that generate, one
                    reference forward, one policy forward and backward, an AdamW step
- ``ours``          ``endorm_mini.ppo.train``: endogenous reward and KL from one reference
                    forward, log-probs and values from the generation itself, value head
- ``trl-ppo``       TRL 1.12.0 ``trl.experimental.ppo.PPOTrainer`` as shipped: policy,
                    reference, value model and reward model (GPT-2 sequence classifiers of
                    the same size), so three forwards after generating; ``trl-ppo-nogc``
                    the same with its two ``gc.collect()`` calls per update patched out.
                    ``random-gpt2`` only: TRL's PPO needs the value and reward models as
                    sequence classifiers, and SmolLM2 has none (random heads on two more
                    copies would time a setup nobody runs), so the real model is compared
                    with TRL's GRPO and RLOO
- ``trl-grpo``, ``trl-rloo``  the newest TRL's ``GRPOTrainer`` (what ``endorm-mini grpo``
                    runs) / ``RLOOTrainer``, sequences / 4 prompts × 4 completions, β = 0.01
                    (so the reference forward is done, as in PPO), a zero-cost Python
                    reward (ours still computes the endogenous reward: TRL is spared that
                    work), fp32 weights, no activation checkpointing (TRL 1.16 turns it on
                    by default; ours does not recompute, nor does ``endorm-mini grpo`` on a
                    CPU); ``ours-grpo-shape`` is ours on the same prompts × samples

TRL is installed by this script with ``pip install --no-deps --target`` into its own
folders (``--deps``, default ``~/.cache/endorm-mini/benchmarks``) with the packages it
imports that the kit does not need (accelerate, datasets, pandas, pyarrow, …), and put
on ``sys.path`` only inside its worker processes: the kit's environment is untouched.
Two things make TRL run here: its configs default to ``bf16=True`` even on a CPU (set
False: fp32 is the work), and datasets 5.2 cannot fingerprint a dataset on this machine
(dill cannot pickle pyarrow's ``MonthDayNano``), so fingerprints fall back to a plain hash.

The tables, how they were measured and what they mean are in docs/benchmarks.md. The last
quiet run (2 threads): ours 0.0359 s/update, 1.85× faster than TRL's PPO without its
``gc.collect()`` calls, 1.58× than TRL's GRPO; ours is 2.40× a bare generate and 1.01× the
floor (which is itself 2.39×). On the real model ours is 3.90× a bare generate, 1.00× the floor.
A busy neighbour on the CPU stalls 2-thread runs by 10-100× at random: use ``--threads 1``
or more ``--rounds`` on a shared machine.

    python benchmarks/ppo.py                 # 20 measured updates after 3 warm-up, 2 rounds
    python benchmarks/ppo.py --quick         # a smoke run
    # the real model (about 11 minutes on the shared machine):
    python benchmarks/ppo.py --model smollm2-135m --threads 1 --updates 4 --warmup 1 --only generate ours ours-grpo-shape trl-grpo trl-rloo
    python benchmarks/ppo.py --model smollm2-135m --only generate floor ours --updates 3 --warmup 1 --rounds 1
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import warnings

# --model: (sequences per update, response tokens, learning rate, what it is). The real model
# takes a CPU-sized batch: 16 = 4 prompts × 4 samples, so that an update takes seconds.
MODELS = {"random-gpt2": (64, 8, 3e-4, "random 2-layer GPT-2 n_embd 64, char tokenizer, tiny-arith prompts"),
          "smollm2-135m": (16, 8, 1e-6, "SmolLM2-135M-Instruct, digit-sums prompts")}
MODEL = "random-gpt2"  # main() sets these three from --model, in the driver and in every worker
BATCH, RESPONSE, LR = MODELS[MODEL][:3]
GROUP = 4  # completions per prompt of the GRPO-shaped runs: BATCH // GROUP prompts × GROUP
THREADS = int(os.environ.get("BENCH_THREADS", "2"))  # --threads sets it for the workers
TRL_PPO = "trl==1.12.0"  # the last TRL with a PPO trainer (trl.experimental.ppo)
TRL_DEPS = ["accelerate", "datasets", "pandas", "pyarrow", "dill", "xxhash", "multiprocess",
            "psutil", "pytz", "tzdata"]


# ---------------------------------------------------------------- installing TRL aside
def install(folder: str, specs: list[str]) -> str:
    """``pip install --no-deps --target folder specs`` once; returns the folder."""
    if not os.path.isdir(folder):
        print(f"installing {' '.join(specs)} into {folder}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", folder, *specs],
                       check=True)
    return folder


def trl_version(folder: str) -> str:
    found = [d for d in os.listdir(folder) if re.fullmatch(r"trl-[\d.]+\.dist-info", d)]
    return found[0][4:-10] if found else "?"


# ---------------------------------------------------------------- the shared work
def _rss_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read()).group(1))


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # VmHWM := current RSS (Linux ≥ 4.0)
        f.write("5")


def build():
    """(tokenizer, prompts) of ``MODEL``: identical in every worker."""
    import torch

    torch.set_num_threads(THREADS)
    if MODEL == "random-gpt2":
        from endorm_mini.tasks import arith_problems
        from endorm_mini.zoo import char_tokenizer

        return char_tokenizer(), arith_problems()
    from transformers import AutoTokenizer

    from endorm_mini.chat import ensure_pad_token
    from endorm_mini.models import locate
    from endorm_mini.scale.grpo_data import digit_sum_rows

    tok = AutoTokenizer.from_pretrained(locate(MODEL)[0])
    ensure_pad_token(tok)
    return tok, [row["prompt"] for row in digit_sum_rows()]


def policy(tok):
    """A fresh fp32 policy of ``MODEL`` (the same weights in every worker)."""
    import torch

    if MODEL == "random-gpt2":
        return gpt2(tok)
    from endorm_mini.models import load

    return load(MODEL, device="cpu", dtype=torch.float32)[0]


def policy_path(tok) -> str:
    """The policy's folder: TRL's GRPO / RLOO load it (and with β > 0 the reference) by path."""
    import tempfile

    from endorm_mini.models import locate

    if MODEL != "random-gpt2":
        return locate(MODEL)[0]
    folder = tempfile.mkdtemp()
    policy(tok).save_pretrained(folder)
    return folder


def gpt2(tok, seed=0, head="lm"):
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=64,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    if head == "lm":
        return GPT2LMHeadModel(config)
    config = type(config).from_dict({**config.to_dict(), "num_labels": 1})
    return GPT2ForSequenceClassification(config)


def summary(step_seconds, gen_seconds, warm, base_kb, lengths=()) -> dict:
    """Median seconds per update after ``warm`` ones, tokens/s, generating share, peak MB above
    ``base_kb``, and the mean response length (tokens up to and including eos; a real model
    stops early, so the runs are checked to do the same work, not only given the same limit)."""
    steps, gens = step_seconds[warm:], gen_seconds[warm:]
    s = statistics.median(steps)
    return {"s_per_update": s, "tokens_per_s": BATCH * RESPONSE / s, "gen_share": sum(gens) / sum(steps),
            "updates": len(steps), "peak_mb": (_rss_kb("VmHWM") - base_kb) / 1024,
            "length": statistics.mean(lengths[warm:]) if len(lengths) > warm else None}


# ---------------------------------------------------------------- workers
def work_ours(n, warm, samples=1):
    from endorm_mini import ppo

    tok, prompts = build()
    model = policy(tok)
    cfg = ppo.PPOConfig(steps=warm + n, prompts_per_update=BATCH // samples, samples_per_prompt=samples,
                        max_new_tokens=RESPONSE, epochs=1, minibatches=1, lr=LR, progress=False, device="cpu")
    _reset_peak()
    base = _rss_kb("VmRSS")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights rarely emit eos: "never emit eos" is expected
        history = ppo.train(model, tok, prompts, cfg).history
    return summary([h["seconds"] for h in history], [h["gen_seconds"] for h in history], warm, base,
                   [h["response_length"] for h in history])


def _prompt_batch(tok, prompts):
    """The first ``BATCH`` prompts through the chat template, left-padded: (ids, attention mask)."""
    import torch

    from endorm_mini.chat import prompt_ids

    ids = [prompt_ids(tok, p) for p in prompts[:BATCH]]
    L = max(map(len, ids))
    input_ids = torch.tensor([[tok.pad_token_id] * (L - len(x)) + x for x in ids])
    return input_ids, (input_ids != tok.pad_token_id).long()


def _bare_generate(model, tok, input_ids, attention):
    """A bare ``model.generate`` of the batch, plain sampling: (output ids, the mean response
    length in tokens up to and including eos)."""
    import torch

    L = input_ids.shape[1]
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=attention, do_sample=True, top_k=0, top_p=1.0,
                             max_new_tokens=RESPONSE, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    ended = (out[:, L:] == tok.eos_token_id).int()
    return out, float(torch.where(ended.any(1), ended.argmax(1) + 1, out.shape[1] - L).float().mean())


def work_generate(n, warm):
    tok, prompts = build()
    model = policy(tok).eval()
    input_ids, attention = _prompt_batch(tok, prompts)
    _reset_peak()
    base, times, lengths = _rss_kb("VmRSS"), [], []
    for _ in range(warm + n):
        t0 = time.perf_counter()
        lengths.append(_bare_generate(model, tok, input_ids, attention)[1])
        times.append(time.perf_counter() - t0)
    return summary(times, times, warm, base, lengths)


def work_floor(n, warm):
    """The least a PPO update with a frozen reference does, on the same batch: a bare
    ``generate``, one forward of the reference, one forward and backward of the policy and an
    AdamW step (no value head, no loss terms, no bookkeeping); ``generating`` is its share."""
    import copy

    import torch

    from endorm_mini import ppo

    tok, prompts = build()
    model = policy(tok).eval()   # eval: no dropout, as ours (which sets its p to 0)
    ref = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, eps=1e-5)
    input_ids, attention = _prompt_batch(tok, prompts)
    L = input_ids.shape[1]
    _reset_peak()
    base, steps, gens, lengths = _rss_kb("VmRSS"), [], [], []
    for _ in range(warm + n):
        t0 = time.perf_counter()
        out, length = _bare_generate(model, tok, input_ids, attention)
        gens.append(time.perf_counter() - t0)
        T = out.shape[1] - L
        mask = torch.cat([attention, torch.ones_like(out[:, L:])], 1)
        with torch.no_grad():
            ppo.response_forward(ref, out, mask, T)
        logits = ppo.response_forward(model, out, mask, T)[0]
        ppo.action_logprobs(logits[:, :-1], out[:, L:]).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps.append(time.perf_counter() - t0)
        lengths.append(length)
    return summary(steps, gens, warm, base, lengths)


def _dataset(columns: dict):
    """A ``datasets.Dataset``; its fingerprint (a cache key only) falls back to a plain hash.

    datasets 5.2 fingerprints a dataset by pickling its state with dill, which fails on
    pyarrow's ``MonthDayNano`` type here ("not found as builtins.MonthDayNano").
    """
    import hashlib

    import datasets
    import datasets.fingerprint as fp

    original = fp.Hasher.hash.__func__

    def safe_hash(cls, value):
        try:
            return original(cls, value)
        except Exception:
            return hashlib.sha256(repr(value).encode()).hexdigest()[:16]
    fp.Hasher.hash = classmethod(safe_hash)
    return datasets.Dataset.from_dict(columns)


class _Clock:
    """Step times from a TrainerCallback, generation times from a wrapped function."""

    def __init__(self):
        self.steps, self.gens, self.last, self.gen = [], [], None, 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.gen += time.perf_counter() - t0
        return timed

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class StepClock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                if clock.last is None:
                    clock.last = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                now = time.perf_counter()
                clock.steps.append(now - clock.last)
                clock.gens.append(clock.gen)
                clock.last, clock.gen = now, 0.0
        return StepClock()


def work_trl_ppo(n, warm, nogc=False):
    import copy
    import tempfile
    import types

    import torch
    import trl.experimental.ppo.ppo_trainer as pt
    from endorm_mini.chat import prompt_ids
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tok, prompts = build()
    tok.padding_side = "left"
    model = gpt2(tok)  # random GPT-2 only: the value and reward models are GPT-2 classifiers
    ref, value, reward = copy.deepcopy(model), gpt2(tok, 1, "cls"), gpt2(tok, 2, "cls")
    data = _dataset({"input_ids": [prompt_ids(tok, p) for p in prompts]})
    clock = _Clock()
    pt.batch_generation = clock.wrap(pt.batch_generation)
    if nogc:
        pt.gc = types.SimpleNamespace(collect=lambda *a: 0)
    args = PPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
                     num_mini_batches=1, num_ppo_epochs=1, local_rollout_forward_batch_size=BATCH,
                     response_length=RESPONSE, total_episodes=BATCH * (warm + n), stop_token="eos",
                     kl_coef=0.01, num_sample_generations=0, report_to=[], save_strategy="no",
                     logging_strategy="no", use_cpu=True, seed=0, learning_rate=LR, disable_tqdm=True, bf16=False)
    trainer = PPOTrainer(args=args, processing_class=tok, model=model, ref_model=ref, reward_model=reward,
                         value_model=value, train_dataset=data, callbacks=[clock.callback()])
    torch.set_num_threads(THREADS)
    trainer.log = lambda *a, **k: None  # logging is not what we time
    _reset_peak()
    base = _rss_kb("VmRSS")
    clock.last = time.perf_counter()
    trainer.train()
    return summary(clock.steps, clock.gens, warm, base)


def work_trl_group(n, warm, kind="grpo"):
    import tempfile

    import torch
    import trl

    tok, prompts = build()
    folder = policy_path(tok)  # with β > 0 these trainers load the reference from the model's path
    Trainer = trl.GRPOTrainer if kind == "grpo" else trl.RLOOTrainer
    Config = trl.GRPOConfig if kind == "grpo" else trl.RLOOConfig
    data = _dataset({"prompt": [[{"role": "user", "content": p}] for p in prompts]})
    clock = _Clock()
    Trainer._generate = clock.wrap(Trainer._generate)
    # No activation checkpointing (TRL 1.16 turns it on by default): ours does not recompute,
    # nor does `endorm-mini grpo` on a CPU (scale.grpo.grpo_config). fp32 weights, as ours.
    args = Config(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=BATCH, num_generations=GROUP,
                  max_completion_length=RESPONSE, beta=0.01, num_iterations=1, max_steps=warm + n,
                  report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, seed=0,
                  learning_rate=LR, disable_tqdm=True, bf16=False, top_k=0, top_p=1.0, temperature=1.0,
                  activation_checkpointing=False, model_init_kwargs={"dtype": "float32"})
    trainer = Trainer(model=folder, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
                      train_dataset=data, processing_class=tok, callbacks=[clock.callback()])
    assert next(trainer.model.parameters()).dtype == torch.float32 and not args.activation_checkpointing
    lengths = trainer._metrics["train"]["completions/mean_length"]  # TRL appends one per step
    torch.set_num_threads(THREADS)
    _reset_peak()
    base = _rss_kb("VmRSS")
    trainer.train()
    return summary(clock.steps, clock.gens, warm, base, lengths)


WORKERS = {"ours": work_ours, "ours-grpo-shape": lambda n, w: work_ours(n, w, GROUP),
           "generate": work_generate, "floor": work_floor, "trl-ppo": work_trl_ppo,
           "trl-ppo-nogc": lambda n, w: work_trl_ppo(n, w, nogc=True),
           "trl-grpo": lambda n, w: work_trl_group(n, w, "grpo"), "trl-rloo": lambda n, w: work_trl_group(n, w, "rloo")}


# ---------------------------------------------------------------- driver
def run_worker(name: str, n: int, warm: int, paths: list[str]) -> dict:
    env = dict(os.environ, TRL_EXPERIMENTAL_SILENCE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=os.environ.get("BENCH_THREADS", "2"), WANDB_DISABLED="true", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, __file__, "--worker", name, "--model", MODEL, "--updates", str(n), "--warmup", str(warm)]
    for p in paths:
        cmd += ["--path", p]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1][7:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="random-gpt2",
                        help="the policy: a random 2-layer GPT-2 (64 sequences per update) or the real "
                        "SmolLM2-135M-Instruct (16 = 4 prompts × 4; no trl-ppo) (default: %(default)s)")
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best median is kept")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch threads per worker (2 as in issue 6)")
    parser.add_argument("--deps", default=os.path.expanduser("~/.cache/endorm-mini/benchmarks"))
    parser.add_argument("--only", nargs="*", default=None, help="run only these (names as printed)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global MODEL, BATCH, RESPONSE, LR
    MODEL = args.model
    BATCH, RESPONSE, LR = MODELS[MODEL][:3]
    if args.worker:
        sys.path[:0] = args.path  # TRL and its imports exist only in this process
        print("RESULT " + json.dumps(WORKERS[args.worker](args.updates, args.warmup)), flush=True)
        return 0
    n, warm, rounds = (3, 1, 1) if args.quick else (args.updates, args.warmup, args.rounds)
    os.environ["BENCH_THREADS"] = str(args.threads)  # read by the workers
    # TRL's PPO needs the value and reward models as sequence classifiers of the policy's kind:
    # GPT-2 classifiers for the random GPT-2; for the real model there are none worth timing.
    skipped = ("trl-ppo", "trl-ppo-nogc") if MODEL != "random-gpt2" else ()
    wanted = lambda *names: any((args.only is None or n in args.only) and n not in skipped  # noqa: E731
                                for n in names)
    folders = {"deps": (TRL_DEPS, ("trl-ppo", "trl-ppo-nogc", "trl-grpo", "trl-rloo")),
               "trl-1.12.0": ([TRL_PPO], ("trl-ppo", "trl-ppo-nogc")),
               "trl-newest": (["trl"], ("trl-grpo", "trl-rloo"))}
    installed = {}   # TRL is installed only for the runs that need it (`--only generate ours`: none)
    for name, (specs, users) in folders.items():
        folder = os.path.join(args.deps, "trl-deps" if name == "deps" else name)
        installed[name] = install(folder, specs) if wanted(*users) else ""
    deps, old, new = installed["deps"], installed["trl-1.12.0"], installed["trl-newest"]
    plan = [("generate", []), ("floor", []), ("ours", []), ("trl-ppo", [old, deps]), ("trl-ppo-nogc", [old, deps]),
            ("ours-grpo-shape", []), ("trl-grpo", [new, deps]), ("trl-rloo", [new, deps])]
    plan = [p for p in plan if wanted(p[0])]
    if skipped and (args.only is None or set(skipped) & set(args.only)):
        print(f"{', '.join(skipped)}: skipped for {MODEL} (TRL's PPO needs sequence-classifier value and "
              "reward models)")
    print(f"CPU, {args.threads} thread(s) per run, {MODELS[MODEL][3]}, fp32; {BATCH} sequences × {RESPONSE} "
          f"tokens per update (GRPO-shaped: {BATCH // GROUP} prompts × {GROUP}), 1 epoch, 1 minibatch; median of "
          f"{n} updates after {warm} warm-up, best of {rounds} interleaved round(s); TRL PPO {trl_version(old) if old else '—'}, newest TRL "
          f"{trl_version(new) if new else '—'}")
    results: dict = {}
    for _ in range(rounds):  # interleaved, so a busy spell of a shared CPU hits every run alike
        for name, paths in plan:
            r = run_worker(name, n, warm, paths)
            best = results.get(name)
            if best is None or "error" in best or ("error" not in r and r["s_per_update"] < best["s_per_update"]):
                results[name] = r
    print(f"{'run':<16} {'s/update':>9} {'tokens/s':>9} {'generating':>11} {'peak MB':>8} {'resp tokens':>12}")
    for name, _ in plan:
        r = results[name]
        if "error" in r:
            print(f"{name:<16} failed: {r['error']}")
            continue
        length = "—" if r.get("length") is None else f"{r['length']:.2f}"
        print(f"{name:<16} {r['s_per_update']:>9.4f} {r['tokens_per_s']:>9.0f} {r['gen_share']:>10.0%} "
              f"{r['peak_mb']:>8.1f} {length:>12}")
    ok = lambda *names: all("s_per_update" in results.get(k, {}) for k in names)  # noqa: E731
    for a, b, target in (("ours", "trl-ppo-nogc", 1.5), ("ours", "trl-ppo", None),
                         ("ours-grpo-shape", "trl-grpo", 1.0), ("ours-grpo-shape", "trl-rloo", None)):
        if ok(a, b):
            r = results[b]["s_per_update"] / results[a]["s_per_update"]
            goal = f"  (target ≥ {target}×: {'met' if r >= target else 'NOT met'})" if target else ""
            print(f"{a} vs {b}: {r:.2f}× {'faster' if r >= 1 else 'slower'} per update{goal}")
    if ok("ours", "generate"):
        g, o = results["generate"]["s_per_update"], results["ours"]
        print(f"limit: bare model.generate on the same batch takes {g:.4f} s; an update of ours takes "
              f"{o['s_per_update'] / g:.2f}× that (target ≤ 2×: {'met' if o['s_per_update'] <= 2 * g else 'NOT met'}), "
              f"{o['gen_share']:.0%} of it generating, {1 - o['gen_share']:.0%} scoring and learning")
        if ok("floor"):
            print(f"floor: generate + one reference forward + one policy forward/backward + an AdamW step "
                  f"takes {results['floor']['s_per_update'] / g:.2f}× the bare generate; ours is "
                  f"{o['s_per_update'] / results['floor']['s_per_update']:.2f}× the floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())

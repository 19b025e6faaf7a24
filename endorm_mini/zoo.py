"""Tiny checkpoints shipped with the package, the script that retrains them, and their tokenizer.

``models.load(name)`` loads one through ``AutoModelForCausalLM.from_pretrained`` on a folder
inside the package: the same code path as a Hugging Face hub name, so every lesson runs
unchanged on a real model.

The checkpoints (``endorm_mini/zoo_models/NAME``, safetensors + ``metadata.json``):

- ``tiny-arith``: a Llama-config model behaviour-cloned (eq. 2) on noisy arithmetic
  demonstrations (``worlds.arith_demos``): greedy decoding is right, sampling at T = 1 is
  right only about as often as the demonstrator was.
- ``tiny-domains``: a GPT-2-config model cloned on the four-domain world and the persona
  answers (``worlds.domain_demos``); its endogenous reward (eq. 12) prefers the correct
  answer of held-out preference pairs, and each persona's answer under its system prompt.

``retrain(name)`` rebuilds one from its seed and prints its quality figures next to the
stored ones (``endorm-mini zoo retrain NAME``).
"""
from __future__ import annotations

import json
import string
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from transformers import PreTrainedTokenizerFast

from .models import ZOO_DIR, available, resolve

# A chat template in the spirit of ChatML: one special token opens each turn and the
# end-of-turn token is ``eos``, so a scored response ends with ``eos`` (the reward's contract: README, "The library").
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '</s>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]
ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \n"


def char_tokenizer(alphabet: str = ALPHABET) -> PreTrainedTokenizerFast:
    """A character-level ``PreTrainedTokenizerFast`` with pad/bos/eos/unk and a chat template.

    One token per character of ``alphabet``; the special tokens come first (ids 0–6).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    chars = sorted(set(alphabet))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", additional_special_tokens=SPECIAL_TOKENS[4:],
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


# ---------------------------------------------------------------- quality figures
def arith_quality(model, tokenizer, samples: int = 4, seed: int = 0, device="auto") -> dict:
    """Greedy and sampled (T = 1, ``samples`` per problem) accuracy on all 400 problems."""
    from .verifiers import arith_accuracy

    greedy = arith_accuracy(model, tokenizer, temperature=0.0, device=device)
    sampled = arith_accuracy(model, tokenizer, temperature=1.0, samples=samples, seed=seed, device=device)
    return {"greedy_accuracy": round(greedy, 4), "sampled_accuracy": round(sampled, 4)}


def domains_quality(model, tokenizer, n_per_domain: int = 40, seed: int = 1, device="auto") -> dict:
    """How often the endogenous reward (eq. 12, summed) prefers the right answer, held out.

    - ``preference_accuracy``: same-style pairs (RM-Bench's "normal" diagonal) of
      ``mini_rmbench(n_per_domain, seed, split="test")``; rejected answers never appear in
      training, and code prompts are held-out words. Also per RM-Bench subset.
    - ``persona_accuracy``: under persona q's system prompt, q's answer beats another
      persona's, on held-out topics; also per persona.
    For one prompt ``V(s_1)`` cancels, so this compares sums of log π̂ over the response.
    """
    from . import worlds
    from .reward import EndogenousReward

    reward = EndogenousReward(model, tokenizer, device=device, batch_tokens=8192)
    items = worlds.mini_rmbench(n_per_domain, seed=seed, split="test")
    prompts = [x["prompt"] for x in items for _ in range(6)]
    texts = [t for x in items for t in x["chosen"] + x["rejected"]]
    totals = [r.total for r in reward.score_batch(prompts, texts, progress=False)]
    wins: dict[str, list[bool]] = {}
    for k, x in enumerate(items):
        chosen, rejected = totals[6 * k:6 * k + 3], totals[6 * k + 3:6 * k + 6]
        wins.setdefault(x["domain"], []).extend(c > r for c, r in zip(chosen, rejected))
    figures = {"preference_accuracy": _mean(sum(wins.values(), [])),
               "preference_by_subset": {d: _mean(w) for d, w in wins.items()}}
    persona = {}
    for q in worlds.PERSONAS:
        pairs = worlds.persona_pairs(q, 3 * len(worlds.TOPICS_HELD_OUT), seed=seed, split="test")
        systems = [p["system"] for p in pairs] * 2
        scored = reward.score_batch([p["prompt"] for p in pairs] * 2,
                                    [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs],
                                    system=systems, progress=False)
        n = len(pairs)
        persona[q] = _mean([scored[i].total > scored[n + i].total for i in range(n)])
    figures["persona_accuracy"] = _mean(list(persona.values()))
    figures["persona_by_persona"] = persona
    return figures


def _mean(xs) -> float:
    return round(sum(xs) / len(xs), 4) if xs else float("nan")


# ---------------------------------------------------------------- recipes
@dataclass
class Recipe:
    """How a zoo checkpoint is made: a model config, demonstrations, a BC run, quality figures."""
    summary: str
    build: Callable      # (tokenizer) -> untrained model (seeded by the caller)
    demos: Callable      # (n, seed) -> demonstrations for bc.train_bc
    train: dict          # BCConfig fields
    quality: Callable    # (model, tokenizer) -> figures
    targets: dict        # figure -> (">=" or "<=", bound): what the shipped weights must show


def _arith_model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))


def _domains_model(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=128,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,   # no dropout: deterministic scores
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))


def _arith_demos(n, seed):
    from .worlds import arith_demos
    return arith_demos(n, p=0.6, seed=seed)


def _domain_demos(n, seed):
    from .worlds import domain_demos
    return domain_demos(n, seed=seed)


RECIPES = {
    "tiny-arith": Recipe(
        summary="Llama config, noisy arithmetic (demos right 60% of the time): greedy right, sampling ~60%",
        build=_arith_model, demos=_arith_demos,
        train=dict(steps=2500, batch_size=128, lr=3e-3, warmup=50),
        quality=arith_quality,
        targets={"greedy_accuracy": (">=", 0.95), "sampled_accuracy": ("<=", 0.8)}),
    "tiny-domains": Recipe(
        summary="GPT-2 config, four-domain RM-Bench world + personas: its endogenous reward prefers right answers",
        build=_domains_model, demos=_domain_demos,
        train=dict(steps=1500, batch_size=64, lr=3e-3, warmup=50),
        quality=domains_quality,
        targets={"preference_accuracy": (">=", 0.85), "persona_accuracy": (">=", 0.85)}),
}


def check_targets(name: str, figures: dict) -> list[str]:
    """The targets of ``name`` that ``figures`` miss (empty: all met)."""
    missed = []
    for key, (op, bound) in RECIPES[name].targets.items():
        value = figures[key]
        if not (value >= bound if op == ">=" else value <= bound):
            missed.append(f"{key} = {value} (target {op} {bound})")
    return missed


def metadata(name_or_path: str) -> dict:
    """The ``metadata.json`` stored beside a checkpoint's weights."""
    path = Path(resolve(name_or_path)) / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"no metadata.json in {path.parent}")
    return json.loads(path.read_text())


def retrain(name: str, out_dir=None, seed: int = 0, steps: int | None = None, install: bool = False,
            progress: bool = True, device: str = "cpu", threads: int | None = None) -> dict:
    """Rebuild checkpoint ``name`` from ``seed``; save it with its metadata; return the metadata.

    Writes to ``out_dir`` (default: a fresh temporary folder; ``install=True``: over the
    shipped checkpoint). ``steps`` overrides the recipe's step budget (for smoke tests).
    ``threads`` sets torch's CPU threads for the run: on a CPU shared with other jobs one
    thread was ~4× faster per step than torch's default of one per core (measured, 2 cores).
    Prints the new quality figures next to the stored ones.
    """
    import torch

    if threads is None:
        return _retrain(name, out_dir, seed, steps, install, progress, device)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _retrain(name, out_dir, seed, steps, install, progress, device)
    finally:
        torch.set_num_threads(previous)


def _retrain(name, out_dir, seed, steps, install, progress, device) -> dict:
    import torch
    import transformers

    from .bc import BCConfig, train_bc

    if name not in RECIPES:
        raise ValueError(f"no recipe for {name!r}; known: {', '.join(RECIPES)}")
    if install and out_dir is not None:
        raise ValueError("give either out_dir or install=True, not both")
    recipe = RECIPES[name]
    stored = metadata(name).get("quality", {}) if name in available() else {}
    out = ZOO_DIR / name if install else Path(out_dir or tempfile.mkdtemp(prefix=f"endorm-mini-{name}-"))
    config = BCConfig(**{**recipe.train, "seed": seed, "device": device, "progress": progress,
                         **({"steps": steps} if steps else {})})
    tokenizer = char_tokenizer()
    torch.manual_seed(seed)
    model = recipe.build(tokenizer)
    demos = recipe.demos(config.steps * config.batch_size, seed)   # each demonstration seen once
    start, cpu_start = time.perf_counter(), time.process_time()
    losses = train_bc(model, tokenizer, demos, config)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    figures = recipe.quality(model, tokenizer, device=device)

    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {
        "name": name, "summary": recipe.summary, "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()), "seed": seed,
        "train": config.to_dict(), "demonstrations": len(demos), "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
        "train_seconds": round(seconds, 1), "train_cpu_seconds": round(cpu_seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "quality": figures, "targets": {k: list(v) for k, v in recipe.targets.items()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{name}: {config.steps} steps in {seconds:.0f} s, saved to {out}")
    print(_quality_table(figures, stored))
    for miss in check_targets(name, figures):
        print(f"  target missed: {miss}")
    return meta


def _quality_table(new: dict, stored: dict) -> str:
    rows = [f"  {'figure':<26}{'retrained':>10}{'shipped':>10}"]
    for key, value in new.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                old = stored.get(key, {}).get(sub, "-")
                rows.append(f"  {key.split('_')[0] + ' ' + sub:<26}{v:>10}{old:>10}")
        else:
            rows.append(f"  {key:<26}{value:>10}{stored.get(key, '-'):>10}")
    return "\n".join(rows)

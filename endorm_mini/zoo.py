"""Tiny checkpoints shipped with the package, the script that retrains them, and their tokenizer.

``load(name)`` goes through ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` on a folder inside the package: the same code path as
a Hugging Face hub name, so every lesson runs unchanged on a real model.

The checkpoints (``endorm_mini/zoo_models/NAME``, safetensors + ``metadata.json``):

- ``tiny-arith``: a Llama-config model behaviour-cloned (eq. 2) on noisy arithmetic
  demonstrations (``tasks.arith_demos``): greedy decoding is right, sampling at T = 1 is
  right only about as often as the demonstrator was.
- ``tiny-domains``: a GPT-2-config model cloned on the four-domain world and the persona
  answers (``tasks.domain_demos``); its endogenous reward (eq. 12) prefers the correct
  answer of held-out preference pairs, and each persona's answer under its system prompt.

``retrain(name)`` rebuilds one from its seed and prints its quality figures next to the
stored ones (``endorm-mini zoo retrain NAME``).
"""
from __future__ import annotations

import json
import os
import string
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from transformers import PreTrainedTokenizerFast

# A chat template in the spirit of ChatML: one special token opens each turn and the
# end-of-turn token is ``eos``, so a scored response ends with ``eos`` (DESIGN.md contract).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '</s>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]
ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \n"
ZOO_DIR = Path(__file__).parent / "zoo_models"


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


# ---------------------------------------------------------------- loading
def available() -> list[str]:
    """Names of the shipped checkpoints."""
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / "config.json").is_file())


def resolve(name_or_path: str) -> str:
    """The folder of a zoo name; anything else (a local path, a hub id) unchanged.

    The rule: a shipped name wins; then an existing local path; a name starting with
    ``tiny-`` that is neither is a mistyped zoo name (error); a name no hub id can be
    (``./x``, ``/x``, ``x/``, ``a/b/c``) is a folder that does not exist (error); the rest
    go to the hub.
    """
    name = str(name_or_path)
    if name in available():
        return str(ZOO_DIR / name)
    if Path(name).exists():
        return name
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if name.startswith("tiny-"):
        raise ValueError(f"unknown zoo model {name!r}; known: {', '.join(available()) or 'none'}")
    if not _is_hub_id(name):
        raise ValueError(f"no folder {name!r}: it does not exist (relative paths start at {Path.cwd()}); "
                         "give a model folder, a zoo name (endorm-mini zoo list) or a hub name")
    return name


def locate(name_or_path: str) -> tuple[str, dict]:
    """``(path, from_pretrained options)`` of a zoo name, a local folder or a hub id: what
    ``load`` loads, for code that loads it otherwise (TRL loads the policy by its path). The
    same one-line ``ValueError``s as ``load``, before anything heavy runs."""
    path = resolve(name_or_path)
    if Path(path).exists():
        check_model_folder(path)
        return path, {}
    return path, _hub_options(path)


def load(name_or_path: str, device="auto", dtype=None, device_map: str | None = None):
    """``(model, tokenizer)`` for a zoo name, a local folder or a hub id; the model in eval mode.

    ``device_map="auto"`` loads a model larger than one GPU with accelerate's big-model
    loading: its layers are spread over the GPUs, then the CPU, then disk, and stay there
    (``device`` is not used; transformers needs ``accelerate`` for it: the ``scale`` extra).

    Bad input raises ``ValueError`` in one line before anything heavy runs: a device this
    machine lacks, a folder that does not exist or holds no model, a hub id that is neither
    cached nor reachable (offline: ``HF_HUB_OFFLINE`` set, or the hub not answering within
    ``HUB_TIMEOUT`` seconds). A cached hub model loads offline from the cache.
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .chat import ensure_pad_token
    from .device import resolve_device, resolve_dtype

    device = resolve_device(device)
    path, hub = locate(name_or_path)
    local = Path(path).exists()
    kwargs = {}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if resolve_dtype(dtype) is not None:   # transformers 5 renamed torch_dtype to dtype
        key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        kwargs[key] = resolve_dtype(dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **hub)
        model = AutoModelForCausalLM.from_pretrained(path, **hub, **kwargs)
    except OSError as err:
        if local:
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load {path!r} from the Hugging Face hub: {first} "
                         "(a zoo name, see endorm-mini zoo list, or a local folder also work)") from None
    ensure_pad_token(tokenizer)
    if device_map is None:
        model.to(device)
    model.eval()
    gen = model.generation_config
    gen.pad_token_id, gen.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    if tokenizer.bos_token_id is not None:
        gen.bos_token_id = tokenizer.bos_token_id
    return model, tokenizer


# What ``save_pretrained`` writes: the weights, and at least one tokenizer file.
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
TOKENIZER_FILES = ("tokenizer*", "vocab*", "merges.txt", "*.model", "*.tiktoken")
HUB_TIMEOUT = 3.0   # seconds the hub has to answer before a hub id counts as unreachable


def check_model_folder(path) -> None:
    """``ValueError`` unless ``path`` is a folder with ``config.json``, weights and a tokenizer."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{str(path)!r} is a file, not a model folder (a folder with config.json, "
                         "the weights and the tokenizer, as save_pretrained writes them)")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_FILES):
        missing.append("model weights (*.safetensors or *.bin)")
    if not any(next(folder.glob(pattern), None) for pattern in TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json, tokenizer_config.json, ...)")
    if missing:
        raise ValueError(f"folder {str(path)!r} is not a model: it has no {' and no '.join(missing)}; "
                         "save one with model.save_pretrained(folder) and tokenizer.save_pretrained(folder), "
                         "or use a zoo name (endorm-mini zoo list)")


def _is_hub_id(name: str) -> bool:
    """Whether ``name`` can be a hub repo id (``gpt2``, ``owner/name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _hub_options(name: str) -> dict:
    """``from_pretrained`` options for hub id ``name``, or ``ValueError`` when it cannot load.

    Online: ``{}`` (the usual download or cache check). Offline (``HF_HUB_OFFLINE`` or
    ``TRANSFORMERS_OFFLINE`` set, or no answer from the hub within ``HUB_TIMEOUT`` s):
    ``local_files_only`` when the cache has the model, else a one-line error, instead of
    transformers' minute of retries and its traceback.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    offline = _offline_by_env()
    if not offline and _hub_reachable(constants.ENDPOINT):
        return {}
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return {"local_files_only": True}
    why = "HF_HUB_OFFLINE is set" if offline else f"{constants.ENDPOINT} did not answer"
    raise ValueError(f"cannot load {name!r}: it is no zoo name or local folder, the Hugging Face cache "
                     f"does not have it and the hub is offline ({why}); use a zoo name "
                     "(endorm-mini zoo list) or a folder with the model's files")


def _offline_by_env() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get(key, "").upper() in {"1", "ON", "YES", "TRUE"}
             for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flags) or bool(constants.HF_HUB_OFFLINE)


def _hub_reachable(endpoint: str, timeout: float = HUB_TIMEOUT) -> bool:
    """Whether ``endpoint`` answers an HTTP HEAD (any status) within about ``timeout`` s.

    Through huggingface_hub's own session (its proxies and certificates); in a daemon
    thread, so a DNS lookup that hangs cannot hold the caller longer than the timeout.
    """
    from huggingface_hub.utils import get_session

    answered = []

    def probe():
        try:
            get_session().head(endpoint, timeout=timeout)
            answered.append(True)
        except Exception:   # no network, DNS failure, timeout, TLS error: all mean unreachable
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(answered)


# ---------------------------------------------------------------- quality figures
def arith_quality(model, tokenizer, samples: int = 4, seed: int = 0, device="auto") -> dict:
    """Greedy and sampled (T = 1, ``samples`` per problem) accuracy on all 400 problems."""
    from . import tasks

    greedy = tasks.arith_accuracy(model, tokenizer, temperature=0.0, device=device)
    sampled = tasks.arith_accuracy(model, tokenizer, temperature=1.0, samples=samples, seed=seed, device=device)
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
    from . import tasks
    from .reward import EndogenousReward

    reward = EndogenousReward(model, tokenizer, device=device, batch_tokens=8192)
    items = tasks.mini_rmbench(n_per_domain, seed=seed, split="test")
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
    for q in tasks.PERSONAS:
        pairs = tasks.persona_pairs(q, 3 * len(tasks.TOPICS_HELD_OUT), seed=seed, split="test")
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
    from .tasks import arith_demos
    return arith_demos(n, p=0.6, seed=seed)


def _domain_demos(n, seed):
    from .tasks import domain_demos
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


# ---------------------------------------------------------------- CLI: endorm-mini zoo
def _list_command(args) -> int:
    for name in available():
        meta = metadata(name)
        figures = ", ".join(f"{k} {v}" for k, v in meta.get("quality", {}).items() if not isinstance(v, dict))
        print(f"{name:<14}{meta.get('architecture', '?'):<20}{meta.get('parameters', 0):>8,} params  {figures}")
        print(f"{'':<14}{meta.get('summary', '')}")
    return 0


def _retrain_command(args) -> int:
    meta = retrain(args.name, out_dir=args.out, seed=args.seed, steps=args.steps, install=args.install,
                   threads=args.threads)
    return 1 if check_targets(args.name, meta["quality"]) and not args.steps else 0


def register_cli(sub) -> None:
    zoo = sub.add_parser("zoo", help="the tiny shipped checkpoints: list, retrain",
                         description="The tiny checkpoints shipped with endorm-mini.")
    zsub = zoo.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND", required=True)
    p = zsub.add_parser("list", help="shipped checkpoints and their stored quality figures")
    p.set_defaults(func=_list_command)
    p = zsub.add_parser("retrain", help="rebuild a checkpoint from its seed and compare its quality")
    p.add_argument("name", choices=sorted(RECIPES))
    p.add_argument("--out", default=None, help="output folder (default: a fresh temporary folder)")
    p.add_argument("--install", action="store_true", help="overwrite the shipped checkpoint instead")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="override the step budget (quick look)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 is faster on a busy machine)")
    p.set_defaults(func=_retrain_command)

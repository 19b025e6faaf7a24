"""Stand-ins for the hub, to rehearse the GPU branch offline: a random Qwen2 and tiny data files.

On a GPU the notebooks load ``Qwen/Qwen2.5-0.5B-Instruct`` and the real RM-Bench and GSM8K
from the Hugging Face hub. ``grading.setup_notebook`` reads environment variables that
replace the model and the data (``ENDORM_MINI_MODEL``, ``ENDORM_MINI_DATA``) and that force
the GPU branch on a CPU (``ENDORM_MINI_BRANCH=gpu``); this module makes what they point to:

- :func:`random_qwen2` saves a Qwen2-architecture causal LM with **random** weights, a
  byte-level BPE tokenizer trained here on the kit's own texts (Qwen's pre-tokenizer: digits
  one by one), Qwen2.5-Instruct's chat template (``<|im_start|>``/``<|im_end|>``, its default
  system prompt), special tokens, ``config.json`` fields and ``generation_config.json``
  (sampling defaults included). ``from_pretrained(folder)`` loads it exactly as it loads the
  hub model. ``size="tiny"`` (hidden 64, 2 layers) runs a notebook's GPU branch on a CPU in
  seconds; ``size="0.5b"`` has Qwen2.5-0.5B's shapes (494M parameters, a 151,936-row
  vocabulary) for memory and speed checks on a GPU (``benchmarks/gpu_check.py``).
- :func:`write_data` writes tiny files in the real data sets' formats, laid out as
  ``ENDORM_MINI_DATA`` expects (:data:`DATA_LAYOUT`).

What a random model scores or generates means nothing: a rehearsal shows that the code runs
(and how much memory and time it takes), never how well.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Qwen2's pre-tokenizer split (transformers' tokenization_qwen2): single digits, words with
# their leading space or punctuation, runs of whitespace.
QWEN_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
              r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
# Qwen2.5-Instruct's chat template without its tool-calling branches.
QWEN_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + QWEN_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Model shapes. "0.5b" is Qwen2.5-0.5B(-Instruct)'s config.json; "tiny" keeps its structure
# (grouped-query attention, tied embeddings, the vocabulary rounded up past the tokenizer's).
SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_window_layers=2, vocab_size=None),
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, max_window_layers=21, vocab_size=151936),
}
DATA_LAYOUT = {  # ENDORM_MINI_DATA/<path>: what each real section reads instead of the hub
    "rm-bench": "RM-Bench's data/ folder: <subset>_filtered.json per subset (chat, code, math, "
                "safety-refuse, safety-response) or total_dataset.json (lesson 06)",
    "gsm8k/train.jsonl": "GSM8K's training split: one {\"question\", \"answer\"} per line, the answer "
                         "ending in '#### N' (lesson 09)",
    "gsm8k/test.jsonl": "GSM8K's test split, the same format (lesson 09)",
}


# ---------------------------------------------------------------- the tokenizer
def corpus() -> list[str]:
    """Texts the stand-in tokenizer is trained on: every prompt and answer of the kit's
    worlds, the real sections' instructions, and GSM8K-style problems."""
    from .. import worlds
    from ..bench.methods import VERIFIER_TEMPLATE

    texts = [QWEN_SYSTEM, VERIFIER_TEMPLATE, worlds.GSM8K_INSTRUCTION, "What is 17+25? Reply with the number only."]
    for subset in worlds.SUBSETS:
        for prompt, chosen, rejected in worlds.domain_examples(subset):
            texts += [prompt, *chosen, *rejected]
    for persona in worlds.PERSONAS:
        texts.append(worlds.persona_system(persona))
        texts += [worlds.persona_answer(persona, t) for t in worlds.TOPICS]
    texts += [f"{p} = {worlds.arith_answer(p)}" for p in worlds.arith_problems()]
    texts += [f"{row['question']}\n{row['answer']}" for row in gsm8k_like(200, seed=1)]
    return texts


def qwen_tokenizer(vocab_size: int = 2048):
    """A byte-level BPE tokenizer in Qwen2's form, trained on :func:`corpus` (well under a second).

    Qwen's normaliser (NFC), pre-tokenizer and decoder; its special tokens after the learned
    vocabulary (``<|endoftext|>`` = pad, ``<|im_start|>``, ``<|im_end|>`` = eos, no bos) and
    Qwen2.5-Instruct's chat template. Any text encodes (all 256 bytes are in the vocabulary).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(corpus(), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=IM_END, pad_token=ENDOFTEXT,
                                  unk_token=None, bos_token=None, clean_up_tokenization_spaces=False,
                                  model_max_length=131072, errors="replace")
    tok.add_special_tokens({"additional_special_tokens": [ENDOFTEXT, IM_START, IM_END]})
    tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok


# ---------------------------------------------------------------- the model
def qwen2_config(size: str, n_tokens: int, pad_id: int, eos_id: int):
    """The ``Qwen2Config`` of :func:`random_qwen2`: ``SIZES[size]``'s shapes and Qwen2.5's other
    fields (RoPE θ = 10⁶, a 32,768-token context, tied embeddings, RMSNorm ε = 10⁻⁶), with
    vocabulary rows for a tokenizer of ``n_tokens`` tokens (tiny: rounded up to 128)."""
    from transformers import Qwen2Config

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    shape = dict(SIZES[size])
    rows = shape.pop("vocab_size") or -(-n_tokens // 128) * 128
    if rows < n_tokens:
        raise ValueError(f"the model's {rows} vocabulary rows cannot hold the tokenizer's {n_tokens} tokens")
    return Qwen2Config(
        vocab_size=rows, **shape, hidden_act="silu", max_position_embeddings=32768, rope_theta=1000000.0,
        rms_norm_eps=1e-6, initializer_range=0.02, tie_word_embeddings=True, use_cache=True,
        use_sliding_window=False, sliding_window=32768, attention_dropout=0.0,
        bos_token_id=pad_id, eos_token_id=eos_id, pad_token_id=pad_id)


def random_qwen2(folder, size: str = "tiny", seed: int = 0, vocab_size: int = 2048, device: str = "cpu"):
    """Save a randomly initialised Qwen2 causal LM with a Qwen-style tokenizer to ``folder``.

    ``size``: ``"tiny"`` (hidden 64, 2 layers, 4 heads, 2 KV heads: 0.2M parameters, a CPU
    runs a notebook's GPU branch on it in seconds) or ``"0.5b"`` (Qwen2.5-0.5B's shapes:
    hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, 151,936 vocabulary rows,
    494M parameters, ~1 GB on disk). ``vocab_size``: the tokenizer's learned vocabulary. The
    embedding has more rows than the tokenizer has tokens (rounded up to 128 for "tiny"), as
    Qwen's 151,936 rows hold 151,665 tokens. The weights are stored in bf16 like the hub's, so
    ``from_pretrained(folder)`` without a dtype gives what it gives for the hub model.
    ``device``: where to initialise (``"cuda"`` is much faster for "0.5b").

    Returns the folder (a ``Path``), loadable with ``models.load(folder)`` /
    ``AutoModelForCausalLM.from_pretrained(folder)`` / ``AutoTokenizer.from_pretrained(folder)``.
    """
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    folder = Path(folder)
    tok = qwen_tokenizer(vocab_size)
    pad, eos = tok.convert_tokens_to_ids(ENDOFTEXT), tok.convert_tokens_to_ids(IM_END)
    config = qwen2_config(size, len(tok), pad, eos)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device):
            model = Qwen2ForCausalLM(config)
    model = model.to(torch.bfloat16).cpu()
    # Qwen2.5-Instruct's generation_config.json: sampling defaults that every caller must override.
    model.generation_config = GenerationConfig(
        bos_token_id=pad, pad_token_id=pad, eos_token_id=[eos, pad], do_sample=True,
        repetition_penalty=1.05, temperature=0.7, top_p=0.8, top_k=20)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"   # the hub's tokenizer class, as Qwen's files say
    saved = json.loads(config_path.read_text())
    saved.update(tokenizer_class="Qwen2Tokenizer", add_prefix_space=False, split_special_tokens=False)
    config_path.write_text(json.dumps(saved, indent=2, ensure_ascii=False) + "\n")
    (folder / "README.md").write_text(
        f"# random Qwen2 ({size}), seed {seed}\n\nRandom weights: a stand-in for Qwen/Qwen2.5-0.5B-Instruct "
        "made by `endorm_mini.offline.random_qwen2`. Its scores and samples mean nothing.\n")
    return folder


# ---------------------------------------------------------------- the data
_NAMES = ("Tom", "Ana", "Lee", "Sam", "Mia", "Raj", "Zoe", "Ben")
_THINGS = ("apples", "stamps", "books", "coins", "shells", "cards", "pens", "eggs")


def gsm8k_like(n: int, seed: int = 0) -> list[dict]:
    """``n`` GSM8K-format rows ``{"question", "answer"}``: two-step word problems whose answer
    shows its work with GSM8K's ``<<a+b=c>>`` calculator marks and ends in ``#### N``
    (a thousands comma in some, as in a few real rows)."""
    rng, rows = random.Random(f"gsm8k-{seed}"), []
    for _ in range(n):
        name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
        a, b, c = rng.randrange(2, 60), rng.randrange(2, 60), rng.choice((2, 3, 4, 5, 10, 25, 40))
        total = (a + b) * c
        shown = f"{total:,}" if total >= 1000 and rng.random() < 0.5 else str(total)
        rows.append({
            "question": f"{name} has {a} {thing} and finds {b} more. Each of them is worth {c} cents. "
                        f"How many cents are all of {name}'s {thing} worth?",
            "answer": f"{name} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {thing}.\n"
                      f"They are worth {a + b} * {c} = <<{a + b}*{c}={total}>>{total} cents.\n#### {shown}"})
    return rows


def write_data(folder, per_domain: int = 4, n_train: int = 64, n_test: int = 16, seed: int = 0) -> Path:
    """Write tiny real-format data to ``folder`` in the layout of :data:`DATA_LAYOUT`; return it.

    ``rm-bench/``: ``per_domain`` items of each RM-Bench domain from the kit's four-domain world
    (``worlds.mini_rmbench``), in RM-Bench's files, led by one long chat item (responses of up
    to ~1,700 tokens with the stand-in tokenizer) so that a section taking each domain's
    first items meets a long one. ``gsm8k/``:
    ``n_train`` and ``n_test`` rows of :func:`gsm8k_like`.
    """
    from .. import worlds

    folder = Path(folder)
    items = worlds.mini_rmbench(per_domain, seed=seed)
    long_text = " ".join(f"Paragraph {k}: the capital of France is Paris, and it has been for centuries."
                         for k in range(60))
    items.insert(0, {"id": len(items), "prompt": "Describe the capital of France at length.",
                  "chosen": [long_text[:400], long_text, "## Paris\n\n" + long_text],
                  "rejected": [long_text[:400].replace("Paris", "Lyon"), long_text.replace("Paris", "Lyon"),
                               "## Lyon\n\n" + long_text.replace("Paris", "Lyon")],
                  "domain": "chat"})
    worlds.write_rmbench(items, folder / "rm-bench")
    (folder / "gsm8k").mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", gsm8k_like(n_train, seed)), ("test", gsm8k_like(n_test, seed + 1))):
        (folder / "gsm8k" / f"{split}.jsonl").write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return folder


# ---------------------------------------------------------------- the notebooks to rehearse
def gpu_branch_notebooks(solutions) -> list[Path]:
    """The masters in ``solutions`` whose GPU branch runs a hub model: the setup cell's
    ``gpu_model`` is not a zoo name, and a later code cell uses ``MODEL`` or ``SETUP`` (a
    GPU section, or the model throughout). What ``tests/test_gpu_branch.py`` rehearses."""
    import nbformat

    from .setup import GPU_MODEL

    found = []
    for path in sorted(Path(solutions).glob("[0-9][0-9]_*.ipynb")):
        code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        named = re.search(r"gpu_model='([^']*)'", code[0]) if code else None
        if code and not (named.group(1) if named else GPU_MODEL).startswith("tiny-") and \
                any(re.search(r"\b(MODEL|SETUP)\b", c) for c in code[1:]):
            found.append(path)
    return found

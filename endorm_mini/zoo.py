"""Tiny checkpoints shipped with the package, and the character tokenizer they use.

``load(name)`` goes through ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` on a folder inside the package: the same code path as
a Hugging Face hub name, so every lesson runs unchanged on a real model.
"""
from __future__ import annotations

import string

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

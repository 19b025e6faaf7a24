"""Sampling responses from a causal LM: batched, seeded, plain ancestral or greedy.

PPO's rollout (``ppo.generate``) also records values and log-probabilities; this is the
plain one the lessons, the verifiers' accuracy and ``grpo-eval`` use.
"""
from __future__ import annotations

import contextlib

import torch

from .chat import ensure_pad_token, left_pad, prompt_ids
from .device import resolve_device


@torch.no_grad()
def generate(model, tokenizer, prompts, temperature: float = 1.0, max_new_tokens: int = 8,
             seed: int = 0, system: str | None = None, batch_size: int = 512, device="auto") -> list[str]:
    """Batched, seeded responses (text up to eos); ``temperature=0`` decodes greedily.

    Prompts are left-padded (``model.generate`` continues from the last column). Sampling
    is plain ancestral sampling from ``softmax(f/T)`` and greedy is the argmax: the model's
    own generation defaults (Qwen2.5-Instruct's: top-k 20, top-p 0.8, a repetition penalty
    of 1.05, which changes even greedy decoding) are set aside for the call.
    """
    from transformers import GenerationConfig

    ensure_pad_token(tokenizer)
    device = resolve_device(device)
    model.to(device).eval()
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 \
        else dict(do_sample=False)
    out: list[str] = []
    with torch.random.fork_rng(devices=[]), _restore(model, "generation_config", model.generation_config):
        # generate() fills every option not passed from model.generation_config: a plain one instead
        model.generation_config = GenerationConfig(pad_token_id=pad, eos_token_id=eos)
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            ids = [prompt_ids(tokenizer, p, system) for p in prompts[start:start + batch_size]]
            input_ids, attn = left_pad(ids, pad, device)
            L = input_ids.shape[1]
            gen = model.generate(input_ids=input_ids, attention_mask=attn, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad, eos_token_id=eos, **sampling)[:, L:]   # [B, new]
            for row in gen.tolist():
                row = row[:row.index(eos)] if eos in row else row
                out.append(tokenizer.decode(row, skip_special_tokens=True))
    return out


@contextlib.contextmanager
def _restore(obj, name: str, value):
    """Put ``value`` back as ``obj.name`` when the block ends, even on an error."""
    try:
        yield
    finally:
        setattr(obj, name, value)

"""Next-token prediction is behaviour cloning (docs/paper.md §2, eq. 2).

Generation is an MDP whose state ``s_h`` is the text so far and whose action ``a_h`` is
the next token. Supervised fine-tuning on demonstrations ``(prompt, response)`` is
maximum likelihood of the expert's actions,

    max_π  Σ_i Σ_h log π(a_h^i | s_h^i)                                  (eq. 2)

where the actions are the response tokens (its ``eos`` included: ending the turn is an
action too) and the prompt tokens are the initial state ``s_1``: conditioning, never
imitated. ``next_token_loss`` is the negative of eq. 2 averaged over actions;
``train_bc`` is a compact AdamW loop that fits any Hugging Face causal LM with it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .chat import context_length, ensure_pad_token, prompt_ids, response_ids
from .device import resolve_device


class Demo(NamedTuple):
    """One demonstration: what ``train_bc`` imitates (a tuple, so it unpacks too)."""
    prompt: str
    response: str
    system: str | None = None


# ---------------------------------------------------------------- the loss (eq. 2)
def next_token_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the masked tokens: the behaviour-cloning loss (eq. 2).

    logits: [B, T, V]  the model's output at positions 0 … T-1 of ``labels``
    labels: [B, T]     the token sequence itself (prompt ⊕ response ⊕ padding)
    mask:   [B, T]     True where ``labels[:, t]`` is an action to imitate (response
                       tokens incl. eos); prompt and padding are False
    The logits at position ``t-1`` (state ``s_h`` = tokens ``< t``) predict token ``t``,
    so the shift happens here, as in Hugging Face's ``labels=`` convention. Position 0
    has no state before it and must not be masked in.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2] or mask.shape != labels.shape:
        raise ValueError(f"need logits [B, T, V], labels [B, T], mask [B, T]; got "
                         f"{list(logits.shape)}, {list(labels.shape)}, {list(mask.shape)}")
    mask = mask.bool()
    if mask[:, 0].any():
        raise ValueError("mask[:, 0] is True: the first token has no state before it to predict it")
    n_actions = mask[:, 1:].sum()
    if n_actions == 0:
        raise ValueError("mask selects no tokens: there is nothing to imitate")
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)                    # [B, T-1, V]
    logp_actions = logp.gather(-1, labels[:, 1:].unsqueeze(-1)).squeeze(-1)  # [B, T-1]
    return -(logp_actions * mask[:, 1:]).sum() / n_actions


# ---------------------------------------------------------------- config
@dataclass
class BCConfig:
    """Behaviour-cloning run; the defaults fit a ~100k-parameter model on a laptop CPU."""
    steps: int = 500
    """Optimiser steps (one minibatch each)."""
    batch_size: int = 64
    """Demonstrations per minibatch."""
    lr: float = 3e-3
    """Peak AdamW learning rate (tiny models like large rates; use ~1e-5 for a 0.5B model)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup: int = 20
    """Steps of linear warm-up; afterwards the rate follows a cosine down to ``min_lr_ratio``."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a share of ``lr``."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this (0 disables)."""
    seed: int = 0
    """Seeds the minibatch order (and torch's global generator for dropout)."""
    device: str = "auto"
    """``"auto"`` picks cuda, then mps, then cpu."""
    bucket: int = 8
    """Sort each window of this many batches by length before batching (1: no bucketing)."""
    log_every: int = 50
    """Refresh the progress bar's loss every this many steps."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"BCConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"BCConfig.lr must be > 0, got {self.lr}")

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- data
def _as_triple(example, index: int):
    """``(prompt, response, system)`` from a tuple of 2–3 items or a dict with those keys."""
    if isinstance(example, dict):
        if "prompt" not in example or "response" not in example:
            raise ValueError(f"example {index}: a dict needs 'prompt' and 'response' keys, got {sorted(example)}")
        return example["prompt"], example["response"], example.get("system")
    if isinstance(example, (tuple, list)) and len(example) in (2, 3):
        return (*example, None)[:3]
    raise ValueError(f"example {index}: expected (prompt, response[, system]) or a dict, got {example!r:.80}")


def tokenize_examples(tokenizer, examples) -> list[tuple[list[int], int]]:
    """Each example as ``(prompt ids ⊕ response ids, number of prompt ids)``.

    Each distinct prompt and response is tokenized once: demonstration sets repeat them
    many times and the chat template is slow.
    """
    prompts: dict = {}
    responses: dict = {}
    out = []
    for i, example in enumerate(examples):
        prompt, response, system = _as_triple(example, i)
        key = (prompt if isinstance(prompt, str) else repr(prompt), system)
        if key not in prompts:
            prompts[key] = prompt_ids(tokenizer, prompt, system)
        if not isinstance(response, str):
            raise ValueError(f"example {i}: a response is a string, got {type(response).__name__}")
        if response not in responses:
            try:
                responses[response] = response_ids(tokenizer, response)
            except ValueError as err:
                raise ValueError(f"example {i}: {err}") from None
        p_ids = prompts[key]
        out.append((p_ids + responses[response], len(p_ids)))
    return out


def collate(sequences: list[tuple[list[int], int]], pad_id: int):
    """Right-padded ``input_ids, attention_mask, action_mask``, each [B, T]."""
    T = max(len(ids) for ids, _ in sequences)
    B = len(sequences)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    action_mask = torch.zeros((B, T), dtype=torch.bool)
    for b, (ids, n_prompt) in enumerate(sequences):
        input_ids[b, :len(ids)] = torch.tensor(ids)
        attention_mask[b, :len(ids)] = 1
        action_mask[b, n_prompt:len(ids)] = True       # response tokens and eos: the actions
    return input_ids, attention_mask, action_mask


# ---------------------------------------------------------------- training loop
def _epoch_batches(lengths: list[int], config: BCConfig, gen: torch.Generator) -> list[list[int]]:
    """One epoch of minibatches in a seeded random order.

    With ``config.bucket`` the examples of each window of ``bucket`` batches are sorted by
    length before being cut into batches, so a batch pads to similar lengths (less wasted
    compute); the batches are then shuffled, so the order stays random.
    """
    order = torch.randperm(len(lengths), generator=gen).tolist()
    B = config.batch_size
    if len(order) < B:   # fewer examples than a batch: repeat them
        order = (order * (B // len(order) + 1))[:B]
    if config.bucket > 1:
        window = B * config.bucket
        order = [i for w in range(0, len(order), window)
                 for i in sorted(order[w:w + window], key=lengths.__getitem__)]
    batches = [order[i:i + B] for i in range(0, len(order) - B + 1, B)]
    shuffled = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in shuffled]


def _lr_factor(step: int, config: BCConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    done = (step - config.warmup) / max(1, config.steps - config.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine


def train_bc(model, tokenizer, examples, config: BCConfig | None = None) -> list[float]:
    """Fit ``model`` to the demonstrations by next-token prediction (eq. 2); return the loss per step.

    ``examples``: ``(prompt, response)``, ``(prompt, response, system)`` or dicts with
    those keys; prompts are strings or chat messages, tokenized by ``endorm_mini.chat``
    exactly as the reward and PPO will see them. The model is trained in place, moved to
    ``config.device`` and left in eval mode.
    """
    config = config or BCConfig()
    examples = list(examples)
    if not examples:
        raise ValueError("train_bc needs at least one example")
    ensure_pad_token(tokenizer)
    data = tokenize_examples(tokenizer, examples)
    limit = context_length(model.config)
    longest = max(len(ids) for ids, _ in data)
    if limit is not None and longest > limit:
        raise ValueError(f"a demonstration is {longest} tokens long but the model's context is {limit}")

    device = resolve_device(config.device)
    model.to(device).train()
    torch.manual_seed(config.seed)                    # dropout, if the model has any
    gen = torch.Generator().manual_seed(config.seed)  # minibatch order
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, config))

    batches: list[list[int]] = []
    losses: list[float] = []
    bar = tqdm(range(config.steps), desc="behaviour cloning", disable=not config.progress)
    for step in bar:
        if not batches:   # a new epoch: every demonstration is seen once per epoch
            batches = _epoch_batches([len(ids) for ids, _ in data], config, gen)
        idx = batches.pop()
        b_ids, b_attn, b_actions = (t.to(device) for t in collate([data[i] for i in idx],
                                                                  tokenizer.pad_token_id))
        logits = model(input_ids=b_ids, attention_mask=b_attn).logits      # [B, T, V]
        loss = next_token_loss(logits, b_ids, b_actions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % config.log_every == 0 or step == config.steps - 1:
            recent = losses[-config.log_every:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
    bar.close()
    model.eval()
    return losses

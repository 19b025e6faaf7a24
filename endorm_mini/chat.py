"""Prompt and response token ids: the one place that decides what the model is conditioned on.

Used by behaviour cloning (`bc`), the endogenous reward (`reward`) and PPO (`ppo`), so a
response is tokenized the same way when it is trained on, scored and generated.

- A prompt is a string or a list of chat messages (``{"role", "content"}``); an optional
  ``system`` string is put first as a system message. With a chat template the prompt
  is rendered with ``add_generation_prompt=True``; without one the text is
  ``system + "\\n\\n" + user turns`` (a warning says so once).
- A response is the assistant's text followed by ``eos`` (the end-of-turn token): the
  state after ``eos`` is terminal (README, "The endogenous reward's contract").
"""
from __future__ import annotations

import warnings

import torch




def as_messages(prompt, system: str | None = None) -> list[dict[str, str]]:
    """Chat messages for ``prompt`` (a string or messages), with ``system`` first if given."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, (list, tuple)) and all(isinstance(m, dict) for m in prompt):
        messages = [dict(m) for m in prompt]
    else:
        raise ValueError(f"a prompt is a string or a list of chat messages, got {type(prompt).__name__}")
    if system is not None:
        if messages and messages[0].get("role") == "system":
            raise ValueError("the prompt already has a system message; do not pass system= too")
        messages = [{"role": "system", "content": system}] + messages
    return messages


def prompt_ids(tokenizer, prompt, system: str | None = None) -> list[int]:
    """Token ids of the prompt, ending where the assistant's response begins."""
    messages = as_messages(prompt, system)
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        # transformers 5 returns a BatchEncoding here, 4.x a plain list.
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        return list(ids)
    warnings.warn(f"{type(tokenizer).__name__} has no chat template: the prompt is plain text "
                  "(system, blank line, user turns)", stacklevel=2)
    text = "\n\n".join(m["content"] for m in messages)
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    return list(ids)


def response_ids(tokenizer, response: str, add_eos: bool = True) -> list[int]:
    """Token ids of the response text, followed by ``eos`` unless ``add_eos`` is False."""
    if not isinstance(response, str):
        raise ValueError(f"a response is a string, got {type(response).__name__}")
    if not response:
        raise ValueError("empty response: there is no action to score")
    ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    if add_eos:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has no eos token: set tokenizer.eos_token")
        ids.append(tokenizer.eos_token_id)
    return ids


def ensure_pad_token(tokenizer) -> None:
    """Give a tokenizer with no pad token its eos as pad, and say so (batching needs one)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{type(tokenizer).__name__} has neither a pad nor an eos token")
        warnings.warn("tokenizer has no pad token: using its eos token as pad", stacklevel=2)
        tokenizer.pad_token = tokenizer.eos_token


def context_length(config) -> int | None:
    """How many tokens the model can attend to, from its config (``None`` if it does not say)."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def left_pad(rows: list[list[int]], pad: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids [B, L], attention_mask [B, L])`` of token-id rows padded on the left, so
    every row's last real token sits in the last column (where generation continues)."""
    L = max(map(len, rows))
    ids = torch.tensor([[pad] * (L - len(r)) + list(r) for r in rows], device=device)
    mask = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask

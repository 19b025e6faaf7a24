"""A trained Bradley–Terry reward model (eq. 3–4), the baseline the endogenous reward is compared with.

RLHF's reward model: ``P(y_w ≻ y_l | x) = σ(R(x, y_w) − R(x, y_l))`` (eq. 3), fitted by
minimising ``−E log σ(R(x, y_w) − R(x, y_l))`` (eq. 4) on preference pairs. Here ``R`` is
a scalar head on a causal LM's final hidden state at the response's last token (eos), as
in common reward-model code (``AutoModelForSequenceClassification`` pools the same way).
By default the LM is frozen and only the head learns (a linear probe: features are
computed once, training takes seconds on a CPU); ``train_backbone=True`` fine-tunes a
copy of the whole LM.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..chat import prompt_ids, response_ids
from ..device import resolve_device
from .methods import as_pair


def bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Eq. 4: ``−mean log σ(R(x, y_w) − R(x, y_l))`` over a batch of pairs ([B], [B] → scalar)."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


@dataclass
class BTConfig:
    """How the Bradley–Terry reward model is trained. Defaults run in seconds on a CPU."""
    steps: int = 300
    """optimiser steps"""
    batch_size: int = 32
    """preference pairs per step"""
    lr: float = 1e-2
    """Adam learning rate (use ~1e-4 with train_backbone)"""
    weight_decay: float = 0.0
    """AdamW weight decay on the head (and backbone)"""
    train_backbone: bool = False
    """False: a linear probe on frozen LM features; True: fine-tune a copy of the LM too"""
    seed: int = 0
    """seeds the head's initialisation and the minibatch order"""
    device: str = "auto"
    """where to train and score"""
    progress: bool = True
    """show a progress bar"""


class BradleyTerryRM(torch.nn.Module):
    """``R(x, y) = w · h_L(x ⊕ y)[eos] + b``: a scalar head on the LM's last hidden state.

    Call it like any reward method: ``rm(prompt, responses, system=None) -> list[float]``.
    """
    name = "bradley-terry"

    def __init__(self, model, tokenizer):
        super().__init__()
        self.backbone = model.get_decoder()
        self.tokenizer = tokenizer
        self.head = torch.nn.Linear(model.config.get_text_config().hidden_size, 1)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def features(self, sequences: list[list[int]]) -> torch.Tensor:
        """The final hidden state at each sequence's last token: [B, D] (right padding)."""
        L = max(len(s) for s in sequences)
        input_ids = torch.zeros((len(sequences), L), dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for b, s in enumerate(sequences):
            input_ids[b, :len(s)] = torch.tensor(s)
            attention_mask[b, :len(s)] = 1
        hidden = self.backbone(input_ids=input_ids.to(self.device),
                               attention_mask=attention_mask.to(self.device)).last_hidden_state  # [B, L, D]
        last = torch.tensor([len(s) - 1 for s in sequences], device=self.device)
        return hidden[torch.arange(len(sequences), device=self.device), last]              # [B, D]

    def sequence(self, prompt, response: str, system=None) -> list[int]:
        """Prompt ⊕ response ⊕ eos token ids: the same tokens the endogenous reward scores."""
        return prompt_ids(self.tokenizer, prompt, system) + response_ids(self.tokenizer, response)

    @torch.no_grad()
    def __call__(self, prompt, responses, system=None) -> list[float]:
        feats = self.features([self.sequence(prompt, r, system) for r in responses])
        return self.head(feats.to(self.head.weight.dtype)).squeeze(-1).float().tolist()  # bf16 LMs too


def pairs_from_items(items, all_styles: bool = False) -> list[tuple[str, str, str]]:
    """Preference pairs ``(prompt, chosen, rejected)`` from RM-Bench-format items.

    Style-matched by default (``chosen[k]`` vs ``rejected[k]``: 3 pairs an item); with
    ``all_styles`` every chosen against every rejected (9), which also teaches the reward
    model to ignore style.
    """
    pairs = []
    for item in items:
        n = len(item["chosen"])
        cells = [(i, j) for i in range(n) for j in range(n)] if all_styles else [(k, k) for k in range(n)]
        pairs += [(item["prompt"], item["chosen"][i], item["rejected"][j]) for i, j in cells]
    return pairs


def _pair_sequences(rm: BradleyTerryRM, pairs) -> tuple[list[list[int]], list[list[int]]]:
    chosen, rejected = [], []
    for i, pair in enumerate(pairs):
        p = as_pair(pair)
        try:
            chosen.append(rm.sequence(p["prompt"], p["chosen"], p["system"]))
            rejected.append(rm.sequence(p["prompt"], p["rejected"], p["system"]))
        except ValueError as err:
            raise ValueError(f"preference pair {i}: {err}") from None
    return chosen, rejected


@torch.no_grad()
def _frozen_features(rm: BradleyTerryRM, sequences, batch_size: int) -> torch.Tensor:
    return torch.cat([rm.features(sequences[i:i + batch_size]).float()
                      for i in range(0, len(sequences), batch_size)])


def train_bradley_terry(model, tokenizer, pairs, config: BTConfig | None = None):
    """Fit ``BradleyTerryRM`` on ``pairs`` by eq. 4; returns ``(rm, loss history)``.

    ``model`` itself is never changed (the backbone is a copy when it is trained).
    """
    config = config or BTConfig()
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no preference pairs to train on")
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    backbone = copy.deepcopy(model) if config.train_backbone else model
    rm = BradleyTerryRM(backbone, tokenizer).to(device)
    # Dropout only while fine-tuning; frozen features are deterministic (and no grads flow
    # into the caller's model: only the head's parameters go to the optimiser).
    rm.backbone.train(config.train_backbone)
    chosen, rejected = _pair_sequences(rm, pairs)
    if not config.train_backbone:  # frozen: the features never change, compute them once
        f_chosen = _frozen_features(rm, chosen, config.batch_size)      # [N, D]
        f_rejected = _frozen_features(rm, rejected, config.batch_size)  # [N, D]
    params = list(rm.parameters()) if config.train_backbone else list(rm.head.parameters())
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    for _ in tqdm(range(config.steps), desc="Bradley–Terry RM", disable=not config.progress):
        mb = torch.randint(len(pairs), (min(config.batch_size, len(pairs)),), generator=generator)
        if config.train_backbone:
            mb_chosen = rm.features([chosen[i] for i in mb])
            mb_rejected = rm.features([rejected[i] for i in mb])
        else:
            mb_chosen, mb_rejected = f_chosen[mb.to(device)], f_rejected[mb.to(device)]
        loss = bt_loss(rm.head(mb_chosen).squeeze(-1), rm.head(mb_rejected).squeeze(-1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(loss.item())
    rm.eval()
    return rm, history

"""The endogenous reward as a TRL reward function (docs/paper.md §5, eq. 11–12; issue 13).

TRL 1.16's ``GRPOTrainer`` and ``RLOOTrainer`` call every plain callable in
``reward_funcs=[...]`` as ``f(prompts=…, completions=…, completion_ids=…, **columns)`` and
log it under its ``__name__``. ``completion_ids`` are the ids the trainer generated, cut
after the first eos id (eos included) or at ``max_completion_length``; the prompt ids are
not passed, so :func:`trainer_prompt_ids` renders the prompts the way the trainer did.

- :func:`completion_rewards`: the endogenous reward of each completion, scored on its ids
  by ``EndogenousReward.score_ids`` (the kit's one scorer);
- :func:`group_advantages`: GRPO's group-relative advantages, as TRL computes them;
- :class:`EndogenousRewardFunction`: the object to pass in ``reward_funcs=[...]``.

Nothing here imports ``trl``, ``accelerate`` or ``datasets`` at module level.
"""
from __future__ import annotations

import json
import numbers
import os
from typing import Callable, Sequence

import torch

from ..reward import EndogenousReward

REDUCES = ("sum", "mean")


# ---------------------------------------------------------------- the reward of completions
def completion_rewards(scorer: EndogenousReward, prompt_ids: list[list[int]],
                       completion_ids: list[list[int]], eos_token_ids: int | Sequence[int],
                       reduce: str = "sum") -> list[float]:
    """Endogenous reward of each generated completion, scored on exactly these ids (eq. 12):
    a completion whose last id is an eos id ended (terminal V = 0); otherwise it was cut at the
    length limit and keeps its last V. reduce="sum": the response total (eq. 12 telescoped);
    "mean": the total divided by the number of completion tokens.

    The sum is ``α Σ log π̂ + V(s_1) − V(s_{T+1})`` with ``V(s_{T+1}) = 0`` for an ended
    completion. The eos id counts as one of the completion's tokens (it is an action).
    """
    if reduce not in REDUCES:
        raise ValueError(f"reduce must be one of {REDUCES}, got {reduce!r}")
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"prompt_ids has {len(prompt_ids)} rows but completion_ids "
                         f"{len(completion_ids)}: one prompt per completion")
    completion_ids = [_as_id_list(ids) for ids in completion_ids]
    prompt_ids = [_as_id_list(ids) for ids in prompt_ids]
    for i, ids in enumerate(completion_ids):
        if not ids:
            raise ValueError(f"completion_ids[{i}] has no ids: there is no action to score")
    results = scorer.score_ids(prompt_ids, completion_ids, progress=False,
                               eos_token_ids=eos_token_ids)
    totals = [r.total for r in results]
    if reduce == "mean":
        totals = [total / len(ids) for total, ids in zip(totals, completion_ids)]
    return totals


def _as_id_list(ids) -> list:
    """A row of token ids as a list (TRL passes lists; a tensor row is accepted too)."""
    return ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)


# ---------------------------------------------------------------- GRPO's group baseline
def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True,
                     eps: float = 1e-4) -> torch.Tensor:
    """GRPO's group-relative advantages, exactly as TRL computes them: each reward minus the mean of
    its group of `group_size` consecutive completions, divided by the group's std + eps when scale.

    Transcribed from TRL 1.16 ``trl/trainer/grpo_trainer.py`` lines 2762–2786
    (``multi_objective_aggregation="sum_then_normalize"``, ``scale_rewards="group"`` or
    ``"none"``) with ``nanstd`` of ``trl/trainer/utils.py`` line 1021: the std is the sample
    std (Bessel's n − 1), a NaN reward (TRL's "unscorable") is left out of its group's mean
    and std, a group of one has std 0, and a NaN advantage becomes 0.

    With the endogenous reward's sum, every completion of a group starts in the same state
    s_1 (the prompt), so ``V(s_1)`` is one constant per group and cancels here: the
    advantage ranks completions by ``α Σ log π̂ − V(s_{T+1})`` alone (eq. 12 telescoped).
    With ``reduce="mean"`` it does not cancel (``V(s_1)/T`` differs with the length T).
    """
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 1:
        raise ValueError("rewards must be a 1-D tensor, one reward per completion, got "
                         f"{getattr(rewards, 'shape', type(rewards).__name__)}")
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral) \
            or group_size < 1:
        raise ValueError(f"group_size must be an integer ≥ 1, got {group_size!r}")
    if rewards.numel() % group_size:
        raise ValueError(f"group_size {group_size} does not divide the {rewards.numel()} rewards: "
                         "each prompt's completions come in a group of consecutive rows")
    if not eps >= 0:
        raise ValueError(f"eps must be ≥ 0, got {eps!r}")
    grouped = rewards.float().view(-1, group_size)                     # [n_groups, G]
    mean = torch.nanmean(grouped, dim=1, keepdim=True)                 # [n_groups, 1]
    if group_size > 1:
        count = (~torch.isnan(grouped)).sum(dim=1, keepdim=True)
        variance = torch.nanmean((grouped - mean) ** 2, dim=1, keepdim=True)
        bessel = torch.where(count > 1, count / (count - 1), torch.full_like(variance, torch.nan))
        std = torch.sqrt(variance * bessel)
    else:   # TRL: a group of one has no spread (it happens only in evaluation)
        std = torch.zeros_like(mean)
    advantages = grouped - mean
    if scale:
        advantages = advantages / (std + eps)
    return torch.nan_to_num(advantages, nan=0.0).view(-1)

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

import contextlib
import math
import numbers
import os
import re
from typing import Callable, Sequence

import torch

from ..device import resolve_device
from ..reward import EndogenousReward

REDUCES = ("sum", "mean")
RENDER_CACHE = 65536   # rendered prompts remembered by a reward function (then it starts over)


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
    # GRPO samples G completions of each prompt, and a confident policy repeats itself (44% of
    # the completions in benchmarks/grpo_reward.py): each distinct pair is scored once.
    distinct: dict[tuple, int] = {}
    index = [distinct.setdefault((tuple(p), tuple(c)), len(distinct))
             for p, c in zip(prompt_ids, completion_ids)]
    try:
        results = scorer.score_ids([list(p) for p, _ in distinct], [list(c) for _, c in distinct],
                                   progress=False, eos_token_ids=eos_token_ids)
    except ValueError as err:   # name the caller's row, not the distinct pair's
        found = re.match(r"item (\d+): ", str(err))
        if found is None:
            raise
        row = index.index(int(found.group(1)))
        raise ValueError(f"completion {row}: {str(err)[found.end():]}") from None
    totals = [results[i].total for i in index]
    if reduce == "mean":
        totals = [total / len(ids) for total, ids in zip(totals, completion_ids)]
    return totals


def _as_id_list(ids) -> list:
    """A row of token ids as a list (TRL passes lists; a tensor row is accepted too)."""
    if type(ids) is list:
        return ids
    return ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)


# ---------------------------------------------------------------- GRPO's group baseline
def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True,
                     eps: float = 1e-4) -> torch.Tensor:
    """GRPO's group-relative advantages, exactly as TRL computes them: each reward minus the mean of
    its group of `group_size` consecutive completions, divided by the group's std + eps when scale.

    Transcribed from TRL 1.16 ``trl/trainer/grpo_trainer.py`` lines 2761–2787 and 2810
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


# ---------------------------------------------------------------- prompts, as the trainer renders
def is_conversational(prompt) -> bool:
    """A chat prompt (a list of ``{"role", "content"}`` messages): TRL's ``is_conversational``."""
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict) \
        and "role" in prompt[0] and "content" in prompt[0]


def trainer_prompt_ids(tokenizer, prompts: list, chat_template_kwargs: dict | None = None
                       ) -> list[list[int]]:
    """Prompt ids exactly as TRL 1.16's trainers build them for generation.

    ``GRPOTrainer._tokenize_prompts`` (``trl/trainer/grpo_trainer.py`` lines 1684–1761;
    ``RLOOTrainer``'s at ``rloo_trainer.py`` line 1249 is the same): conversational prompts
    (a system message included, if the dataset has one) through the processing class's chat
    template with ``add_generation_prompt=True`` and ``GRPOConfig.chat_template_kwargs``;
    plain-text prompts through ``processing_class(text=prompts)``, which adds the
    tokenizer's special tokens and applies no chat template. Tools and environments (a
    per-prompt tool schema) are not reproduced.
    """
    if not prompts:
        return []
    kwargs = dict(chat_template_kwargs or {})
    if is_conversational(prompts[0]):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"prompts are chat messages but the tokenizer {_name(tokenizer)} "
                             "has no chat template")
        rendered = tokenizer.apply_chat_template(conversation=[list(p) for p in prompts],
                                                 add_generation_prompt=True, tokenize=True,
                                                 return_dict=True, **kwargs)
        return [list(ids) for ids in rendered["input_ids"]]
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise ValueError(f"prompts[{bad[0]}] is a {type(prompts[bad[0]]).__name__}: prompts are "
                         "all strings or all chat-message lists")
    return [list(ids) for ids in tokenizer(text=list(prompts))["input_ids"]]


def _prompt_key(prompt):
    """A key of a prompt, so a repeated prompt is rendered once: the text itself, or the
    messages' ``repr`` (equal prompts from one dataset have equal reprs; a prompt whose repr
    is not reproducible, an image say, is only rendered again)."""
    return prompt if isinstance(prompt, str) else ("chat", repr(prompt))


# ---------------------------------------------------------------- the TRL reward function
class EndogenousRewardFunction:
    """The endogenous reward (eq. 12) of a frozen reference LM, as a TRL reward function.

    ``GRPOTrainer(model, reward_funcs=[EndogenousRewardFunction("tiny-arith")], …)`` (or
    ``RLOOTrainer``). Each call scores the trainer's ``completion_ids`` as they are (never
    re-tokenised text) after the prompt rendered as the trainer rendered it
    (:func:`trainer_prompt_ids`), in one forward per length-sorted batch, the LM head only on
    completion states (``EndogenousReward.score_ids``). A completion that ends with an eos id
    reaches the terminal state (V = 0); one cut at ``max_completion_length`` keeps its last V.

    ``reduce="sum"`` rewards ``α Σ log π̂ + V(s_1) − V(s_{T+1})`` (eq. 12 telescoped). Under
    GRPO's group baseline (:func:`group_advantages`) the G completions of one prompt share
    s_1, so ``V(s_1)`` cancels within the group and only ``α Σ log π̂ − V(s_{T+1})`` ranks
    them. ``reduce="mean"`` divides by the completion's length (eos included). With a
    ``verifier`` (``verifier(prompts, completions, **kwargs) -> list[float]``, a TRL-style
    reward function) the reward is ``endogenous + verifier_weight · verifier``.

    model:             the reference: a zoo name, a folder or a hub id, loaded here (once per
                       process: each rank builds its own) on this process's device, bf16 on a
                       GPU and fp32 on a CPU, in eval mode; or a loaded causal LM, used as is
                       (its own device and dtype unless ``device``/``dtype`` say otherwise;
                       not the policy object itself, or the reward would move with training).
    tokenizer:         the reference's tokenizer (required with a loaded model).
    alpha:             the soft-Q temperature α of eq. 10–12.
    reduce:            "sum" (the response total) or "mean" (per completion token).
    verifier:          optional callable for the hybrid reward; ``verifier_weight`` scales it.
    device, dtype:     where and in what precision the reference runs (see ``model``).
    policy_tokenizer:  the trainer's processing class; refused unless its vocabulary is the
                       reference's (the reward scores the policy's ids with the reference).
                       Prompts are rendered with it (its chat template, its special tokens),
                       as the trainer rendered them, whatever the reference's template is.
    eos_token_ids:     ids that end a completion; default TRL's rule on what is given: the
                       tokenizer's eos plus every ``generation_config.eos_token_id`` (read
                       from the folder when the reference is loaded by name). A trainer stops
                       on its policy's ids: pass those (``policy_eos_ids``) with another
                       reference.
    chat_template_kwargs: ``GRPOConfig.chat_template_kwargs``, when the run sets them.
    chunk_size, batch_tokens: passed to ``EndogenousReward``.
    name:              the ``__name__`` TRL logs the reward under.
    """

    def __init__(self, model, tokenizer=None, *, alpha: float = 1.0, reduce: str = "sum",
                 verifier: Callable | None = None, verifier_weight: float = 1.0, device=None,
                 dtype=None, policy_tokenizer=None,
                 eos_token_ids: int | Sequence[int] | None = None,
                 chat_template_kwargs: dict | None = None, chunk_size: int = 64,
                 batch_tokens: int | None = None, name: str | None = None):
        if reduce not in REDUCES:
            raise ValueError(f"reduce must be one of {REDUCES}, got {reduce!r}")
        if verifier is not None and not callable(verifier):
            raise ValueError(f"verifier must be a callable (prompts, completions, **kwargs), "
                             f"got {type(verifier).__name__}")
        if isinstance(verifier_weight, bool) or not isinstance(verifier_weight, numbers.Real) \
                or not math.isfinite(verifier_weight):
            raise ValueError(f"verifier_weight must be a finite number, got {verifier_weight!r}")
        if isinstance(model, (str, os.PathLike)):
            device = resolve_device(device) if device is not None else _process_device()
            if dtype is None:   # bf16 on a GPU, fp32 on a CPU
                dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
            model, tokenizer, declared = _load_reference(str(model), tokenizer, device, dtype)
            if eos_token_ids is None:
                eos_token_ids = union_eos_ids(tokenizer, declared)
        elif tokenizer is None:
            raise ValueError("tokenizer: a loaded model needs its tokenizer "
                             "(or pass a model name and it is loaded with its own)")
        else:
            device = device or next(model.parameters()).device
        if policy_tokenizer is not None:
            check_same_vocabulary(tokenizer, policy_tokenizer)
        self.scorer = EndogenousReward(model, tokenizer, alpha=alpha, device=device or "auto",
                                       dtype=dtype, chunk_size=chunk_size,
                                       batch_tokens=batch_tokens)
        self.tokenizer = tokenizer
        # The trainer renders prompts with its processing class: so do we (same vocabulary).
        self.render_tokenizer = policy_tokenizer if policy_tokenizer is not None else tokenizer
        self.reduce = reduce
        self.verifier = verifier
        self.verifier_weight = float(verifier_weight)
        self.eos_token_ids = _default_eos_ids(model, tokenizer) if eos_token_ids is None \
            else eos_token_ids
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self._rendered: dict = {}    # prompt key → its ids as the trainer rendered them
        self.__name__ = name or ("endogenous_reward" if verifier is None
                                 else "endogenous_hybrid_reward")

    def __call__(self, prompts, completions, completion_ids, **kwargs) -> list[float]:
        """One reward per completion (TRL's reward-function protocol)."""
        n = len(completion_ids)
        if len(prompts) != n or len(completions) != n:
            raise ValueError(f"{len(prompts)} prompts, {len(completions)} completions and {n} "
                             "completion_ids: one of each per completion")
        completion_ids = [_as_id_list(ids) for ids in completion_ids]
        self._check_decoding(completions, completion_ids)
        prompt_ids = self._prompt_ids(prompts)
        rewards = completion_rewards(self.scorer, prompt_ids, completion_ids,
                                     self.eos_token_ids, self.reduce)
        if self.verifier is None:
            return rewards
        checked = self.verifier(prompts, completions, completion_ids=completion_ids, **kwargs)
        checked = list(checked)
        if len(checked) != n:
            raise ValueError(f"the verifier returned {len(checked)} rewards for {n} completions")
        bad = [i for i, v in enumerate(checked)
               if not isinstance(v, numbers.Real) or not math.isfinite(v)]
        if bad:
            raise ValueError(f"the verifier's reward for completion {bad[0]} is "
                             f"{checked[bad[0]]!r}, not a finite number")
        if callable(kwargs.get("log_metric")):   # TRL logs the hybrid's two parts beside it
            kwargs["log_metric"](f"{self.__name__}/endogenous", sum(rewards) / n)
            kwargs["log_metric"](f"{self.__name__}/verifier", sum(map(float, checked)) / n)
        return [r + self.verifier_weight * float(v) for r, v in zip(rewards, checked)]

    def _prompt_ids(self, prompts) -> list[list[int]]:
        """The trainer's prompt ids, each distinct prompt rendered once and remembered (GRPO
        repeats a prompt G times a step, and every epoch)."""
        plain = [isinstance(p, str) for p in prompts]
        if any(plain) and not all(plain):
            raise ValueError(f"prompts[{plain.index(not plain[0])}] differs in kind from "
                             "prompts[0]: prompts are all strings or all chat-message lists")
        keys = [_prompt_key(p) for p in prompts]
        new = {k: p for k, p in zip(keys, prompts) if k not in self._rendered}
        if new:
            if len(self._rendered) + len(new) > RENDER_CACHE:
                self._rendered.clear()
            ids = trainer_prompt_ids(self.render_tokenizer, list(new.values()),
                                     self.chat_template_kwargs)
            self._rendered.update(zip(new, ids))
        return [self._rendered[k] for k in keys]

    def _check_decoding(self, completions, completion_ids) -> None:
        """Refuse ids the trainer decoded to other text than the reference's tokenizer does.

        The trainer decodes ``completion_ids`` with its processing class, skipping special
        tokens; the same tokenizer gives the same text, another one almost never does. Only the
        first completion is checked (cheap), and only when the trainer's text is plain (no
        response parser that rewrites tool calls or reasoning).
        """
        first = completions[0] if completions else None
        if isinstance(first, list) and first and isinstance(first[-1], dict):
            first = first[-1].get("content")
        parsed = getattr(self.tokenizer, "response_template", None) is not None \
            or getattr(self.tokenizer, "response_schema", None) is not None
        if not isinstance(first, str) or parsed:
            return
        ours = self.tokenizer.decode(completion_ids[0], skip_special_tokens=True)
        if ours != first:
            raise ValueError(f"the reference's tokenizer ({_name(self.tokenizer)}) decodes "
                             f"completion 0 as {ours[:40]!r} but the trainer decoded it as "
                             f"{first[:40]!r}: the policy's tokenizer differs from the reference's")


def check_same_vocabulary(reference_tokenizer, policy_tokenizer) -> None:
    """``ValueError`` naming both tokenizers unless they map the same tokens to the same ids."""
    ours, theirs = reference_tokenizer.get_vocab(), policy_tokenizer.get_vocab()
    if ours == theirs:
        return
    differ = len(set(ours.items()) ^ set(theirs.items()))
    raise ValueError(f"the reference's tokenizer ({_name(reference_tokenizer)}, "
                     f"{len(ours)} tokens) differs from the policy's "
                     f"({_name(policy_tokenizer)}, {len(theirs)} tokens; {differ} "
                     "token-id pairs differ): the reward scores the policy's ids, so both "
                     "must share one vocabulary")


def _name(tokenizer) -> str:
    """How an error names a tokenizer: where it was loaded from, else its class."""
    return repr(tokenizer.name_or_path) if tokenizer.name_or_path else type(tokenizer).__name__


def _load_reference(name: str, tokenizer, device: torch.device, dtype: torch.dtype):
    """Load the frozen reference: eval mode, no gradients, whole on this process (outside
    DeepSpeed's ``zero.Init`` when ZeRO-3 is on: see :func:`outside_zero3`). Returns
    ``(model, tokenizer, eos ids its folder's generation config declares)``: ``models.load``
    sets the model's generation config to the tokenizer's single eos, so they are read first.
    """
    from ..models import load, locate

    declared = declared_eos_ids(*locate(name))
    with outside_zero3():
        model, own_tokenizer = load(name, device=device, dtype=dtype)
    model.requires_grad_(False)   # frozen: the reward never trains
    return model, tokenizer or own_tokenizer, declared


def declared_eos_ids(path: str, hub: dict | None = None) -> list[int]:
    """The eos ids of the ``generation_config.json`` at ``path`` (none: ``[]``)."""
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(path, **(hub or {}))
    except (OSError, ValueError):   # no generation_config.json: the tokenizer's eos alone
        return []
    return _as_ids(config.eos_token_id)


def union_eos_ids(tokenizer, declared) -> list[int]:
    """TRL's rule (``GRPOTrainer.__init__``): the tokenizer's eos, then every declared id."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return ids + [t for t in _as_ids(declared) if t not in ids]


def policy_eos_ids(path: str, tokenizer, hub: dict | None = None) -> list[int]:
    """The ids TRL stops a completion on when it loads the policy from ``path``: the policy
    tokenizer's eos and every eos id of the folder's generation config."""
    return union_eos_ids(tokenizer, declared_eos_ids(path, hub))


def _as_ids(ids) -> list[int]:
    return [] if ids is None else [ids] if isinstance(ids, int) else list(ids)


@contextlib.contextmanager
def outside_zero3():
    """Load a model whole, not through DeepSpeed's ``zero.Init``, while transformers' ZeRO-3 mode
    is on (``TrainingArguments`` switches it on under an accelerate ZeRO-3 config): a frozen
    reward model that no DeepSpeed engine wraps would otherwise stay sharded (its embedding a
    (0,) tensor on every process) and nothing would gather it. transformers' own switch:
    ``unset_hf_deepspeed_config`` then ``set_hf_deepspeed_config`` with the same object."""
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:   # a transformers without the integration: no ZeRO-3 mode
        yield
        return
    weak = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)
    config = weak() if weak is not None else None
    if config is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


def _process_device() -> torch.device:
    """This process's device under torchrun / accelerate launch (its local GPU), else "auto"."""
    try:
        from accelerate import PartialState
    except ImportError:   # without the scale extra: one process
        return resolve_device("auto")
    return PartialState().device


def _default_eos_ids(model, tokenizer) -> list[int]:
    """TRL's rule: the tokenizer's eos and every eos id of the model's generation config."""
    config = getattr(model, "generation_config", None)
    return union_eos_ids(tokenizer, getattr(config, "eos_token_id", None))


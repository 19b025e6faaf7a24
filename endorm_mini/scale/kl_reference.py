"""The endogenous reward from TRL's own reference forward: no second copy of the model.

With β > 0 TRL's ``GRPOTrainer`` (and ``RLOOTrainer``) keeps a frozen copy of the policy's
starting weights (sharded like the policy under ZeRO-3; with LoRA, the policy with its adapter
disabled: the frozen base, no copy at all) and computes ``ref_per_token_logps``,
``log softmax(f̂(s_h,·)/T)[a_h]``, on exactly the completion ids it generated, at the sampling
temperature T, before it calls the reward functions. When the endogenous reward's α is T, that
is the ``log π̂(a_h|s_h)`` of eq. 10, and the response total of eq. 12 telescopes to

    Σ_h r̂_h = α Σ_h log π̂(a_h|s_h) + V(s_1) − V(s_{T+1}),   V(s_{T+1}) = 0 after an eos.

``V(s_1)`` is the same for the G completions of a prompt, so GRPO's and RLOO's group baselines
cancel it (``reward.group_advantages``): :class:`KLReferenceReward` rewards
``α Σ log π̂ − V(s_{T+1})``, whose advantages are those of the endogenous total. Only a
completion cut at ``max_completion_length`` needs ``V(s_{T+1})``: the reference's last hidden
state, caught by a hook during TRL's own forward, through the LM head (gathered under ZeRO-3),
``V = α logsumexp(f̂/α)`` (the soft value, unnumbered in the paper). What TRL logs under the reward's name is therefore the
endogenous total minus ``V(s_1)``.

Refused, naming why: α ≠ temperature (TRL's log-probs are then those of another policy), β = 0
(TRL keeps no reference), ``reduce="mean"`` (``V(s_1)/T`` does not cancel), and
``scale_rewards="batch"`` (the batch's std would see ``V(s_1)``).
"""
from __future__ import annotations

import math

import torch

from ..reward import soft_value

RTOL = 1e-6   # α and the temperature are equal up to float rounding of the flags
# logit rescalings TRL's fused LM head applies (trl/trainer/utils.py add_fused_lm_head)
SCALED_LOGITS = ("final_logit_softcapping", "logit_scale", "output_multiplier",
                 "lm_head_multiplier", "logits_scaling")


def check_reusable(alpha: float, temperature: float, beta: float,
                   scale_rewards: str = "group") -> None:
    """``ValueError`` naming why TRL's reference forward cannot give the endogenous reward."""
    if not math.isclose(alpha, temperature, rel_tol=RTOL):
        raise ValueError(f"--reuse-kl-reference needs --alpha equal to --temperature (got α = "
                         f"{alpha:g}, temperature {temperature:g}): TRL's reference log-probs "
                         "are at the sampling temperature, eq. 12 needs them at α")
    if not beta > 0:
        raise ValueError("--reuse-kl-reference needs --beta > 0: with β = 0 TRL keeps no "
                         "reference model to reuse")
    if scale_rewards not in ("group", "none", True, False):
        raise ValueError(f"--reuse-kl-reference needs scale_rewards 'group' or 'none', got "
                         f"{scale_rewards!r}: a batch std would not cancel V(s_1)")


class KLReferenceReward:
    """A TRL reward function: ``α Σ log π̂_ref − V(s_{T+1})`` from the trainer's reference
    forward of the same step (eq. 12 less the group's shared ``V(s_1)``).

    Used with :func:`reusing_trainer`, which hands it each reference forward's per-token
    log-probs and last soft values (``pending``) before TRL calls the reward functions.
    """

    def __init__(self, alpha: float, eos_token_ids, name: str = "endogenous_reward"):
        self.alpha = float(alpha)
        self.eos_token_ids = {eos_token_ids} if isinstance(eos_token_ids, int) \
            else set(eos_token_ids)
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self.__name__ = name

    def __call__(self, prompts, completions, completion_ids, **kwargs) -> list[float]:
        if self.pending is None:
            raise RuntimeError("no reference forward was caught before the reward call: run "
                               "it in a trainer made by reusing_trainer, with beta > 0")
        logps, last_values = self.pending
        self.pending = None
        if logps.size(0) != len(completion_ids):
            raise RuntimeError(f"the reference forward scored {logps.size(0)} completions, the "
                               f"reward is asked for {len(completion_ids)}")
        logps, last_values = logps.float().cpu(), last_values.float().cpu()
        width = logps.size(1)
        rewards = []
        for i, ids in enumerate(completion_ids):
            n = len(ids)
            total = self.alpha * float(logps[i, :n].sum())      # α Σ log π̂ (eq. 12)
            ended = n > 0 and int(ids[-1]) in self.eos_token_ids
            if not ended:       # cut at the length limit: the last state keeps its V
                if n != width:
                    raise RuntimeError(f"completion {i} has {n} ids and no eos, but the "
                                       f"batch's longest has {width}: it was not cut")
                total -= float(last_values[i])                  # − V(s_{T+1})
            rewards.append(total)
        return rewards


def reusing_trainer(base):
    """A subclass of TRL's ``GRPOTrainer`` or ``RLOOTrainer`` whose reference forward also feeds
    ``self.kl_reference_reward`` (a :class:`KLReferenceReward`, set after construction)."""

    class ReusingTrainer(base):
        kl_reference_reward: KLReferenceReward | None = None

        def _is_reference_forward(self, model) -> bool:
            """TRL's reference forward: on ``ref_model``, or with LoRA (no ``ref_model``) on the
            policy with its adapter disabled, i.e. the frozen base (peft's flag while TRL's
            ``use_adapter(model, None)`` runs)."""
            if getattr(self, "ref_model", None) is not None:
                return model is self.ref_model
            inner = self.accelerator.unwrap_model(model)
            return bool(getattr(inner, "_adapters_disabled", False))

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask,
                                               logits_to_keep, *args, **kwargs):
            reward = self.kl_reference_reward
            if reward is None or not self._is_reference_forward(model):
                return super()._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
            inner = getattr(model, "module", model)      # a DeepSpeed engine wraps it
            if hasattr(inner, "get_base_model"):         # LoRA: the peft wrapper's base model
                inner = inner.get_base_model()
            backbone = getattr(inner, inner.base_model_prefix)
            last = []

            def keep_last(module, inputs, output):       # s_{T+1}: after the last column
                hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") \
                    else output[0]
                last.append(hidden[:, -1].detach())

            handle = backbone.register_forward_hook(keep_last)
            try:
                out = super()._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
            finally:
                handle.remove()
            reward.pending = (out[0].detach(), last_values(inner, torch.cat(last), reward.alpha))
            return out

    ReusingTrainer.__name__ = ReusingTrainer.__qualname__ = f"Reusing{base.__name__}"
    return ReusingTrainer


@torch.no_grad()
def last_values(model, hidden: torch.Tensor, alpha: float) -> torch.Tensor:
    """``V(s) = α logsumexp(f̂(s,·)/α)`` (the soft value, unnumbered in the paper) of hidden states through ``model``'s LM head,
    gathered for the product under ZeRO-3 (TRL's ``maybe_gather_lm_head_ctx``)."""
    from trl.trainer.utils import maybe_gather_lm_head_ctx

    config = model.config.get_text_config()
    scaled = [k for k in SCALED_LOGITS if getattr(config, k, None) not in (None, 1.0)]
    if scaled:   # TRL's fused head rescales these logits; V here would not match its log-probs
        raise ValueError(f"--reuse-kl-reference: {type(model).__name__} sets {scaled[0]}, whose "
                         "logits the reward's V(s_{T+1}) does not rescale; use the reward's "
                         "own reference (drop --reuse-kl-reference)")
    head = model.get_output_embeddings()
    with maybe_gather_lm_head_ctx(head.weight, head.bias):
        logits = torch.nn.functional.linear(hidden.to(head.weight.dtype), head.weight, head.bias)
    return soft_value(logits.float(), alpha)

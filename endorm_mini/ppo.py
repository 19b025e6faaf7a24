"""A compact PPO for Hugging Face causal LMs, the endogenous reward built in (docs/paper.md §6).

In CleanRL's order: config (in ``ppo_config``), rollout, rewards, GAE, losses and update,
training loop (a run's files: ``ppo_run``). The MDP is §1's, horizon H = max_new_tokens; an
episode ends at eos or at H.
PPO maximises ``r'_t = score_t − β (log π_θ − log π_ref)(a_t|s_t) − c_H log π_θ(a_t|s_t)``, the
score being the frozen reference's endogenous reward r̂ (eq. 12; its one forward also gives
log π_ref), a verifier, both, or a callable. The course's closed-form optima (§6), tested: with
r̂ of π̂ = π_ref, c_H = α leaves π̂ optimal; β > 0 moves the policy to π ∝ π̂^{1+α/β}."""
from __future__ import annotations

import copy
import inspect
import time
import warnings
from collections import namedtuple
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from . import ppo_run
from .chat import ensure_pad_token, left_pad, prompt_ids
from .device import resolve_device, resolve_dtype
from .ppo_config import REWARDS, PPOConfig  # noqa: F401 (re-exported)
from .reward import endogenous_rewards

# ---------------------------------------------------------------- config
# PPOConfig and REWARDS are in ppo_config (no torch there: `endorm-mini ppo --help` is instant);
# imported above, so `from endorm_mini.ppo import PPOConfig` works as before.


# ---------------------------------------------------------------- rollout
@dataclass
class Rollout:
    """B sampled responses. Prompts are left-padded, so every response starts at column P."""
    prompts: list                 # B prompts (each repeated samples_per_prompt times)
    responses: list               # B response texts (eos and special tokens dropped)
    input_ids: torch.Tensor       # [B, P+T] prompt ⊕ response; pad after eos
    attention_mask: torch.Tensor  # [B, P+T] 0 on the left padding only
    mask: torch.Tensor            # [B, T] bool: response tokens up to and including eos
    logprobs: torch.Tensor        # [B, T] log π_θ(a_t|s_t) when sampled
    values: torch.Tensor          # [B, T] V_φ(s_t) from the value head
    ended: torch.Tensor           # [B] bool: emitted eos before the horizon
    seconds: float = 0.0          # wall time of the generation

    @property
    def actions(self) -> torch.Tensor:  # [B, T] the response tokens
        return self.input_ids[:, -self.mask.shape[1]:]


def make_value_head(model) -> torch.nn.Linear:
    """V_φ(s) = w·h(s) + b on the policy's final hidden state, zero-initialised: one forward
    gives logits and values (a critic LM would double memory: a 0.5B model must fit a T4).
    With an endogenous reward the critic is ``V_ref(s) + V_φ(s)``: the reference's soft value
    (the ``V`` of eq. 12, free from its forward) carries the per-prompt return; the head learns the rest.
    The head is fp32 whatever the policy's dtype: hidden states are cast to it."""
    embeddings = model.get_output_embeddings().weight
    head = torch.nn.Linear(embeddings.shape[1], 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head.to(embeddings.device)


def response_forward(model, input_ids, attention_mask, T: int):
    """Logits [B, T+1, V] and final hidden states [B, T+1, D] at states s_1 … s_{T+1}
    (the LM head runs on those only)."""
    # Left padding: position 0 at each row's first real token.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                use_cache=False, output_hidden_states=True, logits_to_keep=T + 1)
    return out.logits, out.hidden_states[-1][:, -(T + 1):]


def action_logprobs(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[a] in fp32: logits [B, T, V], actions [B, T] → [B, T]."""
    logits = logits.float()
    chosen = logits.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, -1)


@torch.no_grad()
def generate(model, value_head, tokenizer, prompts, max_new_tokens: int,
             temperature: float = 1.0, generator: torch.Generator | None = None,
             ids: list[list[int]] | None = None) -> Rollout:
    """Sample a response per prompt from π_θ = softmax(logits/τ) with a KV cache; pad after eos.

    Plain multinomial sampling (no top-k/top-p: PPO needs samples from π_θ itself); log-probs
    and values come from the same forwards. ``ids``: the prompts' ids if already rendered."""
    device = model.get_output_embeddings().weight.device
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    ids = ids or [prompt_ids(tokenizer, p) for p in prompts]
    B = len(ids)
    prompt, prompt_mask = left_pad(ids, pad, device)                          # B, P
    # transformers 5 renamed past_key_values to cache.
    forward_args = inspect.signature(model.forward).parameters
    cache_kw = "cache" if "cache" in forward_args else "past_key_values"
    start = time.perf_counter()
    x, attention, cache = prompt, prompt_mask, None
    pos = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    tokens, masks, logprobs, values = [], [], [], []
    for _ in range(max_new_tokens):
        out = model(input_ids=x, attention_mask=attention, position_ids=pos, use_cache=True,
                    output_hidden_states=True, logits_to_keep=1, **{cache_kw: cache})
        cache = out[cache_kw]
        logp = torch.log_softmax(out.logits[:, -1].float() / temperature, -1)  # B, V
        a = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)  # B
        a = a.masked_fill(done, pad)
        tokens.append(a)
        masks.append(~done)
        logprobs.append(logp.gather(-1, a[:, None]).squeeze(-1) * ~done)
        values.append(value_head(out.hidden_states[-1][:, -1].float()).squeeze(-1) * ~done)
        done = done | (a == eos)
        if done.all():
            break
        x, pos = a[:, None], pos[:, -1:] + 1
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], 1)
    actions, mask = torch.stack(tokens, 1), torch.stack(masks, 1)             # B, T
    kept = [row[m & (row != eos)].tolist() for row, m in zip(actions.cpu(), mask.cpu())]
    responses = tokenizer.batch_decode(kept, skip_special_tokens=True)
    input_ids = torch.cat([prompt, actions], 1)
    attention_mask = torch.cat([prompt_mask, torch.ones_like(actions)], 1)
    return Rollout(list(prompts), responses, input_ids, attention_mask, mask,
                   torch.stack(logprobs, 1), torch.stack(values, 1), done,
                   time.perf_counter() - start)


# ---------------------------------------------------------------- rewards
def check_reward(score, B: int, T: int, mask: torch.Tensor) -> torch.Tensor:
    """A reward as [B, T] ([B]: on each response's last token); refuses NaN/inf, wrong shapes."""
    score = torch.as_tensor(score, dtype=torch.float32).to(mask.device)
    if score.shape == (B,):
        last = mask.sum(1, keepdim=True) - 1
        score = torch.zeros(B, T, device=mask.device).scatter(1, last, score[:, None])
    elif score.shape != (B, T):
        raise ValueError(f"reward_fn returned shape {list(score.shape)}; "
                         f"expected [B] = [{B}] or [B, T] = [{B}, {T}]")
    bad = (~torch.isfinite(score) & mask).any(1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"reward_fn returned NaN/inf for responses {bad[:10]}")
    return torch.where(mask, score, 0.0)


@torch.no_grad()
def score_rollout(rollout: Rollout, ref_model, cfg: PPOConfig, reward_fn=None,
                  is_correct=None) -> dict:
    """Score [B, T], reference log-probs and the critic's baseline, from one reference forward
    per minibatch (never all B × (T+1) × V fp32 logits at once)."""
    mask, actions = rollout.mask, rollout.actions
    B, T = mask.shape
    parts = []
    for rows in torch.arange(B, device=mask.device).split(cfg.minibatch_size):
        ids, am = rollout.input_ids[rows], rollout.attention_mask[rows]
        logits = response_forward(ref_model, ids, am, T)[0].float()            # b, T+1, V
        # The episode ends at eos or at the horizon: V = 0 after every row's last token.
        ends = torch.ones_like(rows, dtype=torch.bool)
        lp, values, r = endogenous_rewards(logits, actions[rows], cfg.alpha, ends, mask[rows])
        ref_lp = lp
        if cfg.alpha != cfg.temperature:   # the policy samples at τ: its reference log-probs too
            ref_lp = action_logprobs(logits[:, :-1] / cfg.temperature, actions[rows]) * mask[rows]
        parts.append((lp, values, r, ref_lp))
    lp_alpha, soft_values, r_hat, ref_logprobs = (torch.cat(x) for x in zip(*parts))
    verdicts = None if is_correct is None else torch.tensor(
        [float(bool(is_correct(p, r))) for p, r in zip(rollout.prompts, rollout.responses)])
    if cfg.reward in ("verifier", "hybrid") and verdicts is None:
        raise ValueError(f"reward={cfg.reward!r} needs is_correct(prompt, response) -> bool")
    score = r_hat if cfg.reward in ("endogenous", "hybrid") else torch.zeros_like(r_hat)
    if cfg.reward == "endogenous_sum":
        score = check_reward(r_hat.sum(1), B, T, mask)
    if cfg.reward in ("verifier", "hybrid"):
        score = score + cfg.verifier_coef * check_reward(verdicts, B, T, mask)
    if cfg.reward == "custom":
        if reward_fn is None:
            raise ValueError("reward='custom' needs reward_fn(prompts, responses, "
                             "response_token_ids)")
        token_ids = [row[m].tolist() for row, m in zip(actions.cpu(), mask.cpu())]
        custom = reward_fn(rollout.prompts, rollout.responses, token_ids)
        score = check_reward(custom, B, T, mask)
    endogenous = cfg.reward in ("endogenous", "endogenous_sum", "hybrid")
    baseline = soft_values[:, :-1] * mask if endogenous else torch.zeros_like(score)
    return {"score": score, "ref_logprobs": ref_logprobs, "verdicts": verdicts,
            "baseline": baseline}


def shaped_rewards(score, logprobs, ref_logprobs, mask, kl_coef: float,
                   entropy_coef: float = 0.0):
    """r'_t = score_t − β·kl_t − c_H·log π_θ(a_t|s_t), all [B, T]; returns (r', kl).

    kl_t = log π_θ − log π_ref at the sampled token (E_π = KL(π_θ ‖ π_ref) per state). The
    entropy bonus is paid as reward (MaxEnt RL, eq. 6), not as a loss term: that would ignore
    today's action's effect on tomorrow's entropy, and its fixed point is not π̂
    (docs/paper.md §6)."""
    kl = (logprobs - ref_logprobs) * mask
    return (score - kl_coef * kl - entropy_coef * logprobs) * mask, kl


# ---------------------------------------------------------------- GAE
def gae(rewards, values, mask, gamma: float = 1.0, lam: float = 0.95):
    """GAE on [B, T]: δ_t = r_t + γ V(s_{t+1}) − V(s_t), A_t = δ_t + γλ A_{t+1} → (A, returns).

    V = 0 and A = 0 after each row's last valid token (the episode ends); ``mask`` is a prefix."""
    mask = mask.float()
    advantages = torch.zeros_like(rewards)
    next_adv = next_value = torch.zeros(rewards.shape[0], device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        next_value = values[:, t] * mask[:, t]
        advantages[:, t] = next_adv
    return advantages, (advantages + values) * mask


# ---------------------------------------------------------------- losses and the update
def masked_mean(x, mask):
    """Mean of x over the (possibly weighted) mask."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1e-8)


def policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps: float = 0.2):
    """Clipped surrogate mean_t max(−Aρ, −A clip(ρ, 1−ε, 1+ε)), ρ = π_θ/π_old; clip fraction."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask)


def value_loss(values, old_values, returns, mask, clip: float = 0.2):
    """½ mean_t max((V − R)², (V_old + clip(V − V_old, ±c) − R)²): the clipped value loss."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    squared = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(squared, mask)


def ppo_update(model, value_head, optimizer, scaler, batch: dict, cfg: PPOConfig, generator,
               autocast) -> dict:
    """Minibatch epochs of the clipped losses on one rollout batch; returns mean statistics."""
    T = batch["mask"].shape[1]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    stats = []
    for _ in range(cfg.epochs):
        order = torch.randperm(cfg.batch_size, generator=generator)
        for idx in order.split(cfg.minibatch_size):
            mb = {k: v[idx.to(v.device)] for k, v in batch.items()}
            mb_mask = mb["mask"]
            with autocast:
                logits, hidden = response_forward(model, mb["input_ids"], mb["attention_mask"], T)
                logits = logits[:, :-1].float() / cfg.temperature                  # B, T, V
                values = value_head(hidden[:, :-1].float()).squeeze(-1).float() + mb["baseline"]
            logprobs = action_logprobs(logits, mb["actions"])
            pg_loss, clipfrac = policy_loss(logprobs, mb["logprobs"], mb["advantages"], mb_mask,
                                            cfg.clip_eps)
            vf_loss = value_loss(values, mb["values"], mb["returns"], mb_mask, cfg.value_clip)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(pg_loss + cfg.vf_coef * vf_loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)  # freed now, not held through the next rollout
            entropy = torch.distributions.Categorical(logits=logits.detach()).entropy()  # B, T
            approx_kl = masked_mean(mb["logprobs"] - logprobs, mb_mask)
            row = (pg_loss, vf_loss, clipfrac, masked_mean(entropy, mb_mask), approx_kl)
            stats.append(torch.stack(row).detach())
    names = ("policy_loss", "value_loss", "clipfrac", "entropy", "approx_kl")
    return dict(zip(names, torch.stack(stats).mean(0).tolist()))


# ---------------------------------------------------------------- training loop
PPOResult = namedtuple("PPOResult", "model value_head history")  # history: one dict per update


def train(model, tokenizer, prompts, config: PPOConfig | None = None, reward_fn=None,
          is_correct=None, ref_model=None, resume: bool = False) -> PPOResult:
    """Train ``model`` in place by PPO on ``prompts``; the frozen reference is a copy of it.

    reward_fn(prompts, responses, response_token_ids) -> [B, T] or [B] (reward="custom");
    is_correct(prompt, response) -> bool: the verifier and logged accuracy. ``resume``: go on
    from ``checkpoint_dir/ppo.pt`` (pass the same base model: it is the reference again); a
    run with other settings, or a log with no checkpoint, is refused (``ppo_run``). With a
    ``checkpoint_dir``, Ctrl-C/SIGTERM finish the update, save, and raise ``RunStopped``.
    A ``ref_model`` you pass (a teacher, a half-precision copy) is frozen in place."""
    cfg = config or PPOConfig()
    if not prompts:
        raise ValueError("prompts is empty: PPO needs at least one prompt to sample responses for")
    device = resolve_device(cfg.device)
    ensure_pad_token(tokenizer)
    for m in model.to(device).modules():  # no dropout: PPO's ratio must be 1 before a step
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):  # Llama-style functional
            m.attention_dropout = 0.0
    ref_model = (ref_model or copy.deepcopy(model)).to(device).eval().requires_grad_(False)
    value_head = make_value_head(model)
    params = [*model.parameters(), *value_head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, eps=1e-5)
    dtype = resolve_dtype(cfg.dtype)
    autocast = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # fp16: scaling
    sampler = torch.Generator(device).manual_seed(cfg.seed)      # the responses
    shuffler = torch.Generator().manual_seed(cfg.seed + 1)       # prompts and minibatches
    generators = [sampler, shuffler]
    if cfg.gradient_checkpointing:  # transformers 5.2x renamed it activation checkpointing
        enable = getattr(model, "activation_checkpointing_enable", None)
        (enable or model.gradient_checkpointing_enable)()
    parts = {"model": model, "value_head": value_head, "optimizer": optimizer, "scaler": scaler}
    files = ppo_run.RunFiles(cfg, ppo_run.run_identity(cfg, ref_model, prompts))
    start, history = files.start(resume, parts, generators, device)
    prompt_tokens = [prompt_ids(tokenizer, p) for p in prompts]  # chat templates are slow: once
    updates = tqdm(range(start, cfg.steps), desc="ppo", unit="update", disable=not cfg.progress,
                   initial=start, total=cfg.steps)
    with ppo_run.stop_signals(enabled=bool(cfg.checkpoint_dir)) as stop:
        for step in updates:
            t0 = time.perf_counter()
            drawn = torch.randint(len(prompts), (cfg.prompts_per_update,), generator=shuffler)
            idx = [i for i in drawn.tolist() for _ in range(cfg.samples_per_prompt)]
            model.eval()  # the KV cache (gradient checkpointing turns it off in train mode)
            with autocast:
                ro = generate(model, value_head, tokenizer, [prompts[i] for i in idx],
                              cfg.max_new_tokens, cfg.temperature, sampler,
                              [prompt_tokens[i] for i in idx])
                scored = score_rollout(ro, ref_model, cfg, reward_fn, is_correct)
            truncated = float((~ro.ended).float().mean())
            if truncated > 0:  # one message text, so Python shows it once
                warnings.warn(f"responses that never emit eos within max_new_tokens="
                              f"{cfg.max_new_tokens} end at the horizon; their share is "
                              "logged as 'truncated'")
            rewards, kl = shaped_rewards(scored["score"], ro.logprobs, scored["ref_logprobs"],
                                         ro.mask, cfg.kl_coef, cfg.entropy_coef)
            values = ro.values + scored["baseline"]
            advantages, returns = gae(rewards, values, ro.mask, cfg.gamma, cfg.lam)
            if cfg.whiten_advantages:  # mean 0, std 1 over the batch's response tokens
                centred = advantages - masked_mean(advantages, ro.mask)
                scale = torch.rsqrt(masked_mean(centred ** 2, ro.mask) + 1e-8)
                advantages = centred * scale * ro.mask
            batch = {"input_ids": ro.input_ids, "attention_mask": ro.attention_mask,
                     "actions": ro.actions, "mask": ro.mask, "logprobs": ro.logprobs,
                     "values": values, "baseline": scored["baseline"],
                     "advantages": advantages, "returns": returns}
            model.train()
            stats = ppo_update(model, value_head, optimizer, scaler, batch, cfg, shuffler,
                               autocast)
            seconds, verdicts = time.perf_counter() - t0, scored["verdicts"]
            accuracy = float("nan") if verdicts is None else float(verdicts.mean())
            history.append({
                "step": step + 1, "reward": float(scored["score"].sum(1).mean()),
                "kl": float(kl.sum(1).mean()), "accuracy": accuracy, **stats,
                "truncated": truncated, "response_length": float(ro.mask.sum(1).float().mean()),
                "gen_seconds": ro.seconds, "seconds": seconds,
                "tokens_per_s": ro.mask.numel() / seconds})
            # Saves on schedule, after the last update, and to stop (then raises RunStopped).
            files.after_update(history, parts, generators, stop.signum)
    model.eval()
    return PPOResult(model, value_head, history)

"""A compact PPO for Hugging Face causal LMs, with the endogenous reward built in (PAPER.md §3.3, §7 Q3).

One file read top to bottom, in CleanRL's order: config → rollout → rewards → GAE →
losses → update → training loop → checkpoints → CLI. The MDP is the paper's (§1): state
= prompt ⊕ tokens so far, action = next token, horizon ``H = max_new_tokens``. The
episode ends at ``eos`` or at ``H``: both are terminal (``V = 0`` after them) for GAE
and for the endogenous reward, as in the finite-horizon MDP of §1. (Scoring a text,
``reward.EndogenousReward`` keeps ``V`` after a cut response; a PPO episode has no after.)
The per-token reward PPO maximises is

    r'_t = score_t − β (log π_θ(a_t|s_t) − log π_ref(a_t|s_t)) − c_H log π_θ(a_t|s_t)

with ``score`` the endogenous reward ``r̂`` of the frozen reference (eq. 12, dense or
summed into the last token), a verifier (1/0), both (hybrid) or your own callable;
``β = kl_coef``, ``c_H = entropy_coef``. The reference's one forward gives both
``log π_ref`` for the KL and ``r̂``. Exact §3.3 facts, tested in ``tests/test_ppo.py``:
with ``score = r̂`` of ``π̂ = π_ref``, ``c_H = α`` makes ``π̂`` optimal (zero expected
update) and ``β > 0`` (``c_H = 0``) has its optimum at ``π ∝ π̂^{1+α/β}``.
"""
from __future__ import annotations

import argparse
import copy
import csv
import inspect
import os
import time
import warnings
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from .chat import ensure_pad_token, prompt_ids
from .device import resolve_device, resolve_dtype
from .reward import endogenous_rewards

REWARDS = ("endogenous", "endogenous_sum", "verifier", "hybrid", "custom")


# ---------------------------------------------------------------- config
@dataclass
class PPOConfig:
    """One PPO run; the defaults fit a tiny zoo model on a laptop CPU."""
    steps: int = 100
    """PPO updates (one rollout batch each)."""
    prompts_per_update: int = 16
    """Prompts drawn (with replacement, seeded) for each update."""
    samples_per_prompt: int = 4
    """Responses sampled per prompt; batch size B = prompts_per_update × samples_per_prompt."""
    max_new_tokens: int = 8
    """Horizon H: a response is cut (and the episode ends) after this many tokens."""
    temperature: float = 1.0
    """Sampling temperature τ; the trained policy is π_θ = softmax(logits/τ)."""
    reward: str = "endogenous"
    """endogenous (dense r̂, eq. 12) | endogenous_sum (Σ r̂ on the last token) | verifier | hybrid | custom."""
    alpha: float = 1.0
    """Soft-Q temperature α of the endogenous reward (π̂ = softmax(f̂/α))."""
    verifier_coef: float = 1.0
    """Weight of the verifier's 1/0 in the hybrid reward (endogenous + verifier)."""
    kl_coef: float = 0.01
    """β of the per-token KL penalty to the frozen reference (0.01 as in the paper's Q3)."""
    entropy_coef: float = 0.0
    """c_H: entropy bonus paid as reward −c_H log π_θ(a|s) (MaxEnt RL, eq. 6)."""
    gamma: float = 1.0
    """Discount; 1 as in the paper's undiscounted MDP."""
    lam: float = 0.95
    """GAE λ."""
    whiten_advantages: bool = True
    """Normalise advantages to mean 0, std 1 over the batch's response tokens."""
    lr: float = 3e-4
    """AdamW learning rate (policy and value head)."""
    epochs: int = 2
    """PPO epochs over each rollout batch."""
    minibatches: int = 2
    """Minibatches per epoch (also the chunks of the reference forward, to bound memory)."""
    clip_eps: float = 0.2
    """PPO ratio clip ε."""
    value_clip: float = 0.2
    """Clip of the value update around the rollout's values."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip."""
    seed: int = 0
    """Seeds prompt choice, sampling and minibatch order."""
    device: str = "auto"
    """auto | cpu | cuda | mps."""
    dtype: str | None = None
    """Autocast dtype (bf16 | fp16; fp16 uses a gradient scaler); None = full precision."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (CUDA memory for 0.5B models)."""
    checkpoint_dir: str | None = None
    """Folder for ppo.pt (checkpoint) and log.csv (one row per update); None = no files."""
    checkpoint_every: int = 25
    """Save a checkpoint every this many updates (and after the last)."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        self.batch_size = self.prompts_per_update * self.samples_per_prompt
        if min(self.batch_size, self.max_new_tokens, self.epochs, self.minibatches) < 1:
            raise ValueError("prompts_per_update, samples_per_prompt, max_new_tokens, epochs and "
                             "minibatches must all be ≥ 1")
        if self.batch_size % self.minibatches:
            raise ValueError(f"batch size {self.batch_size} is not divisible by minibatches={self.minibatches}")
        if self.temperature <= 0 or self.alpha <= 0:
            raise ValueError("temperature and alpha must be > 0")
        self.minibatch_size = self.batch_size // self.minibatches


# ---------------------------------------------------------------- rollout
@dataclass
class Rollout:
    """B sampled responses. Prompts are left-padded so every response starts at column P."""
    prompts: list            # B prompts (each repeated samples_per_prompt times)
    responses: list          # B response texts (eos and special tokens dropped)
    input_ids: torch.Tensor  # [B, P+T] prompt ⊕ response; pad after eos
    attention_mask: torch.Tensor  # [B, P+T] 0 on the left padding only
    mask: torch.Tensor       # [B, T] bool: response tokens up to and including eos
    logprobs: torch.Tensor   # [B, T] log π_θ(a_t|s_t) when sampled
    values: torch.Tensor     # [B, T] V_φ(s_t)
    ended: torch.Tensor      # [B] bool: emitted eos before the horizon
    seconds: float = 0.0     # wall time of the generation

    @property
    def actions(self) -> torch.Tensor:  # [B, T]
        return self.input_ids[:, -self.mask.shape[1]:]


def make_value_head(model) -> torch.nn.Linear:
    """V_φ(s) = w·h(s) + b on the policy's final hidden state h(s), zero-initialised.

    A head, not a separate critic: one forward gives logits and values, which halves the
    memory and compute of a second LM (what lets a 0.5B model train on a 16 GB T4). With
    an endogenous reward the critic is ``V_ref(s) + V_φ(s)``: the reference's soft value
    (eq. 11, free from its forward) carries the large per-prompt part of the return, so
    the head only learns a small residual. Any function of the state is a valid baseline.
    """
    head = torch.nn.Linear(model.get_output_embeddings().weight.shape[1], 1)
    torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
    return head.to(model.get_output_embeddings().weight.device)


def _cache_kwarg(model) -> str:
    # transformers 5 renamed ``past_key_values`` to ``cache``; support both.
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (left padding)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def response_forward(model, input_ids, attention_mask, T: int):
    """Logits [B, T+1, V] and final hidden states [B, T+1, D] at states s_1 … s_{T+1}.

    The LM head runs on the last T+1 positions only (the prompt's states are not needed).
    """
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions(attention_mask),
                use_cache=False, output_hidden_states=True, logits_to_keep=T + 1)
    return out.logits, out.hidden_states[-1][:, -(T + 1):]


def action_logprobs(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[a]: logits [B, T, V], actions [B, T] → [B, T] in fp32."""
    logits = logits.float()
    return logits.gather(-1, actions.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)


@torch.no_grad()
def generate(model, value_head, tokenizer, prompts, max_new_tokens: int, temperature: float = 1.0,
             generator: torch.Generator | None = None, ids: list[list[int]] | None = None) -> Rollout:
    """Sample one response per prompt from π_θ = softmax(logits/τ), with a KV cache.

    Plain multinomial sampling (no top-k/top-p: PPO needs samples from π_θ itself); the
    log-probs and values of the sampled tokens come out of the same forwards, so no
    second pass is needed. After a row emits eos it gets pad tokens, masked out.
    ``ids``: the prompts' token ids if already known (``chat.prompt_ids`` otherwise).
    """
    device = model.get_output_embeddings().weight.device
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    ids = ids or [prompt_ids(tokenizer, p) for p in prompts]
    B, P = len(ids), max(len(p) for p in ids)
    prompt = torch.full((B, P), pad, dtype=torch.long)
    prompt_mask = torch.zeros((B, P), dtype=torch.long)
    for b, p in enumerate(ids):  # left padding: every prompt ends at column P-1
        prompt[b, P - len(p):], prompt_mask[b, P - len(p):] = torch.tensor(p), 1
    prompt, prompt_mask = prompt.to(device), prompt_mask.to(device)
    start, cache_kw = time.perf_counter(), _cache_kwarg(model)
    x, attention, pos, cache = prompt, prompt_mask, positions(prompt_mask), None
    done = torch.zeros(B, dtype=torch.bool, device=device)
    tokens, masks, logprobs, values = [], [], [], []
    for _ in range(max_new_tokens):
        out = model(input_ids=x, attention_mask=attention, position_ids=pos, use_cache=True,
                    output_hidden_states=True, logits_to_keep=1, **{cache_kw: cache})
        cache = out[cache_kw]
        logp = torch.log_softmax(out.logits[:, -1].float() / temperature, -1)     # B, V
        a = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)      # B
        a = a.masked_fill(done, pad)
        tokens.append(a), masks.append(~done)
        logprobs.append(logp.gather(-1, a[:, None]).squeeze(-1) * ~done)
        values.append(value_head(out.hidden_states[-1][:, -1]).squeeze(-1).float() * ~done)
        done = done | (a == eos)
        if done.all():
            break
        x, pos = a[:, None], pos[:, -1:] + 1
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], 1)
    actions, mask = torch.stack(tokens, 1), torch.stack(masks, 1)                 # B, T
    responses = [tokenizer.decode(row[m & (row != eos)].tolist(), skip_special_tokens=True)
                 for row, m in zip(actions.cpu(), mask.cpu())]
    return Rollout(list(prompts), responses, torch.cat([prompt, actions], 1),
                   torch.cat([prompt_mask, torch.ones_like(actions)], 1), mask,
                   torch.stack(logprobs, 1), torch.stack(values, 1), done,
                   time.perf_counter() - start)


# ---------------------------------------------------------------- rewards
def check_reward(score, B: int, T: int, mask: torch.Tensor) -> torch.Tensor:
    """A reward callable's output as [B, T]: [B] goes on each response's last token."""
    score = torch.as_tensor(score, dtype=torch.float32).to(mask.device)
    if score.shape == (B,):
        score = torch.zeros(B, T, device=mask.device).scatter(1, (mask.sum(1, keepdim=True) - 1), score[:, None])
    elif score.shape != (B, T):
        raise ValueError(f"reward_fn returned shape {list(score.shape)}; expected [B] = [{B}] "
                         f"(one per response) or [B, T] = [{B}, {T}] (per token)")
    bad = (~torch.isfinite(score) & mask).any(1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"reward_fn returned NaN/inf for responses {bad[:10]}")
    return torch.where(mask, score, 0.0)


@torch.no_grad()
def score_rollout(rollout: Rollout, ref_model, cfg: PPOConfig, reward_fn=None, is_correct=None) -> dict:
    """Reference log-probs and the score [B, T], from one reference forward (chunked)."""
    mask, actions = rollout.mask, rollout.actions
    B, T = mask.shape
    logits = torch.cat([response_forward(ref_model, ids, am, T)[0].float() for ids, am in
                        zip(rollout.input_ids.split(cfg.minibatch_size), rollout.attention_mask.split(cfg.minibatch_size))])
    # The episode ends at eos or at the horizon: V = 0 after every row's last token.
    lp_alpha, soft_values, r_hat = endogenous_rewards(logits, actions, cfg.alpha, torch.ones_like(rollout.ended), mask)
    ref_logprobs = (lp_alpha if cfg.alpha == cfg.temperature
                    else action_logprobs(logits[:, :-1] / cfg.temperature, actions) * mask)
    verdicts = None
    if is_correct is not None:
        verdicts = torch.tensor([float(bool(is_correct(p, r))) for p, r in zip(rollout.prompts, rollout.responses)])
    if cfg.reward in ("verifier", "hybrid") and verdicts is None:
        raise ValueError(f"reward={cfg.reward!r} needs is_correct(prompt, response) -> bool")
    score = torch.zeros(B, T, device=mask.device)
    if cfg.reward in ("endogenous", "hybrid"):
        score = score + r_hat
    if cfg.reward == "endogenous_sum":
        score = check_reward(r_hat.sum(1), B, T, mask)
    if cfg.reward in ("verifier", "hybrid"):
        score = score + cfg.verifier_coef * check_reward(verdicts, B, T, mask)
    if cfg.reward == "custom":
        if reward_fn is None:
            raise ValueError("reward='custom' needs reward_fn(prompts, responses, response_token_ids)")
        token_ids = [row[m].tolist() for row, m in zip(actions.cpu(), mask.cpu())]
        score = check_reward(reward_fn(rollout.prompts, rollout.responses, token_ids), B, T, mask)
    baseline = soft_values[:, :-1] * mask if cfg.reward in ("endogenous", "endogenous_sum", "hybrid") \
        else torch.zeros_like(score)
    return {"score": score, "ref_logprobs": ref_logprobs, "verdicts": verdicts, "baseline": baseline}


def shaped_rewards(score, logprobs, ref_logprobs, mask, kl_coef: float, entropy_coef: float = 0.0):
    """r'_t = score_t − β·kl_t − c_H·log π_θ(a_t|s_t), all [B, T]; returns (r', kl).

    kl_t = log π_θ − log π_ref at the sampled token: its expectation under π_θ is the
    per-state KL(π_θ ‖ π_ref). The entropy bonus is paid as reward (MaxEnt RL, eq. 6), not
    as a loss term: a loss-level bonus ignores that today's action changes tomorrow's
    entropy, and its fixed point would not be π̂ (PAPER.md §6).
    """
    kl = (logprobs - ref_logprobs) * mask
    return (score - kl_coef * kl - entropy_coef * logprobs) * mask, kl


# ---------------------------------------------------------------- GAE
def gae(rewards, values, mask, gamma: float = 1.0, lam: float = 0.95):
    """Generalised advantage estimation; rewards, values, mask: [B, T] → (advantages, returns).

    δ_t = r_t + γ V(s_{t+1}) − V(s_t),  A_t = δ_t + γλ A_{t+1}, with V = 0 and A = 0
    after each row's last valid token (the episode ends there). ``mask`` must be a prefix.
    """
    mask = mask.float()
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_adv = next_value = torch.zeros(B, device=rewards.device)
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        next_value = values[:, t] * mask[:, t]
        advantages[:, t] = next_adv
    return advantages, (advantages + values) * mask


# ---------------------------------------------------------------- losses
def masked_mean(x, mask):
    """Mean of x over the (possibly weighted) mask."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1e-8)


def masked_whiten(x, mask):
    """(x − mean) / std over the masked entries."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps: float = 0.2):
    """PPO's clipped surrogate: mean_t max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)), ρ = π_θ/π_old; + clip fraction."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    return masked_mean(torch.maximum(unclipped, clipped), mask), masked_mean((clipped > unclipped).float(), mask)


def value_loss(values, old_values, returns, mask, clip: float = 0.2):
    """½ mean_t max((V − R)², (V_old + clip(V − V_old, ±c) − R)²): the clipped value loss."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


# ---------------------------------------------------------------- update
def ppo_update(model, value_head, optimizer, scaler, batch: dict, cfg: PPOConfig, generator) -> dict:
    """Minibatch epochs of the clipped losses on one rollout batch; returns mean statistics."""
    T, autocast = batch["mask"].shape[1], _autocast(cfg, batch["mask"].device)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    stats = {"policy_loss": [], "value_loss": [], "clipfrac": [], "entropy": [], "approx_kl": []}
    for _ in range(cfg.epochs):
        for idx in torch.randperm(cfg.batch_size, generator=generator).split(cfg.minibatch_size):
            mb = {k: v[idx.to(v.device)] for k, v in batch.items()}
            with autocast:
                logits, hidden = response_forward(model, mb["input_ids"], mb["attention_mask"], T)
                logits = logits[:, :-1].float() / cfg.temperature                     # B, T, V
                values = value_head(hidden[:, :-1]).squeeze(-1).float() + mb["baseline"]  # B, T
            logprobs = action_logprobs(logits, mb["actions"])
            pg_loss, clipfrac = policy_loss(logprobs, mb["logprobs"], mb["advantages"], mb["mask"], cfg.clip_eps)
            vf_loss = value_loss(values, mb["values"], mb["returns"], mb["mask"], cfg.value_clip)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(pg_loss + cfg.vf_coef * vf_loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():
                p = torch.softmax(logits, -1)
                entropy = torch.logsumexp(logits, -1) - (p * logits).sum(-1)
                for k, v in zip(stats, (pg_loss, vf_loss, clipfrac, masked_mean(entropy, mb["mask"]),
                                        masked_mean(mb["logprobs"] - logprobs, mb["mask"]))):
                    stats[k].append(float(v))
    return {k: sum(v) / len(v) for k, v in stats.items()}


def _autocast(cfg: PPOConfig, device: torch.device):
    dtype = resolve_dtype(cfg.dtype)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def disable_dropout(model) -> None:
    """PPO's ratio must be exactly 1 before the first step: no dropout noise between passes."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0


# ---------------------------------------------------------------- training loop
@dataclass
class PPOResult:
    model: object
    value_head: torch.nn.Linear
    history: list  # one dict per update


def train(model, tokenizer, prompts, config: PPOConfig | None = None, reward_fn=None, is_correct=None,
          ref_model=None, resume: bool = False) -> PPOResult:
    """Train ``model`` in place by PPO on ``prompts``; the frozen reference is a copy of it.

    reward_fn(prompts, responses, response_token_ids) -> [B, T] or [B] (reward="custom");
    is_correct(prompt, response) -> bool: the verifier (and the logged accuracy).
    With ``resume`` and a checkpoint in ``checkpoint_dir``, training continues from it
    (pass the same base model: it becomes the reference again).
    """
    cfg = config or PPOConfig()
    if not prompts:
        raise ValueError("prompts is empty: PPO needs at least one prompt to sample responses for")
    device = resolve_device(cfg.device)
    ensure_pad_token(tokenizer)
    model.to(device)
    disable_dropout(model)
    ref_model = (ref_model or copy.deepcopy(model)).to(device).eval().requires_grad_(False)
    value_head = make_value_head(model)
    params = list(model.parameters()) + list(value_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, eps=1e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=resolve_dtype(cfg.dtype) == torch.float16)
    sample_gen = torch.Generator(device).manual_seed(cfg.seed)
    cpu_gen = torch.Generator().manual_seed(cfg.seed + 1)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    history, start = [], 0
    path = os.path.join(cfg.checkpoint_dir, "ppo.pt") if cfg.checkpoint_dir else None
    if resume and path and os.path.exists(path):
        start, history = load_checkpoint(path, model, value_head, optimizer, scaler, [sample_gen, cpu_gen])
    autocast, warned, prompt_cache = _autocast(cfg, device), False, {}
    bar = tqdm(range(start, cfg.steps), desc="ppo", unit="update", disable=not cfg.progress,
               initial=start, total=cfg.steps)
    for step in bar:
        t0 = time.perf_counter()
        idx = torch.randint(len(prompts), (cfg.prompts_per_update,), generator=cpu_gen).tolist()
        idx = [i for i in idx for _ in range(cfg.samples_per_prompt)]
        for i in set(idx) - set(prompt_cache):  # the chat template is slow: render each prompt once
            prompt_cache[i] = prompt_ids(tokenizer, prompts[i])
        model.eval()  # generation uses the KV cache (gradient checkpointing turns it off in train mode)
        with autocast:
            ro = generate(model, value_head, tokenizer, [prompts[i] for i in idx], cfg.max_new_tokens,
                          cfg.temperature, sample_gen, [prompt_cache[i] for i in idx])
            scored = score_rollout(ro, ref_model, cfg, reward_fn, is_correct)
        truncated = float((~ro.ended).float().mean())
        if truncated > 0 and not warned:
            warnings.warn(f"{truncated:.0%} of responses never emitted eos within max_new_tokens="
                          f"{cfg.max_new_tokens}: they end at the horizon (counted in 'truncated')")
            warned = True
        rewards, kl = shaped_rewards(scored["score"], ro.logprobs, scored["ref_logprobs"], ro.mask,
                                     cfg.kl_coef, cfg.entropy_coef)
        values = ro.values + scored["baseline"]
        advantages, returns = gae(rewards, values, ro.mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, ro.mask)
        batch = {"input_ids": ro.input_ids, "attention_mask": ro.attention_mask, "actions": ro.actions,
                 "mask": ro.mask, "logprobs": ro.logprobs, "values": values, "baseline": scored["baseline"],
                 "advantages": advantages, "returns": returns}
        model.train()
        stats = ppo_update(model, value_head, optimizer, scaler, batch, cfg, cpu_gen)
        seconds = time.perf_counter() - t0
        verdicts = scored["verdicts"]
        record = {"step": step + 1, "reward": float(scored["score"].sum(1).mean()),
                  "kl": float(kl.sum(1).mean()), "accuracy": float(verdicts.mean()) if verdicts is not None else float("nan"),
                  **stats, "response_length": float(ro.mask.sum(1).float().mean()), "truncated": truncated,
                  "gen_seconds": ro.seconds, "seconds": seconds, "tokens_per_s": ro.mask.numel() / seconds}
        history.append(record)
        bar.set_postfix(reward=f"{record['reward']:.3f}", kl=f"{record['kl']:.3f}", acc=f"{record['accuracy']:.2f}")
        if cfg.checkpoint_dir:
            write_csv(os.path.join(cfg.checkpoint_dir, "log.csv"), history)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                save_checkpoint(path, model, value_head, optimizer, scaler, step + 1, history, [sample_gen, cpu_gen])
    model.eval()
    return PPOResult(model, value_head, history)


# ---------------------------------------------------------------- checkpoints and logs
def save_checkpoint(path, model, value_head, optimizer, scaler, step, history, generators) -> None:
    """Everything a killed run needs to continue exactly: weights, optimizer, step, log, RNG."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    state = {"model": model.state_dict(), "value_head": value_head.state_dict(),
             "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step,
             "history": history, "rng": [g.get_state() for g in generators]}
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)  # atomic: a kill during the save keeps the previous checkpoint


def load_checkpoint(path, model, value_head, optimizer, scaler, generators):
    """Restore a checkpoint in place; returns (step, history)."""
    state = torch.load(path, map_location=model.get_output_embeddings().weight.device)
    model.load_state_dict(state["model"])
    value_head.load_state_dict(state["value_head"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    for g, s in zip(generators, state["rng"]):
        g.set_state(s.cpu())
    return state["step"], state["history"]


def write_csv(path, history) -> None:
    """The whole log, rewritten each update (a resumed run keeps its earlier rows)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


# ---------------------------------------------------------------- CLI: endorm-mini ppo
def plot_history(history, path) -> None:
    """Reward, sampled accuracy and KL per update, one panel each, saved to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, key, label in zip(axes, ("reward", "accuracy", "kl"),
                              ("reward per response", "sampled accuracy", "KL(π_θ ‖ π_ref) per response")):
        ax.plot(steps, [h[key] for h in history])
        ax.set(xlabel="PPO update", ylabel=label)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _ppo_command(args: argparse.Namespace) -> int:
    from .tasks import arith_accuracy, arith_problems, is_correct
    from .zoo import load

    model, tokenizer = load(args.model, device=args.device)
    cfg = PPOConfig(steps=args.steps, reward=args.reward, kl_coef=args.kl_coef, lr=args.lr,
                    seed=args.seed, device=args.device, dtype=args.dtype, checkpoint_dir=args.out)
    prompts = arith_problems()
    before = arith_accuracy(model, tokenizer, prompts, temperature=1.0, samples=args.eval_samples, device=args.device)
    t0 = time.perf_counter()
    result = train(model, tokenizer, prompts, cfg, is_correct=is_correct, resume=args.resume)
    seconds = time.perf_counter() - t0
    after = arith_accuracy(model, tokenizer, prompts, temperature=1.0, samples=args.eval_samples, device=args.device)
    plot_history(result.history, os.path.join(args.out, "ppo.png"))
    print(f"sampled accuracy (T = 1, {args.eval_samples} per problem): {before:.3f} → {after:.3f} "
          f"in {len(result.history)} updates, {seconds:.1f} s this run")
    print(f"log {os.path.join(args.out, 'log.csv')}, plot {os.path.join(args.out, 'ppo.png')}, "
          f"checkpoint {os.path.join(args.out, 'ppo.pt')}")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("ppo", help="PPO on noisy arithmetic with the endogenous reward",
                       description="Train a zoo model by PPO on the arithmetic problems; writes "
                                   "log.csv, ppo.png and a resumable checkpoint to --out.")
    p.add_argument("--model", default="tiny-arith", help="zoo name, local path or hub name")
    p.add_argument("--reward", default="endogenous", choices=REWARDS[:-1])
    p.add_argument("--steps", type=int, default=PPOConfig.steps)
    p.add_argument("--out", default="runs/ppo", help="folder for log.csv, ppo.png, ppo.pt")
    p.add_argument("--resume", action="store_true", help="continue from --out/ppo.pt")
    p.add_argument("--kl-coef", type=float, default=PPOConfig.kl_coef)
    p.add_argument("--lr", type=float, default=PPOConfig.lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-samples", type=int, default=2, help="samples per problem for the accuracy")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, help="autocast dtype on CUDA: bf16 or fp16")
    p.set_defaults(func=_ppo_command)

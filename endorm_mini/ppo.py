"""A compact PPO for Hugging Face causal LMs, with the endogenous reward built in (PAPER.md §3.3, §7 Q3).

In CleanRL's order: config, rollout, rewards, GAE, losses and update, loop, CLI. The MDP is §1's,
horizon H = max_new_tokens; an episode ends at eos or at H (V = 0 after both). PPO maximises
``r'_t = score_t − β (log π_θ − log π_ref)(a_t|s_t) − c_H log π_θ(a_t|s_t)``, the score being the
frozen reference's endogenous reward r̂ (eq. 12; its one forward also gives log π_ref), a verifier,
both, or a callable. Exact §3.3 facts, tested: with score = r̂ of π̂ = π_ref, c_H = α leaves π̂
optimal (zero expected update) and β > 0 moves the policy to π ∝ π̂^{1+α/β}."""
from __future__ import annotations

import argparse
import copy
import csv
import inspect
import os
import time
import warnings
from collections import namedtuple
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .chat import ensure_pad_token, left_pad, prompt_ids
from .device import resolve_device, resolve_dtype
from .reward import endogenous_rewards

REWARDS = ("endogenous", "endogenous_sum", "verifier", "hybrid", "custom")


# ---------------------------------------------------------------- config
@dataclass
class PPOConfig:
    """One PPO run; the defaults fit a tiny zoo model on a laptop CPU (tiny-arith: 0.6 → ~0.95 in 100 updates)."""
    steps: int = 150                      #: PPO updates (one rollout batch each)
    prompts_per_update: int = 32          #: prompts drawn (with replacement, seeded) per update
    samples_per_prompt: int = 4           #: responses per prompt; batch B = prompts × samples
    max_new_tokens: int = 8               #: horizon H: the episode ends after this many tokens
    temperature: float = 1.0              #: sampling temperature τ; the policy is softmax(logits/τ)
    reward: str = "endogenous"            #: endogenous | endogenous_sum | verifier | hybrid | custom
    alpha: float = 1.0                    #: α of the endogenous reward (π̂ = softmax(f̂/α), eq. 10)
    verifier_coef: float = 1.0            #: weight of the verifier's 1/0 in the hybrid reward
    kl_coef: float = 0.01                 #: β, per-token KL penalty to the reference (paper: 0.01)
    entropy_coef: float = 0.0             #: c_H, entropy bonus paid as reward −c_H log π (eq. 6)
    gamma: float = 1.0                    #: discount (1: the paper's undiscounted MDP)
    lam: float = 0.95                     #: GAE λ
    whiten_advantages: bool = True        #: advantages to mean 0, std 1 over the batch's tokens
    lr: float = 5e-4                      #: AdamW learning rate (tiny models; ~1e-6 for 0.5B)
    epochs: int = 2                       #: PPO epochs over each rollout batch
    minibatches: int = 2                  #: minibatches per epoch (and chunks of the ref forward)
    clip_eps: float = 0.2                 #: PPO ratio clip ε
    value_clip: float = 0.2               #: clip of the value update around the rollout's values
    vf_coef: float = 0.1                  #: weight of the value loss
    max_grad_norm: float = 1.0            #: gradient-norm clip
    seed: int = 0                         #: seeds prompt choice, sampling and minibatch order
    device: str = "auto"                  #: auto | cpu | cuda | mps
    dtype: str | None = None              #: autocast dtype: bf16 | fp16 (with a grad scaler) | None
    gradient_checkpointing: bool = False  #: recompute activations in backward (0.5B on a T4)
    checkpoint_dir: str | None = None     #: folder for ppo.pt and log.csv; None = no files
    checkpoint_every: int = 25            #: save every this many updates (and after the last)
    progress: bool = True                 #: show a tqdm progress bar

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        self.batch_size = self.prompts_per_update * self.samples_per_prompt
        sizes = (self.batch_size, self.max_new_tokens, self.epochs, self.minibatches)
        if min(sizes) < 1 or self.batch_size % self.minibatches or min(self.temperature, self.alpha) <= 0:
            raise ValueError(f"need sizes ≥ 1 (batch, max_new_tokens, epochs, minibatches = {sizes}), a batch "
                             "divisible by minibatches, and temperature, alpha > 0")
        self.minibatch_size = self.batch_size // self.minibatches


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
    """V_φ(s) = w·h(s) + b on the policy's final hidden state, zero-initialised: one forward gives
    logits and values (a separate critic LM would double memory: a 0.5B model must fit a T4). With an
    endogenous reward the critic is ``V_ref(s) + V_φ(s)``: the reference's soft value (eq. 11, free
    from its forward) carries the per-prompt part of the return; the head learns a small residual.
    """
    head = torch.nn.Linear(model.get_output_embeddings().weight.shape[1], 1)
    torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
    return head.to(model.get_output_embeddings().weight.device)


def response_forward(model, input_ids, attention_mask, T: int):
    """Logits [B, T+1, V] and final hidden states [B, T+1, D] at states s_1 … s_{T+1} (head on those only)."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # left padding: 0 at the first real token
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                use_cache=False, output_hidden_states=True, logits_to_keep=T + 1)
    return out.logits, out.hidden_states[-1][:, -(T + 1):]


def action_logprobs(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[a] in fp32: logits [B, T, V], actions [B, T] → [B, T]."""
    logits = logits.float()
    return logits.gather(-1, actions.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)


@torch.no_grad()
def generate(model, value_head, tokenizer, prompts, max_new_tokens: int, temperature: float = 1.0,
             generator: torch.Generator | None = None, ids: list[list[int]] | None = None) -> Rollout:
    """Sample a response per prompt from π_θ = softmax(logits/τ) with a KV cache; pad after eos.

    Plain multinomial sampling (no top-k/top-p: PPO needs samples from π_θ itself); log-probs and
    values come from the same forwards. ``ids``: the prompts' ids if already rendered."""
    device, pad, eos = model.get_output_embeddings().weight.device, tokenizer.pad_token_id, tokenizer.eos_token_id
    ids = ids or [prompt_ids(tokenizer, p) for p in prompts]
    B = len(ids)
    prompt, prompt_mask = left_pad(ids, pad, device)                              # B, P
    # transformers 5 renamed past_key_values to cache.
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    start, x, attention, cache = time.perf_counter(), prompt, prompt_mask, None
    pos = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    done, tokens, masks, logprobs, values = torch.zeros(B, dtype=torch.bool, device=device), [], [], [], []
    for _ in range(max_new_tokens):
        out = model(input_ids=x, attention_mask=attention, position_ids=pos, use_cache=True,
                    output_hidden_states=True, logits_to_keep=1, **{cache_kw: cache})
        cache = out[cache_kw]
        logp = torch.log_softmax(out.logits[:, -1].float() / temperature, -1)     # B, V
        a = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1).masked_fill(done, pad)  # B
        tokens.append(a), masks.append(~done)
        logprobs.append(logp.gather(-1, a[:, None]).squeeze(-1) * ~done)
        values.append(value_head(out.hidden_states[-1][:, -1]).squeeze(-1).float() * ~done)
        done = done | (a == eos)
        if done.all():
            break
        x, pos = a[:, None], pos[:, -1:] + 1
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], 1)
    actions, mask = torch.stack(tokens, 1), torch.stack(masks, 1)                 # B, T
    responses = tokenizer.batch_decode([row[m & (row != eos)].tolist() for row, m in zip(actions.cpu(), mask.cpu())],
                                       skip_special_tokens=True)
    return Rollout(list(prompts), responses, torch.cat([prompt, actions], 1),
                   torch.cat([prompt_mask, torch.ones_like(actions)], 1), mask, torch.stack(logprobs, 1),
                   torch.stack(values, 1), done, time.perf_counter() - start)


# ---------------------------------------------------------------- rewards
def check_reward(score, B: int, T: int, mask: torch.Tensor) -> torch.Tensor:
    """A reward as [B, T]: [B] goes on each response's last token; NaN/inf or a wrong shape is refused."""
    score = torch.as_tensor(score, dtype=torch.float32).to(mask.device)
    if score.shape == (B,):
        score = torch.zeros(B, T, device=mask.device).scatter(1, mask.sum(1, keepdim=True) - 1, score[:, None])
    elif score.shape != (B, T):
        raise ValueError(f"reward_fn returned shape {list(score.shape)}; expected [B] = [{B}] or [B, T] = [{B}, {T}]")
    if bad := (~torch.isfinite(score) & mask).any(1).nonzero().flatten().tolist():
        raise ValueError(f"reward_fn returned NaN/inf for responses {bad[:10]}")
    return torch.where(mask, score, 0.0)


@torch.no_grad()
def score_rollout(rollout: Rollout, ref_model, cfg: PPOConfig, reward_fn=None, is_correct=None) -> dict:
    """Score [B, T], reference log-probs and the critic's baseline, from one reference forward."""
    mask, actions, (B, T) = rollout.mask, rollout.actions, rollout.mask.shape
    parts = []
    for rows in torch.arange(B, device=mask.device).split(cfg.minibatch_size):  # never all B × (T+1) × V logits
        logits = response_forward(ref_model, rollout.input_ids[rows], rollout.attention_mask[rows], T)[0].float()
        # The episode ends at eos or at the horizon: V = 0 after every row's last token.
        lp, values, r = endogenous_rewards(logits, actions[rows], cfg.alpha, torch.ones_like(rows, dtype=torch.bool),
                                           mask[rows])
        ref_lp = lp if cfg.alpha == cfg.temperature else \
            action_logprobs(logits[:, :-1] / cfg.temperature, actions[rows]) * mask[rows]
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
            raise ValueError("reward='custom' needs reward_fn(prompts, responses, response_token_ids)")
        token_ids = [row[m].tolist() for row, m in zip(actions.cpu(), mask.cpu())]
        score = check_reward(reward_fn(rollout.prompts, rollout.responses, token_ids), B, T, mask)
    endogenous = cfg.reward in ("endogenous", "endogenous_sum", "hybrid")
    baseline = soft_values[:, :-1] * mask if endogenous else torch.zeros_like(score)
    return {"score": score, "ref_logprobs": ref_logprobs, "verdicts": verdicts, "baseline": baseline}


def shaped_rewards(score, logprobs, ref_logprobs, mask, kl_coef: float, entropy_coef: float = 0.0):
    """r'_t = score_t − β·kl_t − c_H·log π_θ(a_t|s_t), all [B, T]; returns (r', kl).

    kl_t = log π_θ − log π_ref at the sampled token (E_π = KL(π_θ ‖ π_ref) per state). The
    entropy bonus is paid as reward (MaxEnt RL, eq. 6), not as a loss term: that would ignore
    today's action's effect on tomorrow's entropy, and its fixed point is not π̂ (PAPER.md §6)."""
    kl = (logprobs - ref_logprobs) * mask
    return (score - kl_coef * kl - entropy_coef * logprobs) * mask, kl


# ---------------------------------------------------------------- GAE
def gae(rewards, values, mask, gamma: float = 1.0, lam: float = 0.95):
    """GAE on [B, T] tensors: δ_t = r_t + γ V(s_{t+1}) − V(s_t), A_t = δ_t + γλ A_{t+1} → (A, returns).

    V = 0 and A = 0 after each row's last valid token (the episode ends there); ``mask`` is a prefix."""
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
    """Clipped surrogate mean_t max(−Aρ, −A clip(ρ, 1−ε, 1+ε)), ρ = π_θ/π_old; and the clip fraction."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    return masked_mean(torch.maximum(unclipped, clipped), mask), masked_mean((clipped > unclipped).float(), mask)


def value_loss(values, old_values, returns, mask, clip: float = 0.2):
    """½ mean_t max((V − R)², (V_old + clip(V − V_old, ±c) − R)²): the clipped value loss."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def ppo_update(model, value_head, optimizer, scaler, batch: dict, cfg: PPOConfig, generator, autocast) -> dict:
    """Minibatch epochs of the clipped losses on one rollout batch; returns mean statistics."""
    T, params = batch["mask"].shape[1], [p for group in optimizer.param_groups for p in group["params"]]
    stats = []
    for _ in range(cfg.epochs):
        for idx in torch.randperm(cfg.batch_size, generator=generator).split(cfg.minibatch_size):
            mb = {k: v[idx.to(v.device)] for k, v in batch.items()}
            with autocast:
                logits, hidden = response_forward(model, mb["input_ids"], mb["attention_mask"], T)
                logits = logits[:, :-1].float() / cfg.temperature                         # B, T, V
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
            entropy = torch.distributions.Categorical(logits=logits.detach()).entropy()  # B, T
            stats.append(torch.stack((pg_loss, vf_loss, clipfrac, masked_mean(entropy, mb["mask"]),
                                      masked_mean(mb["logprobs"] - logprobs, mb["mask"]))).detach())
    names = ("policy_loss", "value_loss", "clipfrac", "entropy", "approx_kl")
    return dict(zip(names, torch.stack(stats).mean(0).tolist()))


# ---------------------------------------------------------------- training loop
PPOResult = namedtuple("PPOResult", "model value_head history")  # history: one dict of statistics per update


def train(model, tokenizer, prompts, config: PPOConfig | None = None, reward_fn=None, is_correct=None,
          ref_model=None, resume: bool = False) -> PPOResult:
    """Train ``model`` in place by PPO on ``prompts``; the frozen reference is a copy of it.

    reward_fn(prompts, responses, response_token_ids) -> [B, T] or [B] (reward="custom");
    is_correct(prompt, response) -> bool: the verifier and logged accuracy. ``resume``: go on
    from ``checkpoint_dir/ppo.pt`` (pass the same base model: it is the reference again).
    A ``ref_model`` you pass (a teacher, a half-precision copy) is frozen in place."""
    cfg = config or PPOConfig()
    if not prompts:
        raise ValueError("prompts is empty: PPO needs at least one prompt to sample responses for")
    device = resolve_device(cfg.device)
    ensure_pad_token(tokenizer)
    for m in model.to(device).modules():  # no dropout: PPO's ratio must be exactly 1 before the first step
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):  # Llama-style functional dropout
            m.attention_dropout = 0.0
    ref_model = (ref_model or copy.deepcopy(model)).to(device).eval().requires_grad_(False)
    value_head = make_value_head(model)
    optimizer = torch.optim.AdamW([*model.parameters(), *value_head.parameters()], lr=cfg.lr, eps=1e-5)
    dtype = resolve_dtype(cfg.dtype)
    autocast = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # fp16 needs loss scaling
    generators = [torch.Generator(device).manual_seed(cfg.seed), torch.Generator().manual_seed(cfg.seed + 1)]
    if cfg.gradient_checkpointing:  # transformers 5.2x renamed it activation checkpointing
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    history, start, parts = [], 0, {"model": model, "value_head": value_head, "optimizer": optimizer, "scaler": scaler}
    path = os.path.join(cfg.checkpoint_dir, "ppo.pt") if cfg.checkpoint_dir else None
    if resume and path and os.path.exists(path):  # a killed run goes on exactly: weights, optimizer, log, RNG
        state = torch.load(path, map_location=device)
        for name, part in parts.items():
            part.load_state_dict(state[name])
        for g, rng in zip(generators, state["rng"]):
            g.set_state(rng.cpu())
        start, history = state["step"], state["history"]
    prompt_tokens = [prompt_ids(tokenizer, p) for p in prompts]  # the chat template is slow: render once
    for step in tqdm(range(start, cfg.steps), desc="ppo", unit="update", disable=not cfg.progress,
                     initial=start, total=cfg.steps):
        t0 = time.perf_counter()
        idx = torch.randint(len(prompts), (cfg.prompts_per_update,), generator=generators[1]).tolist()
        idx = [i for i in idx for _ in range(cfg.samples_per_prompt)]
        model.eval()  # the KV cache (gradient checkpointing turns it off in train mode)
        with autocast:
            ro = generate(model, value_head, tokenizer, [prompts[i] for i in idx], cfg.max_new_tokens,
                          cfg.temperature, generators[0], [prompt_tokens[i] for i in idx])
            scored = score_rollout(ro, ref_model, cfg, reward_fn, is_correct)
        truncated = float((~ro.ended).float().mean())
        if truncated > 0:  # one message text, so Python shows it once
            warnings.warn(f"responses that never emit eos within max_new_tokens={cfg.max_new_tokens} end at the "
                          "horizon; their share is logged as 'truncated'")
        rewards, kl = shaped_rewards(scored["score"], ro.logprobs, scored["ref_logprobs"], ro.mask,
                                     cfg.kl_coef, cfg.entropy_coef)
        values = ro.values + scored["baseline"]
        advantages, returns = gae(rewards, values, ro.mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:  # mean 0, std 1 over the batch's response tokens
            centred = advantages - masked_mean(advantages, ro.mask)
            advantages = centred * torch.rsqrt(masked_mean(centred ** 2, ro.mask) + 1e-8) * ro.mask
        batch = {"input_ids": ro.input_ids, "attention_mask": ro.attention_mask, "actions": ro.actions,
                 "mask": ro.mask, "logprobs": ro.logprobs, "values": values, "baseline": scored["baseline"],
                 "advantages": advantages, "returns": returns}
        model.train()
        stats = ppo_update(model, value_head, optimizer, scaler, batch, cfg, generators[1], autocast)
        seconds, verdicts = time.perf_counter() - t0, scored["verdicts"]
        history.append({"step": step + 1, "reward": float(scored["score"].sum(1).mean()), "kl": float(kl.sum(1).mean()),
                        "accuracy": float("nan") if verdicts is None else float(verdicts.mean()), **stats,
                        "truncated": truncated, "response_length": float(ro.mask.sum(1).float().mean()),
                        "gen_seconds": ro.seconds, "seconds": seconds, "tokens_per_s": ro.mask.numel() / seconds})
        if cfg.checkpoint_dir:
            os.makedirs(cfg.checkpoint_dir, exist_ok=True)
            with open(os.path.join(cfg.checkpoint_dir, "log.csv"), "w", newline="") as f:  # the whole log
                writer = csv.DictWriter(f, fieldnames=list(history[0]))
                writer.writeheader()
                writer.writerows(history)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                state = {name: part.state_dict() for name, part in parts.items()}
                torch.save({**state, "step": step + 1, "history": history,
                            "rng": [g.get_state() for g in generators]}, path + ".tmp")
                os.replace(path + ".tmp", path)  # atomic: a kill during the save keeps the last checkpoint
    model.eval()
    return PPOResult(model, value_head, history)


# ---------------------------------------------------------------- CLI: endorm-mini ppo
def _ppo_command(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt

    from .tasks import arith_accuracy, arith_problems, is_correct
    from .zoo import load

    model, tokenizer = load(args.model, device=args.device)
    cfg = PPOConfig(steps=args.steps, reward=args.reward, kl_coef=args.kl_coef, lr=args.lr, seed=args.seed,
                    device=args.device, dtype=args.dtype, checkpoint_dir=args.out)
    prompts, n = arith_problems(), args.eval_samples
    before, t0 = arith_accuracy(model, tokenizer, prompts, 1.0, n, device=args.device), time.perf_counter()
    history = train(model, tokenizer, prompts, cfg, is_correct=is_correct, resume=args.resume).history
    seconds, after = time.perf_counter() - t0, arith_accuracy(model, tokenizer, prompts, 1.0, n, device=args.device)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    labels = ("reward per response", "sampled accuracy (rollouts)", "KL(π_θ ‖ π_ref) per response")
    for ax, key, label in zip(axes, ("reward", "accuracy", "kl"), labels):
        ax.plot([h["step"] for h in history], [h[key] for h in history])
        ax.set(xlabel="PPO update", ylabel=label)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "ppo.png"), dpi=100)
    print(f"sampled accuracy (T = 1, {n} per problem): base {before:.3f} → {after:.3f} after {len(history)} updates "
          f"({seconds:.1f} s in this run); wrote log.csv, ppo.png, ppo.pt to {args.out}")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("ppo", help="PPO on noisy arithmetic with the endogenous reward", description="Train a "
                       "model by PPO on the arithmetic problems; write log.csv, ppo.png, ppo.pt (resumable) to --out.")
    p.add_argument("--model", default="tiny-arith", help="zoo name, local path or hub name")
    p.add_argument("--reward", default="endogenous", choices=REWARDS[:-1])
    p.add_argument("--steps", type=int, default=PPOConfig.steps)
    p.add_argument("--out", default="runs/ppo", help="folder for log.csv, ppo.png, ppo.pt")
    p.add_argument("--resume", action="store_true", help="continue from --out/ppo.pt")
    for flag, default in (("--kl-coef", PPOConfig.kl_coef), ("--lr", PPOConfig.lr), ("--seed", 0)):
        p.add_argument(flag, type=type(default), default=default)
    p.add_argument("--eval-samples", type=int, default=2, help="samples per problem for the accuracy")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", help="CUDA autocast dtype: bf16 or fp16")
    p.set_defaults(func=_ppo_command)

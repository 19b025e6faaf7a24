"""The endogenous reward of any Hugging Face causal LM (docs/paper.md §5, eq. 9–12).

A trained LM is ``π̂(·|s) = softmax(f̂(s,·)/α)`` (eq. 10): its logits ``f̂`` are a soft-Q
function. With the soft value ``V(s) = α logsumexp(f̂(s,·)/α)`` (unnumbered in the paper) the reward
it implies is (eq. 11 and eq. 12)

    r̂(s_h, a_h) = f̂(s_h, a_h) − V(s_{h+1}) = α log π̂(a_h|s_h) + V(s_h) − V(s_{h+1}).

``π̂`` is the model's own sampling policy only when ``α = 1``; another ``α`` is a
temperature. Per-token rewards are defined up to potential shaping (the logits are only
defined up to a per-state constant): only sums over complete responses mean something.

The contract (README, "The endogenous reward's contract"): prompt tokens are conditioning only; the response is scored
with its ``eos`` (end-of-turn) token included, and the state after ``eos`` is terminal
with ``V = 0``, so ``total = α Σ log π̂ + V(s_1)`` (telescoping). A response cut before
``eos`` keeps the value of the state it stops in: ``total = α Σ log π̂ + V(s_1) − V(s_{T+1})``.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .alpha_range import warn_alpha
from .chat import as_messages, context_length, ensure_pad_token, prompt_ids, response_ids
from .device import resolve_device, resolve_dtype


# ---------------------------------------------------------------- the math (tensors only)
def soft_value(logits: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """``V(s) = α logsumexp(f(s,·)/α)`` over the last (vocabulary) dimension: the soft value,
    unnumbered in the paper (eq. 11 and eq. 12 subtract it)."""
    return alpha * torch.logsumexp(logits / alpha, dim=-1)


def eq7_from_next_token_loss(loss, num_tokens: int, alpha: float = 1.0) -> torch.Tensor:
    """Eq. 7's objective at ``Q = f̂`` from eq. 2's next-token loss (Proposition 1's link).

    ``loss`` is the usual next-token loss: the mean cross-entropy of ``π̂ = softmax(f̂/α)``
    (eq. 10) over ``num_tokens`` demonstrated tokens. Since
    ``f̂(s,a) − α logsumexp(f̂(s,·)/α) = α log π̂(a|s)``, eq. 7's objective is ``α`` times
    eq. 2's log-likelihood, ``Σ log π̂ = −num_tokens · loss``: the two are the same
    objective up to the constant factor ``−α · num_tokens`` (and the same maximiser).
    """
    return -alpha * num_tokens * torch.as_tensor(loss, dtype=torch.float64)


def _soft_value_inplace(logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """``soft_value`` that overwrites ``logits`` [n, V]: no full-size temporaries (hot path)."""
    if alpha != 1.0:
        logits.div_(alpha)
    m = logits.amax(-1, keepdim=True)                            # [n, 1]
    return logits.sub_(m).exp_().sum(-1).log_().add_(m[:, 0]).mul_(alpha)


def endogenous_rewards(logits: torch.Tensor, actions: torch.Tensor, alpha: float = 1.0,
                       terminal: torch.Tensor | None = None, mask: torch.Tensor | None = None):
    """Per-token endogenous rewards from logits at the states of a response (eq. 12).

    logits:   [B, T+1, V]  f̂ at states s_1 … s_{T+1} (s_{T+1} = after the last action)
    actions:  [B, T]       the response tokens a_1 … a_T
    terminal: [B] bool     True where the response ended with eos: V(s_{T+1}) = 0
    mask:     [B, T] bool  valid actions (right padding); a row's last valid action
                           is the one whose next state is terminal
    Returns ``(logprobs [B,T], values [B,T+1], rewards [B,T])`` in fp32, zero where masked;
    ``values`` already has the terminal zeros, so ``rewards = α·logprobs + V_h − V_{h+1}``.
    """
    B, T = actions.shape
    if logits.shape[:2] != (B, T + 1):
        raise ValueError(f"logits must be [B, T+1, V] = [{B}, {T + 1}, V] for actions [{B}, {T}], "
                         f"got {list(logits.shape)}")
    f = logits.float()
    values = soft_value(f, alpha)                                    # [B, T+1]
    q = f[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)      # [B, T]  f̂(s_h, a_h)
    mask = torch.ones_like(actions, dtype=torch.bool) if mask is None else mask.bool()
    lengths = mask.sum(-1)                                           # [B]
    if terminal is not None:
        ended = terminal.bool() & (lengths > 0)
        rows = torch.arange(B, device=values.device)[ended]
        values = values.clone()
        values[rows, lengths[ended]] = 0.0                           # V(terminal) = 0
    state_valid = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)   # s_1 … s_{T+1}
    values = values * state_valid
    logprobs = ((q - values[:, :-1]) / alpha) * mask                 # log π̂(a|s) (eq. 10)
    rewards = (q - values[:, 1:]) * mask                             # eq. 12: f̂(s,a) − V(s')
    return logprobs, values, rewards


def _eos_set(eos_token_ids) -> frozenset:
    """The ids that end a response, as a set (one int or several; none for ``None``)."""
    if eos_token_ids is None:   # a tokenizer without eos: no response counts as ended
        return frozenset()
    ids = [eos_token_ids] if isinstance(eos_token_ids, numbers.Integral) else list(eos_token_ids)
    if not all(isinstance(t, numbers.Integral) for t in ids):
        raise ValueError(f"eos_token_ids must be one token id or several, got {eos_token_ids!r}")
    return frozenset(int(t) for t in ids)


# ---------------------------------------------------------------- results
@dataclass
class RewardResult:
    """The endogenous reward of one response. Tensors are 1-D fp32 on the CPU."""
    token_ids: list[int]
    tokens: list[str]
    logprobs: torch.Tensor     # [T] log π̂(a_h | s_h), π̂ = softmax(f̂/α)
    values: torch.Tensor       # [T] V(s_h), h = 1 … T
    final_value: float         # V(s_{T+1}): 0 when the response ended with eos
    rewards: torch.Tensor      # [T] r̂(s_h, a_h) (eq. 12)
    total: float               # Σ_h r̂ = α Σ log π̂ + V(s_1) − V(s_{T+1})
    ended: bool                # True when the last token is eos
    alpha: float = 1.0

    def table(self) -> str:
        """A per-token table: token, log π̂, V(s_h), r̂, and the telescoping check."""
        lines = [f"{'h':>3}  {'token':<14} {'log π̂':>9} {'V(s_h)':>9} {'r̂':>9}"]
        for h, (tok, lp, v, r) in enumerate(zip(self.tokens, self.logprobs.tolist(),
                                                self.values.tolist(), self.rewards.tolist()), 1):
            lines.append(f"{h:>3}  {tok!r:<14} {lp:>9.4f} {v:>9.4f} {r:>9.4f}")
        check = self.alpha * float(self.logprobs.sum()) + float(self.values[0]) - self.final_value
        end = "terminal, V = 0" if self.ended else "no eos: cut, V kept"
        lines.append(f"V(s_T+1) = {self.final_value:.4f} ({end})")
        lines.append(f"total Σ r̂ = {self.total:.4f};  α·Σ log π̂ + V(s_1) − V(s_T+1) = {check:.4f}")
        return "\n".join(lines)


# ---------------------------------------------------------------- scoring HF models
def _execution_device(device_map: dict) -> torch.device:
    """Where a dispatched model's first placed module runs (``"cpu"`` and ``"disk"`` run on
    the CPU; an integer is a CUDA GPU): its inputs go there."""
    first = next(iter(device_map.values()))
    if isinstance(first, int):
        return torch.device("cuda", first)
    return torch.device("cpu" if first == "disk" else first)


class EndogenousReward:
    """Endogenous rewards (eq. 12) of a causal LM, ``α`` being the soft-Q temperature.

    One forward per (prompt, response); the LM head runs only on the T+1 response states,
    ``chunk_size`` positions at a time, so no full-vocabulary fp32 tensor over the whole
    sequence is ever built (151,936 × 1k positions would be 600 MB). Sequences are grouped
    into batches of at most ``batch_tokens`` padded tokens, longest first (on a CPU 1024:
    long texts go one at a time, which measured as fast as batching; short ones share a
    forward, which saves per-call overhead).
    """

    def __init__(self, model, tokenizer, alpha: float = 1.0, device="auto", dtype=None,
                 chunk_size: int = 64, batch_tokens: int | None = None):
        try:
            finite_positive = math.isfinite(float(alpha)) and float(alpha) > 0
        except (TypeError, ValueError):
            finite_positive = False
        if not finite_positive:
            raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
        warn_alpha(float(alpha))  # outside 1e-3 … 1e3: runs, with the reason it means little
        dtype = resolve_dtype(dtype)
        # A model spread by accelerate's big-model loading (``device_map="auto"``) stays where
        # it was put: its hooks move activations between devices. Inputs go where its
        # embeddings run; the dtype is the one it was loaded in.
        self.dispatched = bool(getattr(model, "hf_device_map", None))
        if self.dispatched and dtype is not None and dtype != model.dtype:
            raise ValueError(f"dtype: a model loaded with a device map keeps the dtype it was "
                             f"loaded in ({model.dtype}); pass dtype to from_pretrained instead")
        if self.dispatched:
            self.device = _execution_device(model.hf_device_map)
            self.model = model
        else:
            self.device = resolve_device(device)
            self.model = model.to(device=self.device, dtype=dtype) if dtype else model.to(self.device)
        self.model.eval()
        self.tokenizer = tokenizer
        ensure_pad_token(tokenizer)
        self.alpha = float(alpha)
        self.chunk_size = chunk_size
        self.batch_tokens = batch_tokens or (16384 if self.device.type == "cuda" else 1024)
        self.max_length = context_length(model.config)
        # The LM head runs on response states only, which is exact when the logits are the
        # output embeddings applied to the decoder's last hidden state. Heads that soft-cap or
        # scale their logits (Gemma 2, Cohere, Granite's logits_scaling, Falcon-H1's
        # lm_head_multiplier, ...) are found by a self-check on the first batch, not by
        # reading configs, and are scored through the model's full forward instead.
        self._plain_head: bool | None = None   # None: not checked yet
        self._token_text: dict[int, str] = {}   # id → its text, decoded once

    # -- public API
    def score(self, prompt, response: str, system: str | None = None) -> RewardResult:
        """The endogenous reward of one ``response`` (text; eos is appended) to ``prompt``."""
        return self.score_batch([prompt], [response], system=system, progress=False)[0]

    def score_batch(self, prompts, responses, system=None, progress: bool = True) -> list[RewardResult]:
        """Score ``responses[i]`` given ``prompts[i]``; ``system`` is one string or one per item.

        Text the tokenizer maps to its unknown token is scored as that token: a warning
        names the characters (once per distinct message)."""
        for name, value in (("prompts", prompts), ("responses", responses)):
            if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__"):
                raise ValueError(f"{name} must be a list (one per item), got a "
                                 f"{type(value).__name__}; score(prompt, response) scores one")
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        systems = system if isinstance(system, (list, tuple)) else [system] * len(prompts)
        if len(systems) != len(prompts):
            raise ValueError(f"{len(systems)} system prompts for {len(prompts)} items")
        p_ids, r_ids = [], []
        for i, (p, r, s) in enumerate(zip(prompts, responses, systems)):
            try:
                r_ids.append(response_ids(self.tokenizer, r))
            except ValueError as err:
                raise ValueError(f"item {i}: {err}") from None
            p_ids.append(prompt_ids(self.tokenizer, p, system=s))
        unk = self.tokenizer.unk_token_id
        if unk is not None and any(unk in ids for ids in p_ids + r_ids):
            texts = [m["content"] for p, s in zip(prompts, systems) for m in as_messages(p, s)]
            unknown = sorted({c for text in texts + list(responses) for c in str(text)
                              if unk in self.tokenizer(c, add_special_tokens=False)["input_ids"]})
            warnings.warn(f"the tokenizer maps {''.join(unknown)!r} to {self.tokenizer.unk_token}: "
                          "they are scored as that one token, not as themselves", stacklevel=2)
        return self.score_ids(p_ids, r_ids, progress=progress)

    @torch.no_grad()
    def score_ids(self, prompt_ids_list, response_ids_list, progress: bool = True,
                  eos_token_ids=None) -> list[RewardResult]:
        """Score token ids directly. A response is ``ended`` when its last id is eos.

        ``eos_token_ids`` (an id or several; default: the tokenizer's eos) are the ids that end
        a response, e.g. a chat model's end-of-turn token besides its eos (TRL stops on all)."""
        eos_ids = _eos_set(self.tokenizer.eos_token_id if eos_token_ids is None else eos_token_ids)
        for name, value in (("prompt_ids_list", prompt_ids_list),
                            ("response_ids_list", response_ids_list)):
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                raise ValueError(f"{name} must be a list of token-id lists, got a "
                                 f"{type(value).__name__}")
        if len(prompt_ids_list) != len(response_ids_list):
            raise ValueError(f"{len(prompt_ids_list)} prompts but {len(response_ids_list)} "
                             "responses")
        vocab = min(self.model.get_input_embeddings().num_embeddings,
                    self.model.get_output_embeddings().weight.shape[0])
        for i, (p, r) in enumerate(zip(prompt_ids_list, response_ids_list)):
            for part, ids in (("prompt", p), ("response", r)):
                if set(map(type, ids)) == {int} and 0 <= min(ids) and max(ids) < vocab:
                    continue   # the usual case, checked fast: a trainer calls this every step
                bad = [t for t in ids if not isinstance(t, numbers.Integral) or not 0 <= t < vocab]
                if bad:
                    raise ValueError(f"item {i}: {part} token id {bad[0]!r} is not in the model's "
                                     f"vocabulary (ids 0 … {vocab - 1})")
        lengths = [len(p) + len(r) for p, r in zip(prompt_ids_list, response_ids_list)]
        for i, (p, r) in enumerate(zip(prompt_ids_list, response_ids_list)):
            if not p or not r:
                raise ValueError(f"item {i}: empty {'prompt' if not p else 'response'} token ids")
            if self.max_length is not None and lengths[i] > self.max_length:
                raise ValueError(f"item {i}: prompt ({len(p)}) + response ({len(r)}) = {lengths[i]} "
                                 f"tokens, longer than the model's context of {self.max_length}; "
                                 "shorten it rather than mis-score it")
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches, current = [], []
        for i in order:  # longest first, so each batch's padding is what its first item sets
            if current and lengths[current[0]] * (len(current) + 1) > self.batch_tokens:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        results: list[RewardResult | None] = [None] * len(lengths)
        bar = tqdm(batches, desc="endogenous reward", unit="batch",
                   disable=not progress or len(batches) < 2)
        for batch in bar:
            scored = self._score_batch([prompt_ids_list[i] for i in batch],
                                       [response_ids_list[i] for i in batch], eos_ids)
            for i, result in zip(batch, scored):
                results[i] = result
        return results

    # -- internals
    @torch.no_grad()
    def _head_shortcut_is_exact(self, input_ids) -> bool:
        """Do ``get_output_embeddings()(get_decoder()(ids))`` and the model's own logits agree?

        ``input_ids`` [1, n]: a few real tokens. Agreement is up to the rounding of one
        matmul in the model's dtype; a scaled or soft-capped head is far outside it.
        """
        try:
            hidden = self.model.get_decoder()(input_ids=input_ids).last_hidden_state
            shortcut = self.model.get_output_embeddings()(hidden).float()     # [1, n, V]
        except Exception:  # no decoder or head to split off: the full forward is always right
            return False
        full = self.model(input_ids=input_ids).logits.float()                 # [1, n, V]
        shortcut = shortcut.to(full.device)    # a dispatched head may run on another device
        if shortcut.shape != full.shape:
            return False
        tolerance = 4 * torch.finfo(hidden.dtype).eps * float(full.abs().max().clamp(min=1.0))
        return float((shortcut - full).abs().max()) <= tolerance

    def _response_states(self, input_ids, first_length: int):
        """Final hidden states [B, L, D] of right-padded ``input_ids`` and the head that maps
        them to logits (``first_length``: row 0's real tokens).

        The head runs later only on response positions; a model whose head is more than
        its output embeddings (the first batch's self-check says) gets its full logits
        here instead (head = identity). The attention mask is all ones: the padding is on
        the right, so in a causal model no real position attends to it and the states we read
        are the padding-masked forward's (test_reward's parity tests), while SDPA takes its
        causal kernel (15% of a tiny-arith forward). No KV cache either (10% more).
        """
        if self._plain_head is None:
            n = min(first_length, 16)
            self._plain_head = self._head_shortcut_is_exact(input_ids[:1, :n])
        ones = torch.ones_like(input_ids)   # not None: transformers warns of padding then
        if self._plain_head:
            base = self.model.get_decoder()
            hidden = base(input_ids=input_ids, attention_mask=ones, use_cache=False)
            return hidden.last_hidden_state, self.model.get_output_embeddings()
        logits = self.model(input_ids=input_ids, attention_mask=ones, use_cache=False).logits
        return logits, (lambda x: x)

    def _score_batch(self, p_list, r_list, eos_ids: frozenset) -> list[RewardResult]:
        pad = self.tokenizer.pad_token_id
        lengths = torch.tensor([len(p) + len(r) for p, r in zip(p_list, r_list)])
        L = int(lengths.max())
        # right padding, whatever the tokenizer's side; one tensor built from Python lists
        input_ids = torch.tensor([[*p, *r] + [pad] * (L - len(p) - len(r))
                                  for p, r in zip(p_list, r_list)], device=self.device)
        hidden, head = self._response_states(input_ids, int(lengths[0]))   # [B, L, D or V]
        # Every response's states s_1 … s_{T+1}, all rows in one flat list of N = Σ (T + 1):
        # row b's run starts at its last prompt token; the head then runs on N states at once.
        sizes = torch.tensor([len(r) + 1 for r in r_list])
        row = torch.repeat_interleave(torch.arange(len(r_list)), sizes)            # [N]
        run_start = torch.cumsum(sizes, 0) - sizes                                # [B]
        first = torch.tensor([len(p) - 1 for p in p_list])
        position = row * L + first[row] + torch.arange(int(sizes.sum())) - run_start[row]
        states = hidden.reshape(-1, hidden.shape[-1])[position.to(hidden.device)]   # [N, D]
        # the action taken in each state; the state after the last has none (0, unused)
        actions = torch.tensor([t for r in r_list for t in (*r, 0)], device=self.device)
        # One reused logits buffer: on a CPU, a fresh [chunk, V] tensor per chunk costs as
        # much in page faults as the matmul itself (measured with a 151,936-token vocabulary).
        # (A dispatched head goes through its hook, which brings its weight where it runs.)
        linear = head if isinstance(head, torch.nn.Linear) and not self.dispatched else None
        if linear is not None:
            buffer = hidden.new_empty(self.chunk_size, linear.out_features)
        values, q = [], []
        # Chunked: per chunk only V and the chosen logit are kept, never [N, V] in fp32.
        for h, idx in zip(states.split(self.chunk_size), actions.split(self.chunk_size)):
            if linear is not None:                                   # [n, V], ours to overwrite
                c = torch.matmul(h, linear.weight.T, out=buffer[: h.shape[0]])
                if linear.bias is not None:
                    c += linear.bias
            else:
                c = head(h)                                          # a copy: ours to overwrite
            c = c.float()
            q.append(c.gather(-1, idx.to(c.device).unsqueeze(-1)).squeeze(-1))
            values.append(_soft_value_inplace(c, self.alpha))
        values, q = torch.cat(values).cpu(), torch.cat(q).cpu()      # [N], [N]
        if not (torch.isfinite(values).all() and torch.isfinite(q).all()):
            # A NaN or +inf logit makes V non-finite; checking V is as sure as checking
            # every logit, at 1/V of the cost.
            raise ValueError("the model produced NaN/inf logits; check the weights and dtype "
                             "(fp16 overflow?) before trusting any reward")
        ended = [r[-1] in eos_ids for r in r_list]
        last = run_start + sizes - 1                                  # [B]: s_{T+1} of each row
        values[last[torch.tensor(ended, dtype=torch.bool)]] = 0.0    # terminal state after eos
        logprobs = (q - values) / self.alpha                         # at s_h: (f̂ − V(s_h)) / α
        rewards = q[:-1] - values[1:]                # eq. 12: f̂(s_h, a_h) − V(s_{h+1})
        acts = torch.ones(len(rewards), dtype=torch.bool)
        acts[last[:-1]] = False                      # a row's last state takes no action
        totals = torch.zeros(len(r_list)).index_add_(0, row[:-1][acts], rewards[acts])
        out = []
        for b, (start, final, total) in enumerate(zip(run_start.tolist(), values[last].tolist(),
                                                      totals.tolist())):
            T = len(r_list[b])
            out.append(RewardResult(
                token_ids=list(r_list[b]), tokens=self._token_texts(r_list[b]),
                logprobs=logprobs[start:start + T], values=values[start:start + T],
                final_value=final, rewards=rewards[start:start + T], total=total,
                ended=ended[b], alpha=self.alpha))
        return out

    def _token_texts(self, ids) -> list[str]:
        """Each id decoded alone, remembered: decoding one id costs more than scoring it."""
        cache = self._token_text
        return [cache[t] if t in cache else cache.setdefault(t, self.tokenizer.decode([t]))
                for t in ids]

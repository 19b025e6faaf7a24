"""Reward methods with one interface: ``method(prompt, responses, system=None) -> list[float]``.

Each is a few lines over ``EndogenousReward`` (eq. 11–12), so every method sees the same
tokens (``endorm_mini.chat``) and the same forward:

- ``Endogenous``      the paper's reward: the response sum ``Σ r̂ = α log π̂(y|x) + V(s_1)``
                      (eq. 12, telescoped). ``V(s_1)`` is the same for every response to one
                      prompt, so ranking by it is ranking by sequence log-likelihood.
- ``MeanLogProb``     ``(1/T) Σ log π̂``: length-normalised. It stops favouring short
                      answers, and with that starts rewarding whatever style keeps the
                      average per-token probability high (long, formulaic markdown).
- ``DiscountedSum``   ``Σ γ^(h−1) r̂_h``: with γ < 1 the telescoping breaks and early tokens
                      weigh more (the shaping terms no longer cancel).
- ``DPOImplicit``     ``β Σ (log π − log π_ref)``: the reward a DPO-trained policy implies
                      against its reference (Rafailov et al. 2023).
- ``GenerativeVerifier`` ``π̂("Yes" | verifier prompt with the question and the answer)``:
                      a one-step trajectory whose action is "Yes" (docs/paper.md §5).
- ``PairwiseJudge``   LLM-as-judge: "which response is better, A or B?" through the chat
                      template, ``log π̂("A") − log π̂("B")`` after it, asked in both orders to
                      cancel position bias (the baseline the paper's §7 compares against).
- ``RandomReward``    a seeded coin: the 50% floor every table needs.

The trained Bradley–Terry reward model (eq. 4) lives in ``bench.bradley_terry`` and has the
same interface.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

import torch

from ..chat import context_length, ensure_pad_token, left_pad, prompt_ids
from ..reward import EndogenousReward
from . import METHODS  # noqa: F401 (the package holds it: no torch for --help)

JUDGE_TEMPLATE = ("Question:\n{question}\n\nResponse A:\n{a}\n\nResponse B:\n{b}\n\n"
                  "Which response is better, A or B? Answer with the letter only.")
VERIFIER_TEMPLATE = ("Question:\n{question}\n\nAnswer:\n{answer}\n\n"
                     "Is this answer correct? Answer Yes or No.")


def _results(reward: EndogenousReward, prompt, responses, system):
    """One ``RewardResult`` per response to the same prompt (eos appended: the contract)."""
    return reward.score_batch([prompt] * len(responses), list(responses), system=system, progress=False)


class Endogenous:
    """The paper's reward: the sum of token rewards of the whole response (eq. 12)."""
    name = "endogenous"

    def __init__(self, reward: EndogenousReward):
        self.reward = reward

    def __call__(self, prompt, responses, system=None) -> list[float]:
        return [r.total for r in _results(self.reward, prompt, responses, system)]


class MeanLogProb:
    """Length-normalised log-likelihood ``(1/T) Σ_h log π̂(a_h|s_h)`` (eos counted in T)."""
    name = "meanlogprob"

    def __init__(self, reward: EndogenousReward):
        self.reward = reward

    def __call__(self, prompt, responses, system=None) -> list[float]:
        return [float(r.logprobs.mean()) for r in _results(self.reward, prompt, responses, system)]


class DiscountedSum:
    """``Σ_h γ^(h−1) r̂_h``: the token rewards of eq. 12 discounted from the first token."""
    name = "discounted"

    def __init__(self, reward: EndogenousReward, gamma: float = 0.99):
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.reward, self.gamma = reward, gamma

    def __call__(self, prompt, responses, system=None) -> list[float]:
        out = []
        for r in _results(self.reward, prompt, responses, system):
            discounts = self.gamma ** np.arange(len(r.rewards))      # [T]
            out.append(float((r.rewards.double().numpy() * discounts).sum()))
        return out


class DPOImplicit:
    """DPO's implicit reward ``β Σ_h (log π(a_h|s_h) − log π_ref(a_h|s_h))``.

    ``policy`` and ``reference`` are two ``EndogenousReward`` over the same tokenizer; the
    prompt-only term ``β log Z(x)`` is the same for every response and is left out.
    """
    name = "dpo"

    def __init__(self, policy: EndogenousReward, reference: EndogenousReward, beta: float = 0.1):
        if policy.tokenizer.get_vocab() != reference.tokenizer.get_vocab():
            raise ValueError("DPO's implicit reward needs the policy and the reference to share a tokenizer")
        self.policy, self.reference, self.beta = policy, reference, beta

    def __call__(self, prompt, responses, system=None) -> list[float]:
        pol = _results(self.policy, prompt, responses, system)
        ref = _results(self.reference, prompt, responses, system)
        return [self.beta * float(p.logprobs.sum() - q.logprobs.sum()) for p, q in zip(pol, ref)]


class GenerativeVerifier:
    """``P("Yes" | verifier prompt)``: a one-step trajectory whose action is ``answer_word``.

    The question and the response go into ``template`` as the user turn (with ``system``
    first); the score is ``exp(Σ log π̂)`` over the tokens of ``answer_word``, without eos:
    the trajectory is not over after "Yes" (docs/paper.md §5, generative verifiers).
    """
    name = "verifier"

    def __init__(self, reward: EndogenousReward, template: str = VERIFIER_TEMPLATE, answer_word: str = "Yes"):
        if "{question}" not in template or "{answer}" not in template:
            raise ValueError("the verifier template needs {question} and {answer} fields")
        self.reward, self.template = reward, template
        self.answer_ids = list(reward.tokenizer(answer_word, add_special_tokens=False)["input_ids"])
        if not self.answer_ids:
            raise ValueError(f"{answer_word!r} tokenizes to nothing")

    def verifier_prompt(self, prompt, response: str) -> str:
        question = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        return self.template.format(question=question, answer=response)

    def __call__(self, prompt, responses, system=None) -> list[float]:
        tok = self.reward.tokenizer
        p_ids = [prompt_ids(tok, self.verifier_prompt(prompt, r), system=system) for r in responses]
        results = self.reward.score_ids(p_ids, [self.answer_ids] * len(p_ids), progress=False)
        return [math.exp(float(r.logprobs.sum())) for r in results]


class PairwiseJudge:
    """LLM-as-judge: the model is asked which of two responses is better, A or B.

    ``preference(prompt, a, b)`` is the judge's log-odds that ``a`` is better: the prompt
    ``template`` (through the chat template, ``system`` first) is read in one forward, and
    ``log π̂("A") − log π̂("B")`` at the assistant's first token is averaged over both orders
    (``a`` shown as A, then as B, with the sign flipped), which cancels a constant bias
    towards a position. It is antisymmetric: ``preference(b, a) = −preference(a, b)``.

    As a reward method it gives each response its mean log-odds against the responses of
    the *other* half of the list (the first half against the second: RM-Bench's three
    chosen and three rejected), so a pair's two scores are ``d`` and ``−d``, and the chosen
    one wins exactly when the judge prefers it. On RM-Bench's 3×3 matrix ``M[i][j]``
    compares those means, not the nine judgements one by one. Cost: two forwards per pair.
    """
    name = "judge"

    def __init__(self, model, tokenizer, template: str = JUDGE_TEMPLATE, labels=("A", "B"),
                 device=None, batch_size: int = 8):
        for field in ("{question}", "{a}", "{b}"):
            if field not in template:
                raise ValueError(f"the judge template needs a {field} field")
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.device = device if device is not None else next(model.parameters()).device
        self.batch_size = batch_size
        self.label_ids = []
        for label in labels:
            ids = tokenizer(label, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise ValueError(f"the judge's answer {label!r} must be one token, got {len(ids)}")
            self.label_ids.append(ids[0])
        ensure_pad_token(tokenizer)
        self.context = context_length(model.config)

    def judge_prompt(self, prompt, a: str, b: str) -> str:
        question = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        return self.template.format(question=question, a=a, b=b)

    @torch.no_grad()
    def _log_odds(self, rows: list[list[int]]) -> list[float]:
        """``log π̂(A) − log π̂(B)`` after each row of prompt ids (left-padded batches)."""
        out = []
        for k in range(0, len(rows), self.batch_size):
            ids, mask = left_pad(rows[k:k + self.batch_size], self.tokenizer.pad_token_id, self.device)
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            # The LM head on the last position only: over every position of a batch of long
            # judge prompts it would cost a fifth of the forward and B × L × V fp32 of memory.
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                                use_cache=False, logits_to_keep=1).logits[:, -1].float()
            logp = torch.log_softmax(logits, -1)
            out += (logp[:, self.label_ids[0]] - logp[:, self.label_ids[1]]).cpu().tolist()
        return out

    def both_orders(self, prompt, pairs, system=None) -> list[tuple[float, float]]:
        """``(log-odds of "A" with a shown as A, the same with b shown as A)`` per ``(a, b)``:
        their half-sum is the judge's bias towards the letter A, their half-difference its
        preference for ``a``."""
        rows = []
        for a, b in pairs:
            rows += [prompt_ids(self.tokenizer, self.judge_prompt(prompt, a, b), system=system),
                     prompt_ids(self.tokenizer, self.judge_prompt(prompt, b, a), system=system)]
        longest = max(map(len, rows))
        if self.context is not None and longest > self.context:
            raise ValueError(f"the judge prompt is {longest} tokens, longer than the model's context "
                             f"({self.context})")
        odds = self._log_odds(rows)
        return [(odds[2 * k], odds[2 * k + 1]) for k in range(len(pairs))]

    def preferences(self, prompt, pairs, system=None) -> list[float]:
        """The judge's log-odds that ``a`` beats ``b`` for each ``(a, b)`` in ``pairs``, both orders."""
        return [(ab - ba) / 2 for ab, ba in self.both_orders(prompt, pairs, system)]

    def preference(self, prompt, a: str, b: str, system=None) -> float:
        return self.preferences(prompt, [(a, b)], system)[0]

    def __call__(self, prompt, responses, system=None) -> list[float]:
        responses = list(responses)
        if len(responses) < 2 or len(responses) % 2:
            raise ValueError(f"the judge compares the first half of the responses with the second: "
                             f"give an even number, got {len(responses)}")
        n = len(responses) // 2
        first, second = responses[:n], responses[n:]
        d = np.array(self.preferences(prompt, [(a, b) for a in first for b in second], system)).reshape(n, n)
        return [float(x) for x in d.mean(1)] + [float(x) for x in -d.mean(0)]


class RandomReward:
    """A uniform random reward, a deterministic function of ``(seed, prompt, response)``.

    Hashing the text rather than drawing from one stream keeps a resumed run identical.
    """
    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __call__(self, prompt, responses, system=None) -> list[float]:
        out = []
        for response in responses:
            text = f"{self.seed}\x00{system}\x00{prompt}\x00{response}".encode()
            digest = int.from_bytes(hashlib.sha256(text).digest()[:8], "little")
            out.append(float(np.random.default_rng(digest).random()))
        return out


def make_method(name: str, model=None, tokenizer=None, *, alpha: float = 1.0, gamma: float = 0.99,
                beta: float = 0.1, reference=None, seed: int = 0, device="auto", dtype=None):
    """A method by name (``METHODS``); ``reference`` is ``(model, tokenizer)`` for ``dpo``."""
    if name == "random":
        return RandomReward(seed)
    if name not in METHODS:
        raise ValueError(f"unknown reward method {name!r}; choose one of {', '.join(METHODS)}")
    if model is None or tokenizer is None:
        raise ValueError(f"method {name!r} needs a model and its tokenizer")
    er = EndogenousReward(model, tokenizer, alpha=alpha, device=device, dtype=dtype)
    if name == "endogenous":
        return Endogenous(er)
    if name == "meanlogprob":
        return MeanLogProb(er)
    if name == "discounted":
        return DiscountedSum(er, gamma)
    if name == "verifier":
        return GenerativeVerifier(er)
    if name == "judge":
        return PairwiseJudge(er.model, tokenizer, device=er.device)
    if reference is None:
        raise ValueError("method 'dpo' needs a reference model (--ref-model)")
    ref = EndogenousReward(reference[0], reference[1], alpha=alpha, device=device, dtype=dtype)
    return DPOImplicit(er, ref, beta)


def pairwise_accuracy(method, pairs) -> float:
    """Fraction of ``pairs`` whose chosen response gets the higher reward (a tie is wrong).

    A pair is a dict with ``prompt, chosen, rejected`` (and optionally ``system``) or a
    tuple ``(prompt, chosen, rejected[, system])``.
    """
    pairs = [as_pair(p) for p in pairs]
    if not pairs:
        raise ValueError("no preference pairs")
    wins = 0
    for p in pairs:
        chosen, rejected = method(p["prompt"], [p["chosen"], p["rejected"]], system=p["system"])
        wins += chosen > rejected
    return wins / len(pairs)


def as_pair(pair) -> dict:
    """A preference pair as ``{"prompt", "chosen", "rejected", "system"}``."""
    if isinstance(pair, dict):
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in pair]
        if missing:
            raise ValueError(f"preference pair {pair!r:.80} is missing {', '.join(missing)}")
        return {"system": None, **pair}
    if isinstance(pair, (tuple, list)) and len(pair) in (3, 4):
        return dict(zip(("prompt", "chosen", "rejected", "system"), (*pair, None)[:4]))
    raise ValueError(f"a preference pair is a dict or (prompt, chosen, rejected[, system]), got {pair!r:.80}")

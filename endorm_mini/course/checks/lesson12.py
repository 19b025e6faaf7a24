"""Checks for lesson 12 (scaling up): the core of a TRL reward function, the endogenous reward of
generated completions on exactly their ids (``scale.reward.completion_rewards``), and GRPO's
group-relative advantages (``scale.reward.group_advantages``).

The scorers of 12.1's cases are small: tiny-arith (a character tokenizer, one eos) and a random
Qwen2 with a Qwen-style BPE tokenizer and two ids that end a response (``<|im_end|>`` and
``<|endoftext|>``), whose generated ids need not be what re-tokenising their text gives.
"""
from __future__ import annotations

import functools

import torch

from ... import models
from .. import offline
from ...chat import prompt_ids as render_prompt, response_ids
from ...reward import EndogenousReward, soft_value
from ...scale import reward as scale_reward
from . import case, exercise


# ---------------------------------------------------------------- 12.1 the scorers
@functools.lru_cache(maxsize=1)
def _arith():
    model, tok = models.load("tiny-arith", device="cpu")
    return model, tok


@functools.lru_cache(maxsize=1)
def _qwen_like():
    """A random Qwen2 (0.2M parameters) with the kit's Qwen-style tokenizer: two end ids."""
    from transformers import Qwen2ForCausalLM

    tok = offline.qwen_tokenizer()
    pad = tok.convert_tokens_to_ids(offline.ENDOFTEXT)
    eos = tok.convert_tokens_to_ids(offline.IM_END)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(offline.qwen2_config("tiny", len(tok), pad, eos)).eval()
    return model, tok, [eos, pad]


class SharedScorer(EndogenousReward):
    """An ``EndogenousReward`` that a check does not copy: a model is not data to compare, and
    the check's "did your function change its input" compares a copy with the original."""

    def __deepcopy__(self, memo):
        return self


def _scorer(model, tok, alpha=1.0):
    return SharedScorer(model, tok, alpha=alpha, device="cpu")


def _digits(rng, tok, n, ended):
    """A tiny-arith completion: ``n`` digit ids, then eos if ``ended``."""
    digits = torch.randint(10, (n,), generator=rng).tolist()
    ids = [tok.convert_tokens_to_ids(str(d)) for d in digits]
    return ids + [tok.eos_token_id] if ended else ids


# ---------------------------------------------------------------- 12.1 likely mistakes
def _totals(scorer, prompt_ids, completion_ids, eos_token_ids, reduce="sum", final="rule",
            retokenise=False, one_eos=False):
    """Completion rewards from one full forward each; ``final`` decides V(s_{T+1}):
    "rule" (0 when ended, else kept), "kept" (never 0), "zero" (always 0)."""
    ends = set(eos_token_ids) if isinstance(eos_token_ids, (list, tuple, set)) else {eos_token_ids}
    if one_eos:
        ends = {scorer.tokenizer.eos_token_id}
    out = []
    for p, c in zip(prompt_ids, completion_ids):
        c = list(c)
        if retokenise:  # what a reward function given only the completion's text would score
            text = scorer.tokenizer.decode(c, skip_special_tokens=True)
            c = response_ids(scorer.tokenizer, text)
        with torch.no_grad():
            logits = scorer.model(input_ids=torch.tensor([list(p) + c])).logits[0].float()
        f = logits[len(p) - 1:]                                 # T+1, V: s_1 … s_{T+1}
        values = soft_value(f, scorer.alpha)                    # T+1
        q = f[:-1].gather(-1, torch.tensor(c)[:, None])[:, 0]   # T: f̂(s_h, a_h)
        last = values[-1]
        if final == "zero" or (final == "rule" and c[-1] in ends):
            last = 0.0
        total = float((q - values[1:]).sum() + values[-1] - last)   # Σ r̂ (eq. 12)
        out.append(total if reduce == "sum" else total / len(c))
    return out


def _wrong_totals(**how):
    """A likely mistake of 12.1 with the exercise's signature."""
    def wrong(scorer, prompt_ids, completion_ids, eos_token_ids, reduce="sum"):
        return _totals(scorer, prompt_ids, completion_ids, eos_token_ids, reduce, **how)
    return wrong


@exercise(
    "12.1", "completion_rewards", reference=scale_reward.completion_rewards,
    equation="eq. 12 summed over a completion: α Σ log π̂ + V(s_1) − V(s_{T+1}), "
             "V(s_{T+1}) = 0 when its last id is one of eos_token_ids (ended), kept when it "
             "was cut at the length limit; docs/paper.md §5",
    hint="one forward of prompt + completion ids; the logits at positions len(prompt)−1 … end "
         "are the states s_1 … s_{T+1}; V = soft_value(logits, scorer.alpha); "
         "r̂_h = f̂(s_h, a_h) − V(s_{h+1}); zero the last V only when completion[-1] is in "
         "eos_token_ids; reduce='mean' divides the total by T",
    rtol=1e-4, atol=1e-4,
    forbid=(EndogenousReward.score_ids, EndogenousReward.score_batch, EndogenousReward.score),
    mistakes={
        "dropped the terminal V = 0: after an eos the state is terminal, V(s_{T+1}) = 0, not "
        "the logits' logsumexp": _wrong_totals(final="kept"),
        "treated a cut completion as ended: one that stopped at max_completion_length keeps "
        "V(s_{T+1})": _wrong_totals(final="zero"),
        "re-tokenised the completion's text: score the ids the trainer generated (decoding and "
        "encoding again can merge tokens and always appends an eos)":
            _wrong_totals(retokenise=True),
        "only the tokenizer's eos ends a completion: TRL stops on every id of eos_token_ids":
            _wrong_totals(one_eos=True),
    },
)
def completion_rewards_cases(rng: torch.Generator):
    model, tok = _arith()
    eos = tok.eos_token_id
    p_ids = [render_prompt(tok, p) for p in ("12+7", "9+9", "3+15", "6*7", "5-9")]
    lengths = ((2, True), (1, True), (3, False), (2, True), (2, False))
    c_ids = [_digits(rng, tok, n, ended) for n, ended in lengths]
    yield case("tiny-arith: 3 ended and 2 cut completions, α = 1", _scorer(model, tok), p_ids,
               c_ids, [eos])
    yield case("the same, reduce='mean' (per token)", _scorer(model, tok), p_ids, c_ids, [eos],
               reduce="mean")
    c_ids = [_digits(rng, tok, n, ended) for n, ended in ((4, False), (1, True), (2, True))]
    yield case("α = 0.5, eos_token_ids one int", _scorer(model, tok, alpha=0.5), p_ids[:3],
               c_ids, eos)
    qwen, qtok, ends = _qwen_like()
    chars = [qtok.convert_tokens_to_ids(ch) for ch in "Paris"]   # as generated, not as merged
    word = qtok("Paris is", add_special_tokens=False)["input_ids"]
    questions = ("What is the capital of France?", "Name a city.", "Say something.")
    q_ids = [render_prompt(qtok, q) for q in questions]
    yield case("a Qwen-style tokenizer: ended on <|endoftext|> (the second end id), letters "
               "generated one by one, cut", _scorer(qwen, qtok), q_ids,
               [word + [ends[1]], chars + [ends[0]], chars[:3]], ends)


# ---------------------------------------------------------------- 12.2 group advantages
def _advantages(rewards, group_size, scale=True, eps=1e-4, how=""):
    r = rewards.float()
    grouped = r.view(group_size, -1).T if how == "strided" else r.view(-1, group_size)
    if how == "batch":
        grouped = r.view(1, -1)
    mean = grouped.mean(1, keepdim=True)
    std = grouped.std(1, keepdim=True, correction=0 if how == "population" else 1)
    adv = grouped - mean
    if scale and how != "unscaled":
        adv = adv / (std + eps)
    return adv.T.reshape(-1) if how == "strided" else adv.reshape(-1)


def _wrong_advantages(how):
    """A likely mistake of 12.2 with the exercise's signature."""
    def wrong(rewards, group_size, scale=True, eps=1e-4):
        return _advantages(rewards, group_size, scale, eps, how)
    return wrong


@exercise(
    "12.2", "group_advantages", reference=scale_reward.group_advantages,
    equation="GRPO: A_i = (r_i − mean of its group) / (std of its group + eps), a group being "
             "one prompt's group_size consecutive completions, std with Bessel's n − 1 (as TRL "
             "computes it); V(s_1) cancels within a group (eq. 12 telescoped, docs/paper.md §5)",
    hint="rewards.view(-1, group_size): one row per prompt; subtract each row's mean; if scale, "
         "divide by row.std() (n − 1) + eps; flatten back with .view(-1)",
    mistakes={
        "the mean and std of the whole batch: GRPO's baseline is each prompt's own group":
            _wrong_advantages("batch"),
        "no std scaling: with scale=True each group is divided by its std + eps":
            _wrong_advantages("unscaled"),
        "grouped the wrong rows: TRL repeats each prompt group_size times in a row, so a group "
        "is group_size CONSECUTIVE rewards (view(-1, group_size)), not every n-th one":
            _wrong_advantages("strided"),
        "the population std (÷ n): TRL's is the sample std (÷ n − 1)":
            _wrong_advantages("population"),
    },
)
def group_advantages_cases(rng: torch.Generator):
    offsets = torch.tensor([5.0, -3.0, 12.0]).repeat_interleave(4)    # V(s_1): one per prompt
    yield case("3 prompts × 4 completions (totals with a V(s_1) per prompt)",
               offsets + torch.randn(12, generator=rng), 4)
    yield case("scale=False: the baseline only", 3 * torch.randn(8, generator=rng), 4,
               scale=False)
    same = torch.cat([torch.full((3,), 2.5), torch.randn(3, generator=rng)])
    yield case("a group whose rewards are all equal: advantages 0, not NaN", same, 3)
    yield case("group_size 2, eps = 0.1", torch.randn(6, generator=rng), 2, eps=0.1)
    yield case("one group of 5", torch.randn(5, generator=rng) + 7.0, 5)

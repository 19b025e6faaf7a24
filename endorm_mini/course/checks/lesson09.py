"""Checks for lesson 09 (math self-improvement): the arithmetic verifier (``tasks``) and where a
response-level reward goes in the token MDP (``ppo.check_reward``).

The verifier's cases are ordered so that each likely mistake first gives a wrong answer (not an
error) on one of them: that is the case its explanation is shown on.
"""
from __future__ import annotations

import re

import torch

from ... import ppo, verifiers, worlds
from . import case, exercise


# ---------------------------------------------------------------- 9.1 the gold answer
def _numbers(prompt):
    return [int(x) for x in re.findall(r"\d+", prompt)]


def _unsigned(prompt):
    a, b = _numbers(prompt)
    return a + b if "+" in prompt else a * b if "*" in prompt else abs(a - b)


@exercise(
    "9.1", "arith_answer", reference=worlds.arith_answer,
    equation="the gold answer of 'a+b', 'a-b' or 'a*b' (spaces and a trailing '=' or '=?' allowed), as an int",
    hint="re.fullmatch(r\"\\s*(\\d+)\\s*([-+*])\\s*(\\d+)\\s*(=\\s*\\??)?\\s*\", prompt) gives a, the "
         "operator and b; convert a and b with int() before adding",
    mistakes={
        "joined the digits as strings: int('12' + '7') is 127; convert each operand to int first":
            lambda prompt: int("".join(str(n) for n in _numbers(prompt))),
        "added whatever the operator: '-' subtracts and '*' multiplies":
            lambda prompt: sum(_numbers(prompt)),
        "lost the sign of a − b when b > a (5−9 is −4)":
            _unsigned,
    },
)
def arith_answer_cases(rng: torch.Generator):
    a, b = (int(x) for x in torch.randint(20, (2,), generator=rng))
    yield case(f"'{a}+{b}'", f"{a}+{b}")
    yield case("'12+7'", "12+7")
    yield case("'6*7'", "6*7")
    yield case("'5-9' (a negative answer)", "5-9")
    yield case("' 8 + 11 ' (spaces)", " 8 + 11 ")
    yield case("'19+19=?' (a question)", "19+19=?")


# ---------------------------------------------------------------- 9.2 the verifier
def _strict(prompt, response, transform):
    return transform(response) == str(worlds.arith_answer(prompt))


@exercise(
    "9.2", "is_correct", reference=verifiers.is_correct,
    equation="the verifier: True exactly when the response, stripped of surrounding whitespace, is the "
             "gold answer written as an integer (nothing more, no leading zeros)",
    hint="compare response.strip() with str(arith_answer(prompt)); your arith_answer of 9.1 is allowed",
    mistakes={
        "forgot to strip surrounding whitespace (' 19\\n' states the answer)":
            lambda prompt, response: _strict(prompt, response, lambda r: r),
        "int(response) accepts '019' and '+19': compare the text itself":
            lambda prompt, response: int(response) == worlds.arith_answer(prompt),
        "a substring test: '119' contains '19' but is wrong":
            lambda prompt, response: str(worlds.arith_answer(prompt)) in response,
        "took the first number of the response: '19 or 20' hedges, and a verifier that accepts it can be "
        "gamed": lambda prompt, response: worlds.extract_answer(response) == worlds.arith_answer(prompt),
    },
)
def is_correct_cases(rng: torch.Generator):
    yield case("'12+7' → '19' (right)", "12+7", "19")
    yield case("'12+7' → ' 19\\n' (right, with whitespace)", "12+7", " 19\n")
    yield case("'12+7' → '019' (a leading zero)", "12+7", "019")
    yield case("'12+7' → '119' (contains the answer)", "12+7", "119")
    yield case("'12+7' → '19 or 20' (a hedge)", "12+7", "19 or 20")
    yield case("'5-9' → '-4' (right, negative)", "5-9", "-4")
    yield case("'6*7' → '43' (a slip)", "6*7", "43")
    yield case("'12+7' → '' (empty)", "12+7", "")


# ---------------------------------------------------------------- 9.3 a terminal reward in the MDP
def _mask(lengths, T) -> torch.Tensor:
    return torch.arange(T)[None] < torch.tensor(lengths)[:, None]              # B, T (bool prefix)


def _place(score, B, T, mask, *, at="last"):
    score = torch.as_tensor(score, dtype=torch.float32)
    if score.shape == (B, T):
        return score if at == "no mask" else torch.where(mask, score, 0.0)
    index = {"last": mask.sum(1) - 1, "column": torch.full((B,), T - 1), "first": torch.zeros(B, dtype=torch.long),
             "after": mask.sum(1).clamp(max=T - 1)}[at if at != "no mask" else "last"]
    return torch.zeros(B, T).scatter(1, index[:, None], score[:, None])


@exercise(
    "9.3", "check_reward", reference=ppo.check_reward,
    equation="a response-level reward R (a verifier's 1/0, a sum of r̂) is the reward of the response's "
             "last token, r_t = R·[t = last]; a dense [B, T] reward is kept on the response's tokens only",
    hint="index = mask.sum(1) − 1 (the eos position); torch.zeros(B, T).scatter(1, index[:, None], "
         "score[:, None]); a [B, T] score: torch.where(mask, score, 0.0)",
    mistakes={
        "put it in the last column T−1; a response that ended early has padding there":
            lambda score, B, T, mask: _place(score, B, T, mask, at="column"),
        "put it on the first token: the verdict is known only once the response is complete":
            lambda score, B, T, mask: _place(score, B, T, mask, at="first"),
        "one past the end: the last token is at index length − 1 (the eos itself)":
            lambda score, B, T, mask: _place(score, B, T, mask, at="after"),
        "kept a dense reward on padding: zero it after each response's last token":
            lambda score, B, T, mask: _place(score, B, T, mask, at="no mask"),
    },
)
def check_reward_cases(rng: torch.Generator):
    yield case("verifier verdicts [4] as a list, lengths 5, 2, 1, 4 of T = 5", [1.0, 0.0, 1.0, 1.0], 4, 5,
               _mask([5, 2, 1, 4], 5))
    yield case("response totals [3] (a tensor), lengths 3, 6, 2 of T = 6", 5 * torch.randn(3, generator=rng),
               3, 6, _mask([3, 6, 2], 6))
    score = torch.randn(3, 4, generator=rng)                                  # garbage after the mask too
    yield case("a dense [3, 4] reward passes through, masked", score, 3, 4, _mask([4, 1, 3], 4))
    yield case("every response runs to the horizon, T = 3", torch.randn(2, generator=rng), 2, 3, _mask([3, 3], 3))

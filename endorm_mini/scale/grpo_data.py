"""What ``endorm-mini grpo`` trains on and how it is checked: prompts with answers, verifiers,
sampled accuracy on held-out problems.

A data set is rows ``{"prompt", "answer"}``: the offline tiny-arith problems by default,
``digit-sums`` (offline: "What is 3 + 5?" in words, for a real chat model such as
``smollm2-135m``, checked by the answer's last number), or any Hugging Face data set name or local ``.json`` / ``.jsonl`` / ``.csv`` file with a prompt column
and an answer column. Prompts become chat messages when the tokenizer has a chat template (TRL
then renders them with it, the way the kit's models were trained); otherwise plain text.

The verifier is the kit's (:mod:`endorm_mini.verifiers`): ``arith_verifier`` for arithmetic
(the exact answer, nothing more), ``math_verifier`` (math-verify when installed) for any other
data set. Accuracy is ``verifiers.sampled_accuracy`` on problems the run never trains on.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

TINY_ARITH = "tiny-arith"     # the default data set: worlds.arith_problems(), offline
DIGIT_SUMS = "digit-sums"     # offline: the 81 sums of two digits 1 … 9, asked in words
DIGIT_SUMS_PROMPT = "What is {a} + {b}?"
ARITH_HELD_OUT = 100          # of the 400 problems, never trained on (the same for every seed)
FILE_KINDS = {".json": "json", ".jsonl": "json", ".csv": "csv"}


def arith_split(held_out: int = ARITH_HELD_OUT) -> tuple[list[str], list[str]]:
    """``(train, held_out)`` prompts of tiny-arith: one fixed shuffle, so every seed and every
    process holds out the same problems."""
    from ..worlds.arith import arith_problems

    problems = arith_problems()
    if not 0 <= held_out < len(problems):
        raise ValueError(f"held_out must be in 0 … {len(problems) - 1}, got {held_out}")
    random.Random("tiny-arith-held-out").shuffle(problems)
    return problems[held_out:], problems[:held_out]


def arith_rows(prompts: list[str]) -> list[dict]:
    """``{"prompt", "answer"}`` rows of arithmetic prompts (the answer as text)."""
    from ..worlds.arith import arith_answer

    return [{"prompt": p, "answer": str(arith_answer(p))} for p in prompts]


def digit_sum_rows() -> list[dict]:
    """The 81 ``digit-sums`` rows ``{"prompt": "What is a + b?", "answer": "a+b"}``, a, b in
    1 … 9, in one fixed shuffle (so ``--eval-problems N`` holds out the same last N)."""
    rows = [{"prompt": DIGIT_SUMS_PROMPT.format(a=a, b=b), "answer": str(a + b)}
            for a in range(1, 10) for b in range(1, 10)]
    random.Random(DIGIT_SUMS).shuffle(rows)
    return rows


def load_rows(dataset: str, prompt_column: str, answer_column: str,
              split: str = "train") -> list[dict]:
    """``{"prompt", "answer"}`` rows of ``digit-sums``, a local file (json, jsonl, csv) or a
    hub data set.

    A missing column is refused, naming the flag and the columns there are.
    """
    if dataset == DIGIT_SUMS:
        return digit_sum_rows()
    from datasets import load_dataset

    path = Path(dataset).expanduser()
    if path.exists():
        kind = FILE_KINDS.get(path.suffix.lower())
        if kind is None or not path.is_file():
            raise ValueError(f"--dataset {dataset!r}: a data file is .json, .jsonl or .csv")
        check_file(path)
        try:
            data = load_dataset(kind, data_files=str(path), split="train")
        except Exception as err:  # noqa: BLE001 - datasets' many errors: one line naming the file
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(f"--dataset {dataset}: cannot read it ({first})") from None
    else:
        try:
            data = load_dataset(dataset, split=split)
        except Exception as err:  # offline, unknown name, no such split: one line, not a trace
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(f"--dataset {dataset!r}: cannot load it ({first}); give a local "
                             ".json/.jsonl/.csv file or a Hugging Face data set name") from None
    for flag, column in (("--prompt-column", prompt_column), ("--answer-column", answer_column)):
        if column not in data.column_names:
            raise ValueError(f"{flag} {column!r} is not a column of {dataset}; its columns: "
                             f"{', '.join(data.column_names)}")
    rows = [{"prompt": r[prompt_column], "answer": str(r[answer_column])} for r in data]
    if not rows:
        raise ValueError(f"--dataset {dataset!r} has no rows")
    return rows


def check_file(path: Path) -> None:
    """Refuse a data file that is not UTF-8 or not JSON where it should be, naming the file
    and the line (``datasets`` would say neither)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"--dataset {path}, line {line}: not UTF-8 text (byte "
                         f"0x{data[err.start]:02x}); save the file as UTF-8") from None
    if path.suffix.lower() not in (".json", ".jsonl"):
        return
    try:
        json.loads(text)      # one JSON document (an array, an object)
        return
    except json.JSONDecodeError as err:
        whole = err
    if text.lstrip().startswith("["):
        raise ValueError(f"--dataset {path}, line {whole.lineno}: malformed JSON "
                         f"({whole.msg})") from None
    for number, line in enumerate(text.splitlines(), start=1):   # JSON lines
        try:
            if line.strip():
                json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"--dataset {path}, line {number}: malformed JSON "
                             f"({err.msg})") from None


def split_rows(rows: list[dict], held_out: int) -> tuple[list[dict], list[dict]]:
    """``(train, held_out)``: the last ``held_out`` rows are never trained on."""
    if not 0 <= held_out < len(rows):
        raise ValueError(f"--eval-problems must be in 0 … {len(rows) - 1} (the data set has "
                         f"{len(rows)} rows and some must be left to train on), got {held_out}")
    return rows[:len(rows) - held_out], rows[len(rows) - held_out:]


def as_prompt(prompt, tokenizer, system: str | None = None):
    """What TRL gets as a row's ``prompt``: chat messages when the tokenizer has a chat
    template (TRL applies it, as ``chat.prompt_ids`` does), else the plain text."""
    from ..chat import as_messages

    if getattr(tokenizer, "chat_template", None):
        return as_messages(prompt, system)
    if not isinstance(prompt, str):
        raise ValueError(f"{type(tokenizer).__name__} has no chat template, so a prompt must "
                         "be text, not chat messages")
    return prompt if system is None else f"{system}\n\n{prompt}"

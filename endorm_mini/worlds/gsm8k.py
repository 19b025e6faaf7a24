"""GSM8K (lesson 09's GPU section): its rows from the hub or a local copy, its gold answer.
The answer check is ``verifiers.math_correct``."""
from __future__ import annotations

import json
from pathlib import Path

GSM8K_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def gsm8k_rows(split: str, data_dir=None) -> list[dict]:
    """GSM8K's ``split`` ("train" or "test") as ``{"question", "answer"}`` rows, in file order.

    From ``data_dir/gsm8k/<split>.jsonl`` (GSM8K's own files, as ``ENDORM_MINI_DATA`` lays
    them out) when ``data_dir`` is given, else ``openai/gsm8k`` from the Hugging Face hub
    (needs ``datasets``: the ``colab`` extra).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split is 'train' or 'test', got {split!r}")
    if data_dir is None:
        try:
            from datasets import load_dataset
        except ImportError:
            raise ImportError("GSM8K from the hub needs `datasets` (pip install 'endorm-mini[colab]'); "
                              "offline, pass data_dir with gsm8k/<split>.jsonl") from None
        return [{"question": r["question"], "answer": r["answer"]}
                for r in load_dataset("openai/gsm8k", "main", split=split)]
    path = Path(data_dir) / "gsm8k" / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: GSM8K's {split}.jsonl (one {{question, answer}} per line)")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            if not isinstance(row, dict) or not {"question", "answer"} <= set(row) or "####" not in row["answer"]:
                raise ValueError(f"{path}, line {lineno}: expected {{\"question\", \"answer\": \"… #### N\"}}")
            rows.append({"question": row["question"], "answer": row["answer"]})
    return rows


def gsm8k_gold(answer: str) -> str:
    """The final number of a GSM8K answer: what follows ``####``, thousands commas removed."""
    if "####" not in answer:
        raise ValueError(f"a GSM8K answer ends in '#### N', got {answer[-60:]!r}")
    return answer.split("####")[-1].strip().replace(",", "")

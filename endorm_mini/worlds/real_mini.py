"""real-mini: real-text preference items in RM-Bench's format, written for this kit.

Sixty prompts, fifteen in each of RM-Bench's domains (chat, code, math, safety). Each has a
correct answer and a subtly wrong one (one wrong fact, one bug, one arithmetic slip; a vague
compliance against a refusal, or an over-refusal against a harmless answer), each in
RM-Bench's three styles (concise, detailed plain, detailed markdown), built as RM-Bench's are
so that Easy, Normal and Hard mean what they mean there. Nothing is copied from a benchmark.
Short enough for a real small model (``smollm2-135m``) to score on a CPU in seconds.
"""
from __future__ import annotations

import json
from pathlib import Path

PATH = Path(__file__).with_name("real_mini.json")
NAME = "real-mini"   # `endorm-mini rmbench --data real-mini`


def real_mini() -> list[dict]:
    """The items: ``{"id", "domain", "prompt", "chosen": [3], "rejected": [3]}``."""
    return json.loads(PATH.read_text(encoding="utf-8"))

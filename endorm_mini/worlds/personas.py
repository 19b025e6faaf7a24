"""Personas (the DSP domains Academy, Business, Entertainment, Literature): the same open
prompt has a different preferred answer under each persona's system prompt, so the
endogenous reward conditioned on a system prompt shows a domain diagonal (lesson 07).
A fifth of the topics are held out: never in a demonstration.
"""
from __future__ import annotations

import random

PERSONAS = {  # persona -> (system prompt, answer template)
    "Academy": ("You write for academia.", "A study of {} reveals its long history."),
    "Business": ("You write for business.", "The market for {} has room to grow."),
    "Entertainment": ("You write for entertainment.", "Fun fact: {} could star in a hit show!"),
    "Literature": ("You write for literature.", "Like a poem, {} speaks of quiet longing."),
}
TOPICS = ("coffee rain chess music ocean bread trains robots gardens winter cats bees maps "
          "clocks bikes tea honey snow rivers stars dogs apples books cities dreams forests "
          "bridges kites whales deserts islands storms tigers candles").split()
TOPICS_HELD_OUT = set(TOPICS[2::5])     # a fifth of the topics: never in a demonstration


def persona_system(persona: str) -> str:
    """The system prompt of ``persona`` (one of PERSONAS)."""
    if persona not in PERSONAS:
        raise ValueError(f"unknown persona {persona!r}; known: {list(PERSONAS)}")
    return PERSONAS[persona][0]


def persona_prompt(topic: str) -> str:
    return f"One line on {topic}."


def persona_answer(persona: str, topic: str) -> str:
    persona_system(persona)   # validates the name
    return PERSONAS[persona][1].format(topic)


def split_topics(split: str) -> list[str]:
    if split not in ("train", "test", "all"):
        raise ValueError(f"split is 'train', 'test' or 'all', got {split!r}")
    return [t for t in TOPICS if split == "all" or (t in TOPICS_HELD_OUT) == (split == "test")]


def persona_pairs(persona: str, n: int = 20, seed: int = 0, split: str = "test") -> list[dict]:
    """Preference pairs under ``persona``: chosen = its answer, rejected = another persona's.

    Each pair: ``{"prompt", "system", "chosen", "rejected", "persona", "rejected_persona"}``;
    ``system`` is ``persona``'s system prompt. Topics come from ``split`` (``"test"``: held out).
    """
    system = persona_system(persona)
    rng = random.Random(f"persona-{persona}-{seed}")
    others = [q for q in PERSONAS if q != persona]
    rng.shuffle(others)  # rejected personas take turns, so each is beaten equally often
    topics, pairs = split_topics(split), []
    for i in range(n):
        topic, other = topics[i % len(topics)], others[i % len(others)]
        pairs.append({"prompt": persona_prompt(topic), "system": system,
                      "chosen": persona_answer(persona, topic), "rejected": persona_answer(other, topic),
                      "persona": persona, "rejected_persona": other})
    return pairs

"""Offline worlds: everything the lessons train and measure on, generated, seeded, no download.

- :mod:`.arith`: noisy arithmetic ("12+7" → "19"), demonstrations right with probability p;
- :mod:`.domains`: a four-domain preference world in RM-Bench's format (chat, code, math,
  safety), each answer in RM-Bench's three styles;
- :mod:`.personas`: the DSP personas, for promptable rewards (the domain diagonal);
- :mod:`.real_mini`: real-mini, real-text preference items written for a real small model;
- :mod:`.gsm8k`: GSM8K's rows and gold answers (lesson 09's GPU section).

The answer checkers are in :mod:`endorm_mini.verifiers`, sampling in :mod:`endorm_mini.sampling`.
"""
from ..bc import Demo
from .arith import ARITH_MAX, SLIPS, arith_answer, arith_demos, arith_problems, extract_answer, slips
from .domains import (BENIGN, CAPITALS, CODE_HELD_OUT, CODE_OPS, CODE_WORDS, COMPLY, DEMO_WEIGHTS,
                      HARMFUL, REFUSAL, STYLES, SUBSETS, domain_demos, domain_examples,
                      mini_rmbench, write_rmbench)
from .gsm8k import GSM8K_INSTRUCTION, gsm8k_gold, gsm8k_rows
from .real_mini import real_mini
from .personas import (PERSONAS, TOPICS, TOPICS_HELD_OUT, persona_answer, persona_pairs,
                       persona_prompt, persona_system)

__all__ = ["ARITH_MAX", "BENIGN", "CAPITALS", "CODE_HELD_OUT", "CODE_OPS", "CODE_WORDS", "COMPLY",
           "DEMO_WEIGHTS", "Demo", "GSM8K_INSTRUCTION", "HARMFUL", "PERSONAS", "REFUSAL", "SLIPS",
           "STYLES", "SUBSETS", "TOPICS", "TOPICS_HELD_OUT", "arith_answer", "arith_demos",
           "arith_problems", "domain_demos", "domain_examples", "extract_answer", "gsm8k_gold",
           "gsm8k_rows", "mini_rmbench", "persona_answer", "persona_pairs", "persona_prompt",
           "persona_system", "real_mini", "slips", "write_rmbench"]

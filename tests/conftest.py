"""Shared fixtures: tiny randomly initialised HF models with the kit's character tokenizer;
the real-model sections a notebook test may leave out."""
import ast
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is fastest (and kernels inherit it)

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from endorm_mini.zoo import char_tokenizer

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return char_tokenizer()


def make_gpt2(tokenizer, seed=0, n_positions=128):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2,
                        n_positions=n_positions, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config).eval()


def make_llama(tokenizer, seed=0, tie=False):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=tie,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(params=["gpt2", "llama"])
def tiny_model(request, tiny_tokenizer):
    maker = make_gpt2 if request.param == "gpt2" else make_llama
    return maker(tiny_tokenizer)


def lm_distribution(model, tokenizer, prompt, horizon):
    """Every complete response of a causal LM and its probability, by brute force: one
    forward per prefix (the reference the exact enumeration in ``limits`` is tested against)."""
    from endorm_mini.chat import prompt_ids
    from endorm_mini.mdp import TokenMDP, response_distribution
    context = prompt_ids(tokenizer, prompt)

    def policy(prefix):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([context + list(prefix)])).logits[0, -1]
        return torch.softmax(logits.double(), -1)
    return response_distribution(TokenMDP(len(tokenizer), tokenizer.eos_token_id, horizon), policy)


def spy_reward(function, calls, name):
    """A TRL reward function that records ``(completion ids, rewards)`` of each call in
    ``calls``; TRL logs it under ``name``."""
    def spy(prompts, completions, completion_ids, **kwargs):
        out = function(prompts, completions, completion_ids, **kwargs)
        calls.append(([list(c) for c in completion_ids], out))
        return out
    spy.__name__ = name
    return spy


REAL_MODEL_SECTION = "## On a real model"
BRANCH_NAMES = re.compile(r"\b(SETUP|MODEL|DEVICE|DTYPE)\b")


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names a cell's top-level statements read, names they bind), by the rules the grader's
    rebuild uses (``course.source``)."""
    from endorm_mini.course.source import _binds, _uses, notebooks_source
    body = ast.parse(notebooks_source(source)).body
    return set().union(*map(_uses, body)), set().union(*map(_binds, body))


def without_real_model_sections(nb) -> int:
    """Drop the code of each "On a real model" section (SmolLM2 on the CPU, the same code on
    both branches and with or without the exercises, run by the strict nbval test); how many
    cells were dropped. Refused, not dropped: a cell there that names the setup's
    branch-dependent values (GPU-branch code), that is an exercise, its check or a ``%%needs``
    cell, or a section that reads a name it does not define itself which, before it, only an
    exercise or a ``%%needs`` cell defines (in a learner's untouched copy the section would
    fail there, which the shortened run could not show)."""
    from endorm_mini.course.cells import check_ids, exercise_ids
    kept, dropped = [], 0
    learner, ordinary = set(), set()     # names defined before: by exercises and %%needs cells; by others
    section = None                       # (loads, stores) of the real-model section being dropped

    def close():
        if section is not None:
            risky = (section[0] - section[1]) & (learner - ordinary)
            assert not risky, f"a real-model section reads {sorted(risky)}, defined by an exercise or %%needs cell"

    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            close()
            section = (set(), set()) if cell.source.startswith(REAL_MODEL_SECTION) else None
        if cell.cell_type != "code":
            kept.append(cell)
            continue
        rests_on_exercises = bool(exercise_ids(cell.source) or check_ids(cell.source)
                                  or cell.source.startswith("%%needs"))
        if section is None:
            (learner if rests_on_exercises else ordinary).update(_names(cell.source)[1])
            kept.append(cell)
            continue
        assert not BRANCH_NAMES.search(cell.source), f"a real-model cell uses the setup: {cell.source[:200]!r}"
        assert not rests_on_exercises, f"a real-model cell rests on an exercise: {cell.source[:200]!r}"
        reads, binds = _names(cell.source)
        section[0].update(reads)
        section[1].update(binds)
        dropped += 1
    close()
    nb.cells = kept
    return dropped

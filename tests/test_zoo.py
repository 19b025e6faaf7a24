"""The shipped checkpoints load like hub models and show the quality their metadata claims."""
import json

import pytest
import torch

from conftest import make_gpt2, make_llama
from endorm_mini import models, verifiers, worlds, zoo
from endorm_mini.chat import prompt_ids
from endorm_mini.cli import main as cli_main

NAMES = ["tiny-arith", "tiny-domains"]


@pytest.fixture(scope="module")
def shipped():
    return {name: models.load(name, device="cpu") for name in NAMES}


def flat(figures, prefix=""):
    """{"a": {"b": 1}} -> {"a.b": 1}: quality figures as one flat dict of numbers."""
    out = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_both_checkpoints_are_shipped_small_and_described(shipped):
    """metadata.json describes the shipped weights: their parameter count, and the quality
    figures the recipe measures on them now (not only the stored figures against the bar)."""
    assert set(NAMES) <= set(zoo.available())
    for name in NAMES:
        folder = zoo.ZOO_DIR / name
        assert (folder / "model.safetensors").stat().st_size <= 2 * 1024 * 1024
        meta = zoo.metadata(name)
        for key in ("architecture", "parameters", "seed", "train", "train_seconds", "quality", "targets"):
            assert key in meta, f"{name}: metadata.json lacks {key}"
        model, tok = shipped[name]
        assert meta["parameters"] == sum(p.numel() for p in model.parameters())
        measured = zoo.RECIPES[name].quality(model, tok, device="cpu")
        # seeded sampling: equal with the versions that wrote the file; other torch builds may
        # draw other samples
        assert flat(measured) == pytest.approx(flat(meta["quality"]), abs=0.03), name
        assert zoo.check_targets(name, measured) == []                # the weights meet the bar


@pytest.mark.parametrize("name, arch", [("tiny-arith", "LlamaForCausalLM"), ("tiny-domains", "GPT2LMHeadModel")])
def test_load_through_from_pretrained(shipped, name, arch):
    model, tok = shipped[name]
    assert type(model).__name__ == arch and not model.training
    assert model.generation_config.pad_token_id == tok.pad_token_id == 0
    assert model.generation_config.eos_token_id == tok.eos_token_id == 2
    assert prompt_ids(tok, "1+1", system="S") == prompt_ids(zoo.char_tokenizer(), "1+1", system="S")


def test_a_local_folder_is_the_same_code_path(shipped, tmp_path):
    model, tok = shipped["tiny-domains"]
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = models.load(str(tmp_path), device="cpu")
    ids = torch.tensor([prompt_ids(tok, "What is 2+2?")])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert tok2.chat_template == tok.chat_template


def test_name_resolution_rule(tmp_path):
    with pytest.raises(ValueError, match="tiny-arith, tiny-domains"):
        models.load("tiny-arithmetic")
    assert models.resolve("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"   # hub ids pass through
    local = tmp_path / "tiny-mine"
    local.mkdir()
    assert models.resolve(str(local)) == str(local)                 # a real path wins over the tiny- rule
    assert models.resolve("tiny-arith") == str(zoo.ZOO_DIR / "tiny-arith")


def test_tiny_arith_greedy_right_sampling_not(shipped):
    model, tok = shipped["tiny-arith"]
    prompts = worlds.arith_problems()[::2]                          # a fixed half: 200 problems
    greedy = verifiers.arith_accuracy(model, tok, prompts, temperature=0.0, device="cpu")
    sampled = verifiers.arith_accuracy(model, tok, prompts, temperature=1.0, samples=2, seed=0, device="cpu")
    assert greedy >= 0.95
    assert sampled <= 0.8 and greedy - sampled >= 0.2
    stored = zoo.metadata("tiny-arith")["quality"]
    assert abs(sampled - stored["sampled_accuracy"]) < 0.06       # the stored figure is what the weights do


def test_tiny_domains_reward_prefers_the_right_answer(shipped):
    model, tok = shipped["tiny-domains"]
    figures = zoo.domains_quality(model, tok, n_per_domain=20, seed=1, device="cpu")
    assert figures["preference_accuracy"] >= 0.85
    assert figures["persona_accuracy"] >= 0.85
    assert set(figures["preference_by_subset"]) == {"chat", "code", "math", "safety-refuse", "safety-response"}


def test_quality_checks_reject_untrained_models(tiny_tokenizer):
    """Negative controls: the same checks on random weights are far from the targets."""
    arith = zoo.arith_quality(make_llama(tiny_tokenizer), tiny_tokenizer, samples=1, device="cpu")
    assert zoo.check_targets("tiny-arith", arith)
    domains = zoo.domains_quality(make_gpt2(tiny_tokenizer), tiny_tokenizer, n_per_domain=8, device="cpu")
    assert domains["preference_accuracy"] < 0.85 and zoo.check_targets("tiny-domains", domains)


@pytest.mark.parametrize("name", NAMES)
def test_retrain_smoke(name, tmp_path, capsys):
    meta = zoo.retrain(name, out_dir=tmp_path / name, steps=3, progress=False)
    assert json.loads((tmp_path / name / "metadata.json").read_text()) == meta
    assert meta["name"] == name and meta["train"]["steps"] == 3
    # The figures stored are what the saved weights do: re-measured after loading them.
    model, tok = models.load(str(tmp_path / name), device="cpu")
    assert type(model).__name__ == meta["architecture"] == zoo.metadata(name)["architecture"]
    assert meta["parameters"] == sum(p.numel() for p in model.parameters())
    assert zoo.RECIPES[name].quality(model, tok, device="cpu") == meta["quality"]
    out = capsys.readouterr().out
    assert "retrained" in out and "shipped" in out                # new figures beside the stored ones


def test_retrain_bad_input():
    with pytest.raises(ValueError, match="known: tiny-arith"):
        zoo.retrain("tiny-nope")
    with pytest.raises(ValueError, match="not both"):
        zoo.retrain("tiny-arith", out_dir="x", install=True)


def test_cli_zoo_list(capsys):
    assert cli_main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    assert "tiny-arith" in out and "tiny-domains" in out

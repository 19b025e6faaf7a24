"""``endorm-mini grpo --lora-rank R`` (issue 22): a LoRA adapter through peft on TRL's trainer.
Only the adapter trains (the base weights stay those on disk); the endogenous reward's reference
is the frozen base, whether it is the reward's own copy or, with ``--reuse-kl-reference``, the
policy with its adapter disabled (TRL's KL reference under LoRA: no copy at all); ``final/`` is
the merged model; without peft the flag is one line, exit 2."""
import importlib.util
import sys

import pytest
import torch
from conftest import spy_reward

pytest.importorskip("trl")

from endorm_mini import cli, models  # noqa: E402
from endorm_mini.scale.grpo import GRPORun, lora_config  # noqa: E402

TEMPERATURE = 0.7
needs_peft = pytest.mark.skipif(importlib.util.find_spec("peft") is None,
                                reason="peft is not installed (the scale and dev extras have it)")


def _base_weights():
    model, _ = models.load("tiny-arith", device="cpu", dtype="fp32")
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@needs_peft
def test_a_lora_run_trains_the_adapter_alone_against_the_frozen_base(tmp_path, capsys,
                                                                      monkeypatch):
    import trl

    seen = {}

    class Spy(trl.GRPOTrainer):
        def train(self, *args, **kwargs):
            out = super().train(*args, **kwargs)
            model = self.accelerator.unwrap_model(self.model)
            seen["trainable"] = {n for n, p in model.named_parameters() if p.requires_grad}
            seen["base"] = {n.replace("base_model.model.", "").replace(".base_layer", ""):
                            p.detach().clone() for n, p in model.named_parameters()
                            if "lora_" not in n}
            seen["lora_B"] = [p.detach().clone() for n, p in model.named_parameters()
                              if "lora_B" in n]
            seen["reward_model"] = self.reward_funcs[0].inner.scorer.model
            return out

    monkeypatch.setattr(trl, "GRPOTrainer", Spy)
    out = tmp_path / "lora"
    code = cli.main(["grpo", "--lora-rank", "4", "--steps", "2", "--out", str(out),
                     "--eval-problems", "0", "--save-every", "100"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert seen["trainable"] and all("lora_" in n for n in seen["trainable"])
    # all-linear: every projection of the decoder, not the LM head
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in seen["trainable"]} >= \
        {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert not any("lm_head" in n for n in seen["trainable"])
    base = _base_weights()
    assert set(seen["base"]) == set(base)
    assert all(torch.equal(seen["base"][n], base[n]) for n in base)     # the base did not move
    assert any(b.abs().max() > 0 for b in seen["lora_B"])               # the adapter did (B₀ = 0)
    reference = dict(seen["reward_model"].named_parameters())           # the reward's reference:
    assert all(torch.equal(reference[n].float(), base[n]) for n in base)  # the frozen base
    # final/ is the merged model, a whole model like any other; the adapter alone beside it
    merged, _ = models.load(str(out / "final"), device="cpu")
    assert any(not torch.equal(p, base[n]) for n, p in merged.named_parameters())
    assert (out / "final-adapter" / "adapter_config.json").exists()


def _rows():
    from endorm_mini.worlds import arith_answer, arith_problems

    return [{"prompt": [{"role": "user", "content": p}], "answer": str(arith_answer(p))}
            for p in arith_problems()[::7]]


def _reuse_with_lora(tmp_path, against):
    """One GRPO step of a LoRA policy whose adapter starts random (peft's
    ``init_lora_weights=False``: the policy is not the base from the first step), the reward
    reused from TRL's reference forward beside ``against``'s own eq. 12 on the same ids."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from endorm_mini.scale import kl_reference
    from endorm_mini.scale.reward import EndogenousRewardFunction

    path = models.resolve("tiny-arith")
    tokenizer = AutoTokenizer.from_pretrained(path)
    own, reused = [], []
    reuse = kl_reference.KLReferenceReward(TEMPERATURE, tokenizer.eos_token_id)
    funcs = [spy_reward(reuse, reused, "reused"),
             spy_reward(EndogenousRewardFunction(against, tokenizer, alpha=TEMPERATURE), own, "own")]
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                      max_completion_length=2, num_generations=4, per_device_train_batch_size=8,
                      max_steps=1, beta=0.01, learning_rate=1e-3, save_strategy="no",
                      activation_checkpointing=False, bf16=False, seed=0, disable_tqdm=True,
                      temperature=TEMPERATURE, logging_steps=1, reward_weights=[1.0, 0.0])
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                      init_lora_weights=False, task_type="CAUSAL_LM")
    trainer = kl_reference.reusing_trainer(GRPOTrainer)(
        model=path, processing_class=tokenizer, reward_funcs=funcs, args=args,
        train_dataset=Dataset.from_list(_rows()), peft_config=lora)
    assert trainer.ref_model is None     # TRL keeps no copy under LoRA: the adapter goes off
    trainer.kl_reference_reward = reuse
    policy = trainer.model
    trainer.train()
    return own, reused, policy


def _same_advantages(own, reused) -> bool:
    from endorm_mini.scale.reward import group_advantages

    assert len(own) == len(reused) == 1
    (ids, want), (same_ids, got) = own[0], reused[0]
    assert ids == same_ids
    return torch.allclose(group_advantages(torch.tensor(got), 4),
                          group_advantages(torch.tensor(want), 4), atol=1e-3)


@needs_peft
def test_with_lora_the_reused_reference_is_the_base_with_the_adapter_off(tmp_path):
    base, _ = models.load("tiny-arith", device="cpu", dtype="fp32")
    own, reused, _ = _reuse_with_lora(tmp_path, base)
    assert _same_advantages(own, reused)


@needs_peft
def test_the_adapted_policy_would_give_other_rewards(tmp_path):
    """The control: the same comparison against the adapted policy (its random adapter merged
    into a copy of the base) fails, so the test above tells the base from the policy."""
    import copy

    from peft import get_peft_model

    base, _ = models.load("tiny-arith", device="cpu", dtype="fp32")
    adapted = get_peft_model(copy.deepcopy(base), lora_config(GRPORun(lora_rank=4)))
    torch.manual_seed(0)
    for name, p in adapted.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    own, reused, _ = _reuse_with_lora(tmp_path, adapted.merge_and_unload().eval())
    assert not _same_advantages(own, reused)


@needs_peft
def test_lora_settings(tmp_path):
    run = GRPORun(out="x", lora_rank=8)
    assert run.lora_alpha == 16.0 and run.lora_targets() == "all-linear"
    config = lora_config(run)
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 16.0, 0.0)
    assert GRPORun(out="x", lora_rank=2, lora_target_modules="q_proj, v_proj").lora_targets() \
        == ["q_proj", "v_proj"]
    assert lora_config(GRPORun(out="x")) is None
    assert "lora_rank" not in GRPORun(out="x").settings()   # old run.json files still resume
    assert GRPORun(out="x", lora_rank=8).settings()["lora_rank"] == 8
    with pytest.raises(ValueError, match="lora_rank must be ≥ 0"):
        GRPORun(out="x", lora_rank=-1)


def test_without_peft_lora_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)   # find_spec("peft") is None: not installed
    code = cli.main(["grpo", "--lora-rank", "4", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "--lora-rank: peft is not installed" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@needs_peft
def test_lora_under_deepspeed_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    """A config that puts ``--lora-rank`` under DeepSpeed (accelerate fills GRPOConfig's
    ``deepspeed_plugin``) is refused: the merged final/ needs the whole weights on one process."""
    from endorm_mini.scale import grpo

    real = grpo.grpo_config

    def under_deepspeed(*args, **kwargs):
        config = real(*args, **kwargs)
        config.deepspeed_plugin = object()
        return config

    monkeypatch.setattr(grpo, "grpo_config", under_deepspeed)
    code = cli.main(["grpo", "--lora-rank", "4", "--steps", "2", "--eval-problems", "0",
                     "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "--lora-rank is for one GPU (or DDP), not DeepSpeed" in err, err
    assert len(err.strip().splitlines()) == 1

"""Issue 22: the endogenous reward from TRL's own KL reference forward (eq. 12 less the group's
V(s_1)), fp32 master weights, the policy's eos ids and template for the reward built the way
the CLI builds it (by name or folder), prompts rendered as TRL renders them (a BOS the
tokenizer adds to plain text), and a per-device batch that accounts for accumulation."""
import copy

import pytest
import torch
from conftest import spy_reward

pytest.importorskip("trl")

from endorm_mini import models  # noqa: E402
from endorm_mini.scale import grpo, kl_reference  # noqa: E402
from endorm_mini.scale.grpo_run import RankTally  # noqa: E402
from endorm_mini.scale.reward import (EndogenousRewardFunction, group_advantages,  # noqa: E402
                                      trainer_prompt_ids)

TEMPERATURE = 0.7   # α = T ≠ 1: TRL's reference log-probs are at T


def _rows(plain=False):
    from endorm_mini.worlds import arith_answer, arith_problems

    return [{"prompt": p if plain else [{"role": "user", "content": p}],
             "answer": str(arith_answer(p))} for p in arith_problems()[::7]]


def _trainer(path, funcs, tmp_path, beta=0.01, trainer_class=None, plain=False, steps=2):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(path)
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                      max_completion_length=2, num_generations=4, per_device_train_batch_size=8,
                      max_steps=steps, beta=beta, learning_rate=1e-3, save_strategy="no",
                      activation_checkpointing=False, bf16=False, seed=0, disable_tqdm=True,
                      temperature=TEMPERATURE, logging_steps=1, reward_weights=[1.0] +
                      [0.0] * (len(funcs) - 1))
    cls = trainer_class or GRPOTrainer
    return cls(model=path, processing_class=tokenizer, reward_funcs=funcs, args=args,
               train_dataset=Dataset.from_list(_rows(plain))), tokenizer


def test_reusing_trls_reference_gives_the_endogenous_advantages(tmp_path):
    """Beside the reward's own copy (eq. 12 in full), the reuse gives the same rewards less one
    V(s_1) per prompt, hence the same GRPO advantages, ended and cut completions alike."""
    from trl import GRPOTrainer

    path = models.resolve("tiny-arith")
    model, tokenizer = models.load("tiny-arith", device="cpu")
    own, reused = [], []
    reuse = kl_reference.KLReferenceReward(TEMPERATURE, tokenizer.eos_token_id)
    funcs = [spy_reward(reuse, reused, "reused"),
             spy_reward(EndogenousRewardFunction(model, tokenizer, alpha=TEMPERATURE), own, "own")]
    trainer, _ = _trainer(path, funcs, tmp_path,
                          trainer_class=kl_reference.reusing_trainer(GRPOTrainer))
    trainer.kl_reference_reward = reuse
    trainer.train()
    assert len(own) == len(reused) == 2
    endings = set()
    for (ids, want), (same_ids, got) in zip(own, reused):
        assert ids == same_ids
        endings |= {row[-1] == tokenizer.eos_token_id for row in ids}
        difference = torch.tensor(want) - torch.tensor(got)            # V(s_1) of each prompt
        assert torch.allclose(difference.view(-1, 4), difference.view(-1, 4)[:, :1], atol=1e-4)
        assert torch.allclose(group_advantages(torch.tensor(got), 4),
                              group_advantages(torch.tensor(want), 4), atol=1e-3)
    assert endings == {True, False}


def test_the_reuse_without_the_cut_completions_value_is_caught(tmp_path, monkeypatch):
    """The control: V(s_{T+1}) left out for cut completions breaks the equality above."""
    monkeypatch.setattr(kl_reference, "last_values",
                        lambda model, hidden, alpha: torch.zeros(hidden.size(0)))
    with pytest.raises(AssertionError):
        test_reusing_trls_reference_gives_the_endogenous_advantages(tmp_path)


@pytest.mark.parametrize("flags, message", [
    (dict(alpha=1.0, temperature=0.7, beta=0.01), "needs --alpha equal to --temperature"),
    (dict(beta=0.0), "needs --beta > 0"),
    (dict(beta=0.01, ref_model="tiny-domains"), "not --ref-model tiny-domains"),
    (dict(beta=0.01, reward="verifier"), "needs --reward endogenous or hybrid"),
])
def test_a_reuse_that_cannot_work_is_refused(flags, message):
    with pytest.raises(ValueError, match=message):
        grpo.GRPORun(reuse_kl_reference=True, **flags)


# ---------------------------------------------------------------- fp32 master weights
def test_the_policy_loads_in_fp32_and_a_1e_6_step_moves_it():
    """TRL loads the policy with ``model_init_kwargs``: fp32, so that under bf16 autocast a
    1e-6 AdamW step changes the weights (in bf16 almost none would move)."""
    from trl.trainer.utils import create_model_from_path

    config = grpo.grpo_config(grpo.GRPORun(out="unused"), [1.0, 0.0])
    kwargs = dict(config.model_init_kwargs)
    policy = create_model_from_path(models.resolve("tiny-arith"), **kwargs)
    assert all(p.dtype == torch.float32 for p in policy.parameters())
    assert moved_by_one_step(policy) > 0.9
    bf16 = create_model_from_path(models.resolve("tiny-arith"), **{**kwargs, "dtype": "bfloat16"})
    assert moved_by_one_step(bf16) < 0.1        # the control: pure bf16 loses the step


def moved_by_one_step(model) -> float:
    """Fraction of the weights one AdamW step at lr 1e-6 changes, the loss under bf16 autocast."""
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.0)
    ids = torch.tensor([[25, 26, 19, 31, 2]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    changed = sum(int((p.detach() != b).sum()) for p, b in zip(model.parameters(), before))
    return changed / sum(b.numel() for b in before)


# ---------------------------------------------------------------- built as the CLI builds it
@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    from endorm_mini.course.offline import random_qwen2

    return random_qwen2(tmp_path_factory.mktemp("qwen") / "model")


def test_every_eos_id_of_a_policy_loaded_by_name_ends_a_completion(qwen):
    """A Qwen-style folder declares two eos ids (<|im_end|>, <|endoftext|>); the reward built
    by the CLI from the folder's name takes both, so a completion ending in the second is not
    scored as cut."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qwen)
    funcs = grpo.reward_functions(grpo.GRPORun(model=str(qwen), dataset="x.jsonl",
                                               eval_problems=0), tokenizer, RankTally())
    reward = funcs[0].inner
    end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert set(reward.eos_token_ids) == {tokenizer.eos_token_id, end_of_text}
    assert tokenizer.eos_token_id != end_of_text
    prompts = [[{"role": "user", "content": "1+1"}]]
    ids = tokenizer("2", add_special_tokens=False)["input_ids"]
    ended = reward(prompts, [[{"role": "assistant", "content": "2"}]], [ids + [end_of_text]])[0]
    p_ids = trainer_prompt_ids(tokenizer, prompts)
    by_hand = reward.scorer.score_ids(p_ids, [ids + [end_of_text]], progress=False)[0]
    assert ended == pytest.approx(by_hand.total + by_hand.final_value, abs=1e-4)
    assert abs(by_hand.final_value) > 0.01      # scored as cut it would differ


def test_another_reference_renders_prompts_with_the_policys_template(tmp_path):
    """--ref-model whose folder has another chat template: the prompts are the policy's."""
    model, tokenizer = models.load("tiny-arith", device="cpu")
    other = copy.deepcopy(tokenizer)
    other.chat_template = "{% for m in messages %}<|user|>{{ m['content'] }}=={% endfor %}"
    folder = tmp_path / "reference"
    model.save_pretrained(folder)
    other.save_pretrained(folder)
    run = grpo.GRPORun(ref_model=str(folder), eval_problems=0)
    reward = grpo.reward_functions(run, tokenizer, RankTally())[0].inner
    prompts = [[{"role": "user", "content": "12+7"}]]
    assert reward._prompt_ids(prompts) == trainer_prompt_ids(tokenizer, prompts)
    assert trainer_prompt_ids(tokenizer, prompts) != trainer_prompt_ids(other, prompts)


# ---------------------------------------------------------------- rendered as TRL renders
def test_plain_text_prompts_get_the_special_tokens_trl_adds(tmp_path):
    """A tokenizer that puts a BOS before plain text: TRL's own prompt ids keep it, and so do
    ``trainer_prompt_ids`` (rendering with ``add_special_tokens=False`` would lose it)."""
    from tokenizers.processors import TemplateProcessing

    model, tokenizer = models.load("tiny-arith", device="cpu")
    bos = tokenizer.bos_token
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.bos_token_id)])
    tokenizer.chat_template = None     # plain text: no template
    folder = tmp_path / "with-bos"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    seen = []
    trainer, loaded = _trainer(str(folder), [lambda prompts, completions, **k: [0.0] *
                                             len(prompts)], tmp_path, beta=0.0, plain=True,
                               steps=1)
    generate = trainer._generate_and_score_completions

    def keep(inputs):
        out = generate(inputs)
        mask = out["prompt_mask"].bool()
        seen.append(([x["prompt"] for x in inputs],
                     [row[m].tolist() for row, m in zip(out["prompt_ids"], mask)]))
        return out
    trainer._generate_and_score_completions = keep
    trainer.train()
    prompts, trl_ids = seen[0]
    assert all(ids[0] == tokenizer.bos_token_id for ids in trl_ids)
    assert trainer_prompt_ids(loaded, prompts) == trl_ids


# ---------------------------------------------------------------- the batch of a step
@pytest.mark.parametrize("world, accumulation", [(1, 1), (1, 4), (2, 2), (8, 16)])
def test_a_step_is_prompts_times_generations_whatever_the_accumulation(monkeypatch, world,
                                                                        accumulation):
    """TRL's optimizer step sees per_device × accumulation × processes completions: that is
    --prompts-per-step × --num-generations for every split (the 7B recipe's: 64 × 8)."""
    monkeypatch.setattr(grpo, "world_size", lambda: world)   # as torchrun's WORLD_SIZE says
    run = grpo.GRPORun(out="unused", prompts_per_step=64, num_generations=8,
                       gradient_accumulation_steps=accumulation)
    config = grpo.grpo_config(run, [1.0, 0.0])
    step = config.per_device_train_batch_size * config.gradient_accumulation_steps * world
    assert step == 64 * 8

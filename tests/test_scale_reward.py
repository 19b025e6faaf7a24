"""The endogenous reward as a TRL reward function (issue 13; eq. 12; ``endorm_mini.scale``).

The reward function must give, on the trainer's ids, what ``EndogenousReward.score`` gives on
the same texts: the prompt rendered as TRL renders it (a chat template for chat prompts, none
for plain text), eos-ended completions terminal (V = 0), cut ones keeping their last V. Its
group baseline must be TRL's. Each comparison is shown to reject a known wrong implementation.
"""
import contextlib
import copy
import math

import pytest
import torch

from endorm_mini import models, zoo
from endorm_mini.reward import EndogenousReward
from endorm_mini.scale import reward as sr
from endorm_mini.scale.reward import EndogenousRewardFunction, completion_rewards, group_advantages
from endorm_mini.verifiers import arith_verifier

SYSTEM = "You add numbers."
# (prompt, completion text): a group of three completions for each prompt, of several lengths
CASES = [("12+7", "19"), ("12+7", "21"), ("12+7", "9"), ("3+4", "7"), ("3+4", "17"), ("3+4", "7 ")]


@pytest.fixture(scope="module")
def arith():
    model, tokenizer = models.load("tiny-arith", device="cpu")
    return model, tokenizer


@pytest.fixture(scope="module")
def scorer(arith):
    return EndogenousReward(*arith, device="cpu")


def trainer_batch(tokenizer, kind: str, ended: bool):
    """``(prompts, completions, completion_ids)`` as TRL hands them to a reward function."""
    eos = [tokenizer.eos_token_id] if ended else []
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] + eos for _, text in CASES]
    if kind == "plain":
        return [p for p, _ in CASES], [t for _, t in CASES], ids
    system = [{"role": "system", "content": SYSTEM}] if kind == "system" else []
    prompts = [system + [{"role": "user", "content": p}] for p, _ in CASES]
    return prompts, [[{"role": "assistant", "content": t}] for _, t in CASES], ids


def expected_rewards(model, tokenizer, kind: str, ended: bool, reduce: str) -> list[float]:
    """``EndogenousReward.score`` on the same texts. A cut completion is the ended one less its
    eos: its total is the ended response's rewards without the last (eq. 12, V(s_{T+1}) kept).
    TRL renders a plain-text prompt with no chat template: so does a template-less tokenizer."""
    if kind == "plain":
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.chat_template = None
    er = EndogenousReward(model, tokenizer, device="cpu")
    out = []
    for prompt, text in CASES:
        with pytest.warns(UserWarning, match="no chat template") if kind == "plain" \
                else contextlib.nullcontext():
            result = er.score(prompt, text, system=SYSTEM if kind == "system" else None)
        total = result.total if ended else float(result.rewards[:-1].sum())
        n = len(result.rewards) if ended else len(result.rewards) - 1
        out.append(total / n if reduce == "mean" else total)
    return out


def disagreement(reward_function, model, tokenizer) -> float:
    """The largest |reward function − score| over every dataset kind, ending and reduction."""
    worst = 0.0
    for kind in ("plain", "chat", "system"):
        for ended in (True, False):
            for reduce in ("sum", "mean"):
                reward_function.reduce = reduce
                got = reward_function(*trainer_batch(tokenizer, kind, ended))
                want = expected_rewards(model, tokenizer, kind, ended, reduce)
                worst = max(worst, max(abs(g - w) for g, w in zip(got, want)))
    return worst


def test_reward_function_equals_score_on_the_same_texts(arith):
    """Plain-text and chat datasets, with and without a system prompt, ended and cut, sum and
    mean: the reward function on the trainer's ids is EndogenousReward.score (eq. 12)."""
    model, tokenizer = arith
    assert disagreement(EndogenousRewardFunction(model, tokenizer), model, tokenizer) < 1e-4
    # and the cases tell the renderings and endings apart (else the test could not fail)
    plain = expected_rewards(model, tokenizer, "plain", True, "sum")
    chat = expected_rewards(model, tokenizer, "chat", True, "sum")
    cut = expected_rewards(model, tokenizer, "chat", False, "sum")
    assert min(abs(a - b) for a, b in zip(plain, chat)) > 0.1
    assert min(abs(a - b) for a, b in zip(chat, cut)) > 0.1


def _without_terminal(monkeypatch, tokenizer):
    monkeypatch.setattr(sr, "_default_eos_ids", lambda model, tok: [])


def _template_on_plain_text(monkeypatch, tokenizer):
    from endorm_mini.chat import prompt_ids
    monkeypatch.setattr(sr, "trainer_prompt_ids",
                        lambda tok, prompts, kw=None: [prompt_ids(tok, p) for p in prompts])


def _retokenised_text(monkeypatch, tokenizer):
    real = sr.completion_rewards

    def retokenise(scorer, p_ids, c_ids, eos, reduce="sum"):
        texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in c_ids]
        c_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                 for t in texts]
        return real(scorer, p_ids, c_ids, eos, reduce)
    monkeypatch.setattr(sr, "completion_rewards", retokenise)


def _mean_without_eos(monkeypatch, tokenizer):
    real = sr.completion_rewards

    def mean(scorer, p_ids, c_ids, eos, reduce="sum"):
        totals = real(scorer, p_ids, c_ids, eos, "sum")
        if reduce == "sum":
            return totals
        return [t / max(1, len([i for i in ids if i != tokenizer.eos_token_id]))
                for t, ids in zip(totals, c_ids)]
    monkeypatch.setattr(sr, "completion_rewards", mean)


@pytest.mark.parametrize("mistake", [_without_terminal, _template_on_plain_text,
                                     _retokenised_text, _mean_without_eos])
def test_a_wrong_reward_function_is_rejected(mistake, arith, monkeypatch):
    """Terminal V dropped, the chat template put on plain text, the completion re-tokenised
    from its text, the mean over the tokens before eos: the comparison above fails on each."""
    model, tokenizer = arith
    mistake(monkeypatch, tokenizer)
    assert disagreement(EndogenousRewardFunction(model, tokenizer), model, tokenizer) > 0.05


def test_completion_rewards_by_hand(arith, scorer):
    """Sum = α Σ log π̂ + V(s_1) − V(s_{T+1}) (eq. 12 telescoped), V(s_{T+1}) = 0 after an eos id
    (any of several); mean = sum / T with the eos counted."""
    model, tokenizer = arith
    from endorm_mini.chat import prompt_ids
    p = prompt_ids(tokenizer, "12+7")
    eos = tokenizer.eos_token_id
    digits = tokenizer("19", add_special_tokens=False)["input_ids"]
    full = scorer.score_ids([p], [digits + [eos]], progress=False)[0]
    lp, v1 = float(full.logprobs.sum()), float(full.values[0])
    ended, cut = completion_rewards(scorer, [p, p], [digits + [eos], digits], eos)
    assert ended == pytest.approx(lp + v1, abs=1e-4)
    assert cut == pytest.approx(float(full.rewards[:-1].sum()), abs=1e-4)
    assert cut == pytest.approx(float(full.logprobs[:-1].sum()) + v1 - float(full.values[-1]),
                                abs=1e-4)
    mean = completion_rewards(scorer, [p], [digits + [eos]], eos, reduce="mean")[0]
    assert mean == pytest.approx(ended / 3, abs=1e-5)
    # "1" as a second eos id: "1" then ends the completion, so its V(s_2) is 0
    one = digits[:1]
    as_eos = completion_rewards(scorer, [p], [one], [eos, one[0]])[0]
    plain = scorer.score_ids([p], [one], progress=False)[0]
    assert as_eos == pytest.approx(plain.total + plain.final_value, abs=1e-4)
    assert abs(plain.final_value) > 0.1


def test_repeated_completions_are_scored_once_and_rewarded_alike(arith, scorer, monkeypatch):
    """GRPO's groups repeat completions: each distinct (prompt, completion) is one scored row,
    and every copy gets its reward, in the caller's order."""
    model, tokenizer = arith
    prompts, completions, ids = trainer_batch(tokenizer, "chat", ended=True)
    p_ids = sr.trainer_prompt_ids(tokenizer, prompts)
    alone = completion_rewards(scorer, p_ids, ids, tokenizer.eos_token_id)
    order = [0, 3, 0, 0, 5, 3, 1, 0]
    rows = []
    real = scorer.score_ids
    monkeypatch.setattr(scorer, "score_ids",
                        lambda p, c, **k: rows.append(len(c)) or real(p, c, **k))
    got = completion_rewards(scorer, [p_ids[i] for i in order], [ids[i] for i in order],
                             tokenizer.eos_token_id)
    assert rows == [4]
    assert got == pytest.approx([alone[i] for i in order], abs=1e-5)


def test_every_eos_id_of_the_generation_config_ends_a_completion(arith):
    """TRL stops on the tokenizer's eos and every eos id of the model's generation config
    (a chat model's end-of-turn token): the reward function makes each of them terminal."""
    model, tokenizer = arith
    model = copy.deepcopy(model)
    turn_end = tokenizer.convert_tokens_to_ids("<|user|>")
    model.generation_config.eos_token_id = [turn_end]
    rf = EndogenousRewardFunction(model, tokenizer)
    assert rf.eos_token_ids == [tokenizer.eos_token_id, turn_end]
    prompts, completions, ids = trainer_batch(tokenizer, "chat", ended=False)
    cut = rf(prompts, completions, ids)
    ended = rf(prompts, completions, [row + [turn_end] for row in ids])
    p_ids = sr.trainer_prompt_ids(tokenizer, prompts)
    by_hand = rf.scorer.score_ids(p_ids, [row + [turn_end] for row in ids], progress=False)
    assert ended == pytest.approx([r.total + r.final_value for r in by_hand], abs=1e-4)
    assert max(abs(a - b) for a, b in zip(ended, cut)) > 0.1


def test_v_s1_cancels_under_the_group_baseline(arith, scorer):
    """Every completion of a group starts at s_1, so V(s_1) drops out of GRPO's advantages of
    the sum (eq. 12): the advantages of α Σ log π̂ − V(s_{T+1}) are the same."""
    model, tokenizer = arith
    prompts, completions, ids = trainer_batch(tokenizer, "chat", ended=False)
    p_ids = sr.trainer_prompt_ids(tokenizer, prompts)
    results = scorer.score_ids(p_ids, ids, progress=False)
    totals = torch.tensor([r.total for r in results])
    v1 = torch.tensor([float(r.values[0]) for r in results])
    assert v1.std() > 0.01            # the two prompts' V(s_1) differ: cancelling is not trivial
    for scale in (True, False):
        assert torch.allclose(group_advantages(totals, 3, scale),
                              group_advantages(totals - v1, 3, scale), atol=1e-4)
    assert not torch.allclose(group_advantages(totals, 6), group_advantages(totals - v1, 6),
                              atol=1e-2)   # across prompts it would not cancel


# ---------------------------------------------------------------- group advantages vs TRL
def trl_advantages(rewards, G, scale=True):
    """TRL 1.16 ``trl/trainer/grpo_trainer.py`` lines 2761–2787 and 2810, with TRL's own nanstd."""
    from trl.trainer.utils import nanstd
    mean = torch.nanmean(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    if G > 1:
        std = nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    else:
        std = torch.zeros_like(rewards)
    advantages = rewards - mean
    if scale:
        advantages = advantages / (std + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def reward_cases():
    g = torch.Generator().manual_seed(0)
    with_nan = torch.randn(12, generator=g)
    with_nan[5] = float("nan")
    lonely = torch.tensor([1.0, float("nan"), 3.0, 3.0])     # one scorable reward in group 1
    return [(torch.randn(16, generator=g) * 5, 4), (with_nan, 4), (with_nan, 3), (lonely, 2),
            (torch.randn(5, generator=g), 1), (torch.tensor([2.0, 2.0, 1.0, 3.0]), 2)]


def test_group_advantages_by_hand():
    """[1, 2 | 3, 5]: group means 1.5 and 4; sample stds √0.5 and √2."""
    got = group_advantages(torch.tensor([1.0, 2.0, 3.0, 5.0]), 2)
    s1, s2 = math.sqrt(0.5) + 1e-4, math.sqrt(2.0) + 1e-4
    assert torch.allclose(got, torch.tensor([-0.5 / s1, 0.5 / s1, -1 / s2, 1 / s2]))
    assert torch.equal(group_advantages(torch.tensor([1.0, 2.0]), 2, scale=False),
                       torch.tensor([-0.5, 0.5]))


@pytest.mark.parametrize("scale", [True, False])
def test_group_advantages_are_trls(scale):
    for rewards, G in reward_cases():
        want = trl_advantages(rewards, G, scale)
        assert torch.allclose(group_advantages(rewards, G, scale), want, atol=1e-6), (rewards, G)


def _population_std(rewards, G, scale=True, eps=1e-4):
    grouped = rewards.view(-1, G)
    return ((grouped - grouped.mean(1, keepdim=True))
            / (grouped.std(1, unbiased=False, keepdim=True) + eps)).view(-1)


def _batch_mean(rewards, G, scale=True, eps=1e-4):
    return (rewards - rewards.mean()) / (rewards.view(-1, G).std(1).repeat_interleave(G) + eps)


def _std_of_all(rewards, G, scale=True, eps=1e-4):
    grouped = rewards.view(-1, G)
    return ((grouped - grouped.mean(1, keepdim=True)) / (rewards.std() + eps)).view(-1)


@pytest.mark.parametrize("mistake", [_population_std, _batch_mean, _std_of_all])
def test_wrong_group_advantages_are_rejected(mistake):
    """The comparison with TRL catches a population std, a batch mean and a batch std."""
    rewards, G = reward_cases()[0]
    assert not torch.allclose(mistake(rewards, G), trl_advantages(rewards, G), atol=1e-3)


# ---------------------------------------------------------------- the object itself
def test_hybrid_adds_the_weighted_verifier(arith):
    model, tokenizer = arith
    prompts, completions, ids = trainer_batch(tokenizer, "chat", ended=True)
    plain = EndogenousRewardFunction(model, tokenizer)(prompts, completions, ids)
    hybrid = EndogenousRewardFunction(model, tokenizer, verifier=arith_verifier,
                                      verifier_weight=2.5)
    checked = arith_verifier(prompts, completions)
    assert checked == [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]           # "7 " is "7" once stripped
    logged = []
    got = hybrid(prompts, completions, ids, answer=["x"] * 6,    # dataset columns pass through
                 log_metric=lambda name, value: logged.append((name, value)))
    assert got == pytest.approx([p + 2.5 * c for p, c in zip(plain, checked)], abs=1e-5)
    assert hybrid.__name__ == "endogenous_hybrid_reward"
    assert [name for name, _ in logged] == ["endogenous_hybrid_reward/endogenous",
                                            "endogenous_hybrid_reward/verifier"]
    assert [v for _, v in logged] == pytest.approx([sum(plain) / 6, 0.5], abs=1e-5)


def test_a_model_name_loads_a_frozen_fp32_reference_on_the_cpu(arith):
    """Loaded once, here, on this process's device (accelerate's; the CPU here), fp32, eval."""
    rf = EndogenousRewardFunction("tiny-arith")
    model = rf.scorer.model
    assert rf.__name__ == "endogenous_reward"
    assert not model.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" and not p.requires_grad
               for p in model.parameters())
    _, tokenizer = arith
    prompts, completions, ids = trainer_batch(tokenizer, "chat", ended=True)
    assert rf(prompts, completions, ids) == pytest.approx(
        EndogenousRewardFunction(*arith)(prompts, completions, ids), abs=1e-5)


def test_bad_input_is_refused(arith):
    model, tokenizer = arith
    rf = EndogenousRewardFunction(model, tokenizer)
    prompts, completions, ids = trainer_batch(tokenizer, "chat", ended=True)
    empty = [list(i) for i in ids]
    empty[1] = []
    with pytest.raises(ValueError, match=r"completion_ids\[1\] has no ids"):
        rf(prompts, completions, empty)
    beyond = [list(i) for i in ids]
    beyond[2] = beyond[2][:-1] + [len(tokenizer) + 7]
    with pytest.raises(ValueError, match="completion 2: response token id 110 is not in the "
                                         "model's vocabulary"):
        rf(prompts, completions[:2] + [[{"role": "assistant", "content": ""}]] + completions[3:],
           beyond)
    with pytest.raises(ValueError, match="5 prompts, 6 completions and 6 completion_ids"):
        rf(prompts[:5], completions, ids)
    with pytest.raises(ValueError, match="prompts are all strings or all chat-message"):
        rf(["12+7"] + prompts[1:], completions, ids)
    with pytest.raises(ValueError, match="reduce must be one of"):
        EndogenousRewardFunction(model, tokenizer, reduce="max")
    with pytest.raises(ValueError, match="verifier_weight must be a finite number, got inf"):
        EndogenousRewardFunction(model, tokenizer, verifier=arith_verifier,
                                 verifier_weight=math.inf)
    with pytest.raises(ValueError, match="tokenizer: a loaded model needs its tokenizer"):
        EndogenousRewardFunction(model)
    with pytest.raises(ValueError, match="verifier's reward for completion 0 is nan"):
        EndogenousRewardFunction(model, tokenizer, verifier=lambda p, c, **k: [math.nan] * 6)(
            prompts, completions, ids)
    with pytest.raises(ValueError, match="group_size 4 does not divide the 6 rewards"):
        group_advantages(torch.zeros(6), 4)


def test_a_reference_whose_tokenizer_differs_from_the_policys_is_refused(arith):
    """Named both ways: at construction (policy_tokenizer) and at the first call (the trainer
    decoded the ids to other text than the reference's tokenizer does)."""
    model, tokenizer = arith
    policy = zoo.char_tokenizer("0123456789+-= ")
    policy.name_or_path = "digits-policy"
    with pytest.raises(ValueError, match=r"reference's tokenizer \('.*tiny-arith', 103 tokens\) "
                                         r"differs from the policy's \('digits-policy', 21"):
        EndogenousRewardFunction(model, tokenizer, policy_tokenizer=policy)
    EndogenousRewardFunction(model, tokenizer, policy_tokenizer=copy.deepcopy(tokenizer))
    rf = EndogenousRewardFunction(model, tokenizer)
    prompts, _, _ = trainer_batch(tokenizer, "chat", ended=True)
    ids = [policy("19", add_special_tokens=False)["input_ids"]] * 6   # the policy's ids for "19"
    completions = [[{"role": "assistant", "content": "19"}]] * 6
    with pytest.raises(ValueError, match="decodes completion 0 as .* but the trainer decoded it "
                                         "as '19': the policy's tokenizer differs"):
        rf(prompts, completions, ids)


# ---------------------------------------------------------------- inside TRL itself
def _trl_run(trainer_name: str, reward_function, out_dir, steps: int = 3):
    """A few steps of TRL's trainer on tiny-arith, the policy a fresh copy of the zoo model."""
    from datasets import Dataset
    import trl

    from endorm_mini.tasks import arith_answer, arith_problems

    model, tokenizer = models.load("tiny-arith", device="cpu")
    rows = [{"prompt": [{"role": "user", "content": p}], "answer": str(arith_answer(p))}
            for p in arith_problems()[::7]]
    Config = getattr(trl, f"{trainer_name}Config")
    Trainer = getattr(trl, f"{trainer_name}Trainer")
    args = Config(output_dir=str(out_dir), use_cpu=True, report_to="none", max_completion_length=2,
                  num_generations=4, per_device_train_batch_size=8, max_steps=steps, beta=0.0,
                  learning_rate=1e-3, save_strategy="no", activation_checkpointing=False,
                  bf16=False, seed=0, disable_tqdm=True, logging_steps=1)
    trainer = Trainer(model=model, processing_class=tokenizer, reward_funcs=[reward_function],
                      args=args, train_dataset=Dataset.from_list(rows))
    return trainer, tokenizer


def test_grpo_trainer_calls_it_with_its_ids_and_uses_trls_group_advantages(arith, tmp_path):
    """TRL's GRPOTrainer, 3 steps: the reward function gets the generated ids (eos-ended and
    cut at max_completion_length = 2), returns finite rewards, and TRL's advantages are
    ``group_advantages`` of them."""
    calls = []
    reward = EndogenousRewardFunction(*arith)

    def spy(prompts, completions, completion_ids, **kwargs):
        out = reward(prompts, completions, completion_ids, **kwargs)
        calls.append((completion_ids, out))
        return out
    spy.__name__ = reward.__name__
    trainer, tokenizer = _trl_run("GRPO", spy, tmp_path)
    advantages = []
    generate = trainer._generate_and_score_completions

    def keep_advantages(inputs):
        out = generate(inputs)
        advantages.append(out["advantages"].detach().clone())
        return out
    trainer._generate_and_score_completions = keep_advantages
    trainer.train()
    assert len(calls) == 3 and len(advantages) == 3
    eos = tokenizer.eos_token_id
    endings = set()
    for (ids, rewards), trl_adv in zip(calls, advantages):
        assert all(isinstance(t, int) for row in ids for t in row)
        assert all(math.isfinite(r) for r in rewards) and len(rewards) == 8
        endings |= {row[-1] == eos for row in ids}
        assert all(row[-1] == eos or len(row) == 2 for row in ids)
        assert torch.allclose(group_advantages(torch.tensor(rewards), 4), trl_adv, atol=1e-5)
    assert endings == {True, False}       # both contracts were exercised
    logged = [h for h in trainer.state.log_history if "rewards/endogenous_reward/mean" in h]
    assert len(logged) == 3               # TRL logs it under its __name__


def test_rloo_trainer_takes_it_too(arith, tmp_path):
    """RLOOTrainer calls reward functions the same way: the hybrid, per-token mean."""
    calls = []
    reward = EndogenousRewardFunction(*arith, verifier=arith_verifier, reduce="mean")

    def spy(prompts, completions, completion_ids, **kwargs):
        calls.append(reward(prompts, completions, completion_ids, **kwargs))
        return calls[-1]
    spy.__name__ = reward.__name__
    trainer, _ = _trl_run("RLOO", spy, tmp_path, steps=2)
    trainer.train()
    assert len(calls) == 2 and all(math.isfinite(r) for c in calls for r in c)


def test_importing_it_imports_no_engine():
    """trl, accelerate and datasets load only inside the functions that need them."""
    import subprocess
    import sys
    code = ("import sys, endorm_mini.scale.reward; "
            "print(sorted(m for m in ('trl', 'accelerate', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

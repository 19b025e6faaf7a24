"""Behaviour cloning (eq. 2): the loss by hand, prompt tokens excluded, a short run learns."""
import math

import pytest
import torch

from conftest import make_gpt2, make_llama
from endorm_mini.bc import BCConfig, collate, next_token_loss, tokenize_examples, train_bc
from endorm_mini.chat import prompt_ids, response_ids


def hand_loss(logits, labels, mask):
    """Eq. 2 with explicit loops: -mean over actions t of log softmax(logits[t-1])[labels[t]]."""
    total, n = 0.0, 0
    B, T, V = logits.shape
    for b in range(B):
        for t in range(1, T):
            if mask[b, t]:
                row = [float(x) for x in logits[b, t - 1]]
                log_z = math.log(sum(math.exp(x) for x in row))
                total -= row[int(labels[b, t])] - log_z
                n += 1
    return total / n


@pytest.fixture
def toy_batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.randint(0, 7, (2, 5), generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 1, 0]], dtype=torch.bool)
    return logits, labels, mask


def test_loss_equals_hand_computation(toy_batch):
    logits, labels, mask = toy_batch
    assert next_token_loss(logits, labels, mask).item() == pytest.approx(hand_loss(logits, labels, mask), abs=1e-6)


def wrong_unshifted(logits, labels, mask):
    """A common mistake: logits at t scored against the token at t (no shift)."""
    logp = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return -(logp * mask).sum() / mask.sum()


def wrong_with_prompt(logits, labels, mask):
    """Another: imitating the prompt tokens too."""
    full = torch.ones_like(mask)
    full[:, 0] = False
    return next_token_loss(logits, labels, full)


@pytest.mark.parametrize("mutant", [wrong_unshifted, wrong_with_prompt])
def test_hand_check_rejects_mutants(toy_batch, mutant):
    logits, labels, mask = toy_batch
    assert abs(mutant(logits, labels, mask).item() - hand_loss(logits, labels, mask)) > 1e-3


def test_prompt_and_padding_tokens_get_no_gradient(toy_batch):
    logits, labels, mask = toy_batch
    logits = logits.clone().requires_grad_(True)
    next_token_loss(logits, labels, mask).backward()
    # logits at t-1 predict token t: only states just before an action have a gradient.
    predicts_action = torch.zeros_like(mask)
    predicts_action[:, :-1] = mask[:, 1:]
    grad_norm = logits.grad.abs().sum(-1)
    assert (grad_norm[~predicts_action] == 0).all()
    assert (grad_norm[predicts_action] > 0).all()


def test_bad_masks_are_refused(toy_batch):
    logits, labels, mask = toy_batch
    with pytest.raises(ValueError, match="nothing to imitate"):
        next_token_loss(logits, labels, torch.zeros_like(mask))
    first = mask.clone()
    first[0, 0] = True
    with pytest.raises(ValueError, match="first token"):
        next_token_loss(logits, labels, first)


def test_collate_masks_response_and_eos_only(tiny_tokenizer):
    data = tokenize_examples(tiny_tokenizer, [("12+7", "19"), {"prompt": "1+1", "response": "2", "system": "S"}])
    input_ids, attn, actions = collate(data, tiny_tokenizer.pad_token_id)
    p0 = prompt_ids(tiny_tokenizer, "12+7")
    r0 = response_ids(tiny_tokenizer, "19")
    assert input_ids[0, :len(p0) + len(r0)].tolist() == p0 + r0
    assert input_ids[0, actions[0]].tolist() == r0                       # "1", "9", eos
    p1 = prompt_ids(tiny_tokenizer, "1+1", system="S")
    assert input_ids[1, actions[1]].tolist() == response_ids(tiny_tokenizer, "2")
    assert attn[1].sum().item() == len(p1) + 2 and not actions[1, len(p1) + 2:].any()


def test_prompt_tokens_do_not_change_the_loss(tiny_tokenizer):
    """Changing only the logits at prompt states that predict prompt tokens leaves the loss unchanged."""
    model = make_gpt2(tiny_tokenizer)
    data = tokenize_examples(tiny_tokenizer, [("3+4", "7"), ("10+10", "20")])
    ids, attn, actions = collate(data, tiny_tokenizer.pad_token_id)
    logits = model(input_ids=ids, attention_mask=attn).logits.detach()
    base = next_token_loss(logits, ids, actions)
    noisy = logits.clone()
    n_prompt = min(n for _, n in data)
    noisy[:, :n_prompt - 1] += 5 * torch.randn_like(noisy[:, :n_prompt - 1])
    assert next_token_loss(noisy, ids, actions).item() == pytest.approx(base.item(), abs=1e-6)


@pytest.mark.parametrize("maker", [make_gpt2, make_llama])
def test_short_run_lowers_the_loss(tiny_tokenizer, maker):
    model = maker(tiny_tokenizer)
    examples = [(f"{a}+{b}", str(a + b)) for a in range(4) for b in range(4)]
    config = BCConfig(steps=60, batch_size=16, lr=1e-2, warmup=5, seed=0, device="cpu", progress=False)
    losses = train_bc(model, tiny_tokenizer, examples, config)
    assert len(losses) == 60 and not model.training
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:5]) / 5


def test_train_is_seeded(tiny_tokenizer):
    examples = [(f"{a}+{b}", str(a + b), "sys") for a in range(3) for b in range(3)]
    config = BCConfig(steps=5, batch_size=4, seed=3, device="cpu", progress=False)
    runs = [train_bc(make_llama(tiny_tokenizer, seed=1), tiny_tokenizer, examples, config) for _ in range(2)]
    assert runs[0] == runs[1]


def test_too_long_demonstration_is_refused(tiny_tokenizer):
    model = make_gpt2(tiny_tokenizer, n_positions=16)
    with pytest.raises(ValueError, match="context is 16"):
        train_bc(model, tiny_tokenizer, [("1+1", "2" * 30)], BCConfig(steps=1, progress=False))
    with pytest.raises(ValueError, match="example 0"):
        train_bc(model, tiny_tokenizer, [("1+1",)], BCConfig(steps=1, progress=False))


def test_epoch_batches_cover_every_example_once_and_bucket_by_length():
    from endorm_mini.bc import _epoch_batches

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 100, (640,), generator=g).tolist()
    padded = {}
    for bucket in (1, 8):
        config = BCConfig(batch_size=32, bucket=bucket)
        batches = _epoch_batches(lengths, config, torch.Generator().manual_seed(1))
        assert sorted(i for b in batches for i in b) == list(range(640))
        assert batches == _epoch_batches(lengths, config, torch.Generator().manual_seed(1))
        padded[bucket] = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded[8] < 0.8 * padded[1]

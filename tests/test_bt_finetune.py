"""The Bradley–Terry reward model fine-tuned with its backbone (eq. 4): the first step is
Adam's step on eq. 4's gradient for the minibatch drawn, backbone included; the caller's
model is left alone."""
import copy

import pytest
import torch

from conftest import make_llama
from endorm_mini.bench.bradley_terry import BradleyTerryRM, BTConfig, bt_loss, train_bradley_terry


def test_backbone_finetuning_takes_the_first_adam_step_of_eq4(tiny_tokenizer):
    model = make_llama(tiny_tokenizer, seed=4)        # no dropout: one step is deterministic
    before = [p.detach().clone() for p in model.parameters()]
    pairs = [(f"q{k}?", f"yes {k}", f"no {k} at all") for k in range(8)]
    cfg = BTConfig(steps=1, lr=1e-3, batch_size=4, train_backbone=True, device="cpu",
                   progress=False, seed=0)
    rm, history = train_bradley_terry(model, tiny_tokenizer, pairs, cfg)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))   # a copy was trained
    # By hand: the same seeded head, the minibatch the trainer draws, eq. 4.
    torch.manual_seed(cfg.seed)
    ref = BradleyTerryRM(copy.deepcopy(model), tiny_tokenizer)
    draw = torch.Generator().manual_seed(cfg.seed)
    mb = [pairs[i] for i in torch.randint(len(pairs), (cfg.batch_size,), generator=draw).tolist()]

    def reward(k):                                    # R(x, y) for the chosen (1) or rejected (2)
        return ref.head(ref.features([ref.sequence(pair[0], pair[k]) for pair in mb])).squeeze(-1)
    loss = bt_loss(reward(1), reward(2))
    assert history == pytest.approx([float(loss.detach())], abs=1e-6)
    loss.backward()
    # Adam's first step: m̂ = g, v̂ = g², so Δθ = −lr·g/(|g| + eps) coordinate by coordinate.
    moved = 0
    for (name, new), old in zip(rm.named_parameters(), ref.parameters()):
        g = old.grad
        assert g is not None, name                                 # the backbone is trained too
        sure = g.abs() > 1e-6                         # where the sign of g is not round-off
        expected = -cfg.lr * g / (g.abs() + 1e-8)
        torch.testing.assert_close((new - old)[sure], expected[sure], atol=1e-7, rtol=1e-3)
        moved += int(sure.sum())
    assert moved > 1000

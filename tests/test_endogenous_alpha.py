"""``reward.endogenous_rewards``, the tensor function PPO scores rollouts with, at α ≠ 1:
log π̂ = log softmax(f̂/α) (eq. 10), V = α logsumexp(f̂/α) (eq. 11), and
r̂ = f̂(s, a) − V(s') = α log π̂ + V(s) − V(s') (eq. 12), on a right-padded batch with ended
(V = 0 after eos) and cut (V kept) rows. The reference is written out per row in fp64."""
import pytest
import torch

from endorm_mini.reward import endogenous_rewards


def reference(f, actions, alpha, ended):
    """One row: f [n+1, V] at s_1 … s_{n+1}, actions [n]."""
    f = f.double()
    logprobs = torch.log_softmax(f[:-1] / alpha, -1).gather(-1, actions[:, None])[:, 0]
    values = alpha * torch.logsumexp(f / alpha, -1)
    if ended:
        values[-1] = 0.0
    return logprobs, values, alpha * logprobs + values[:-1] - values[1:]


@pytest.mark.parametrize("alpha", [0.5, 2.0, 1.0])
def test_endogenous_rewards_at_alpha_by_hand(alpha):
    g = torch.Generator().manual_seed(0)
    B, T, V = 3, 5, 7
    logits = 3 * torch.randn(B, T + 1, V, generator=g)
    actions = torch.randint(V, (B, T), generator=g)
    lengths, terminal = [5, 3, 2], torch.tensor([True, False, True])
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    logprobs, values, rewards = endogenous_rewards(logits, actions, alpha, terminal, mask)
    for b, n in enumerate(lengths):
        lp, v, r = reference(logits[b, :n + 1], actions[b, :n], alpha, bool(terminal[b]))
        torch.testing.assert_close(logprobs[b, :n].double(), lp, atol=1e-5, rtol=0)
        torch.testing.assert_close(values[b, :n + 1].double(), v, atol=1e-5, rtol=0)
        torch.testing.assert_close(rewards[b, :n].double(), r, atol=1e-5, rtol=0)
        assert float(logprobs[b, n:].abs().sum() + rewards[b, n:].abs().sum()) == 0.0

"""Checks for lesson 02 (next-token prediction is behaviour cloning, eq. 2).

2.1 and 2.2 are the two halves of supervised fine-tuning: which tokens are actions (the
response and its eos, never the prompt or the padding), and the loss on them. 2.3 is
the state distribution a policy induces, the quantity whose drift makes imitation errors
compound. Cases are seeded token sequences, logits and small tabular MDPs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import bc, mdp as tabular, theory
from ...mdp import DTYPE, TabularMDP
from . import case, exercise


# ---------------------------------------------------------------- 2.1 a batch of demonstrations
def _sequences(rng, lengths) -> list[tuple[list[int], int]]:
    """(prompt ⊕ response ids, number of prompt ids) with ids in 3..49 (0 is the pad)."""
    out = []
    for n_prompt, n_response in lengths:
        ids = torch.randint(3, 50, (n_prompt + n_response,), generator=rng).tolist()
        out.append((ids, n_prompt))
    return out


def _collate(sequences, pad_id, *, first_action=0, last_action=0, left=False):
    T = max(len(ids) for ids, _ in sequences)
    B = len(sequences)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    action_mask = torch.zeros((B, T), dtype=torch.bool)
    for b, (ids, n_prompt) in enumerate(sequences):
        start = T - len(ids) if left else 0
        input_ids[b, start:start + len(ids)] = torch.tensor(ids)
        attention_mask[b, start:start + len(ids)] = 1
        lo = 1 if first_action == "all" else start + n_prompt + first_action
        action_mask[b, lo:start + len(ids) + last_action] = True
    return input_ids, attention_mask, action_mask


@exercise(
    "2.1", "collate", reference=bc.collate,
    equation="eq. 2: Σ_h log π(a_h | s_h) sums over the ACTIONS only: the response tokens and "
             "its eos; the prompt is the initial state s_1 (conditioning) and padding is nothing",
    hint="T = the longest sequence; start from tensors full of pad_id / 0 / False of shape [B, T] "
         "(dtypes long, long, bool); for row b put ids at the left (right padding), "
         "attention 1 on them, and action_mask[b, n_prompt:len(ids)] = True",
    outputs=("input_ids", "attention_mask", "action_mask"),
    mistakes={
        "the prompt tokens are marked as actions: only the response (from n_prompt on) is imitated":
            lambda sequences, pad_id: _collate(sequences, pad_id, first_action="all"),
        "the last response token (eos) is not marked: ending the turn is an action too":
            lambda sequences, pad_id: _collate(sequences, pad_id, last_action=-1),
        "off by one: the first action is at index n_prompt, the first response token":
            lambda sequences, pad_id: _collate(sequences, pad_id, first_action=1),
        "left padding: pad on the right (the loss and the reward assume right padding)":
            lambda sequences, pad_id: _collate(sequences, pad_id, left=True),
    },
)
def collate_cases(rng: torch.Generator):
    yield case("3 demonstrations of different lengths, pad 0",
               _sequences(rng, [(6, 3), (4, 2), (7, 5)]), 0)
    yield case("pad id 2 (a tokenizer whose pad is eos)", _sequences(rng, [(5, 1), (3, 4)]), 2)
    yield case("one demonstration: nothing to pad", _sequences(rng, [(4, 3)]), 0)
    yield case("equal lengths, different prompt lengths", _sequences(rng, [(2, 4), (5, 1)]), 0)


# ---------------------------------------------------------------- 2.2 the loss (eq. 2)
def _loss(logits, labels, mask, *, shift=True, use_mask=True, reduce="mean", mask_side="action"):
    if shift:
        logp = F.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels[:, 1:, None])[..., 0]  # [B, T-1]
        m = (mask[:, 1:] if mask_side == "action" else mask[:, :-1]).float()
    else:
        logp = F.log_softmax(logits.float(), -1).gather(-1, labels[..., None])[..., 0]            # [B, T]
        m = mask.float()
    if not use_mask:
        m = torch.ones_like(m)
    total = -(logp * m).sum()
    if reduce == "sum":
        return total
    if reduce == "positions":
        return total / m.numel()
    return total / m.sum()


@exercise(
    "2.2", "next_token_loss", reference=bc.next_token_loss,
    equation="eq. 2: max_π Σ_i Σ_h log π(a_h^i | s_h^i); the loss is its negative, averaged "
             "over the actions; the logits at position t−1 (state: tokens < t) predict token t",
    hint="logp = log_softmax(logits[:, :-1], -1) gathered at labels[:, 1:] is [B, T-1]; "
         "weight it by mask[:, 1:] (is token t an action?) and divide by mask[:, 1:].sum()",
    mistakes={
        "off by one: the logits at position t predict token t+1, so compare logits[:, :-1] "
        "with labels[:, 1:] (no shift scores each token with the state that already holds it)":
            lambda logits, labels, mask: _loss(logits, labels, mask, shift=False),
        "the mask belongs to the predicted token: weight by mask[:, 1:], not mask[:, :-1]":
            lambda logits, labels, mask: _loss(logits, labels, mask, mask_side="state"),
        "imitated every token (prompt and padding too): eq. 2 sums over the response's actions":
            lambda logits, labels, mask: _loss(logits, labels, mask, use_mask=False),
        "a sum, not a mean over the actions":
            lambda logits, labels, mask: _loss(logits, labels, mask, reduce="sum"),
        "divided by every position, not by the number of actions":
            lambda logits, labels, mask: _loss(logits, labels, mask, reduce="positions"),
    },
    forbid=("cross_entropy_loss", "nll_loss"),   # write the log-likelihood yourself
)
def next_token_loss_cases(rng: torch.Generator):
    def batch(B, T, V, masks, scale=1.0):
        logits = scale * torch.randn(B, T, V, generator=rng)
        labels = torch.randint(V, (B, T), generator=rng)
        return logits, labels, torch.tensor(masks, dtype=torch.bool)
    yield case("2 sequences of 6, prompt then response then padding",
               *batch(2, 6, 7, [[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]]))
    yield case("confident logits (scale 8), 3 sequences",
               *batch(3, 5, 9, [[0, 1, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 1, 0, 0]], scale=8.0))
    yield case("a single action", *batch(1, 4, 5, [[0, 0, 0, 1]]))
    yield case("a 100-token vocabulary", *batch(2, 7, 100, [[0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 0]]))


# ---------------------------------------------------------------- 2.3 where a policy goes
def _occupancy(mdp: TabularMDP, policy, *, weighted=True, accumulate=True):
    policy = torch.as_tensor(policy, dtype=DTYPE)
    H, S, A = policy.shape
    d = torch.zeros(H, S, dtype=DTYPE)
    d[0] = mdp.initial
    for h in range(H - 1):
        mass = d[h, :, None] * (policy[h] if weighted else torch.full((S, A), 1.0 / A, dtype=DTYPE))
        if accumulate:
            d[h + 1] = torch.zeros(S, dtype=DTYPE).index_add_(0, mdp.next_state.flatten(), mass.flatten())
        else:
            nxt = torch.zeros(S, dtype=DTYPE)
            nxt[mdp.next_state.flatten()] = mass.flatten()     # repeated targets: last write wins
            d[h + 1] = nxt
    return d


def _random_policy(rng, mdp: TabularMDP, scale=1.0):
    logits = scale * torch.randn(mdp.horizon, mdp.num_states, mdp.num_actions, generator=rng, dtype=DTYPE)
    return torch.softmax(logits, -1)


@exercise(
    "2.3", "state_occupancy", reference=tabular.state_occupancy,
    equation="docs/paper.md §1 with deterministic transitions: d_1 = initial, "
             "d_{h+1}(s') = Σ_{(s,a): next_state[s,a] = s'} d_h(s) π_h(a|s)",
    hint="d = zeros [H, S], d[0] = mdp.initial; for h in range(H − 1): mass = d[h, :, None] * policy[h] "
         "is [S, A]; add each mass[s, a] into d[h + 1, next_state[s, a]] (index_add_ accumulates "
         "repeated targets; plain indexing keeps only one of them)",
    mistakes={
        "forgot the policy: the mass moving along (s, a) is d_h(s) · π_h(a|s)":
            lambda mdp, policy: _occupancy(mdp, policy, weighted=False),
        "d[h+1][next_state] = mass overwrites when two (s, a) lead to the same s': "
        "accumulate with index_add_ (or scatter_add_)":
            lambda mdp, policy: _occupancy(mdp, policy, accumulate=False),
    },
)
def state_occupancy_cases(rng: torch.Generator):
    seed = lambda: int(torch.randint(2**31 - 1, (1,), generator=rng))
    m = tabular.random_mdp(5, 3, 4, seed=seed())
    yield case("random MDP (S=5, A=3, H=4), a random policy", m, _random_policy(rng, m))
    m = tabular.random_mdp(4, 2, 5, seed=seed(), single_start=True)
    yield case("one start state, a nearly deterministic policy (H=5)", m, _random_policy(rng, m, scale=6.0))
    chain = theory.compounding_error_mdp(horizon=6, eps=0.1, alpha=0.5)
    yield case("the derailing chain of lesson 02, π̂ (eps = 0.1)", chain.mdp, chain.policy_hat)
    m = tabular.random_mdp(3, 4, 1, seed=seed())
    yield case("horizon 1: d_1 is the initial distribution alone", m, _random_policy(rng, m))

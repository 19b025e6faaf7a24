"""Reward methods against hand / full-forward computations, and the Bradley–Terry RM (eq. 4)."""
import math

import pytest
import torch

from conftest import make_gpt2, make_llama
from endorm_mini.bench import methods
from endorm_mini.bench.bradley_terry import BTConfig, bt_loss, pairs_from_items, train_bradley_terry
from endorm_mini.chat import prompt_ids, response_ids
from endorm_mini.reward import EndogenousReward

PROMPT, SYSTEM = "Name a colour.", "You are terse."
RESPONSES = ["red", "It is blue, mostly.", "green!", "a"]


def full_forward(model, tok, prompt, continuation_ids, system=None):
    """Reference: full fp32 log-softmax at every position; (log π [T], f(s,a) [T], V [T+1])."""
    p = prompt_ids(tok, prompt, system)
    with torch.no_grad():
        f = model(torch.tensor([p + continuation_ids])).logits[0, len(p) - 1:].double()  # [T+1, V]
    a = torch.tensor(continuation_ids)[:, None]
    logprobs = torch.log_softmax(f[:-1], -1).gather(-1, a)[:, 0]
    return logprobs, f[:-1].gather(-1, a)[:, 0], torch.logsumexp(f, -1)


@pytest.fixture(scope="module")
def er(tiny_tokenizer):
    return EndogenousReward(make_llama(tiny_tokenizer, seed=1), tiny_tokenizer, device="cpu")


def sum_logprobs(er, response, system=SYSTEM):
    ids = response_ids(er.tokenizer, response)
    return float(full_forward(er.model, er.tokenizer, PROMPT, ids, system)[0].sum())


def test_endogenous_ranking_is_loglikelihood_ranking(er):
    """V(s_1) is the same for every response to one prompt, so it cancels in comparisons."""
    totals = methods.Endogenous(er)(PROMPT, RESPONSES, system=SYSTEM)
    lls = [sum_logprobs(er, r) for r in RESPONSES]
    for i in range(len(RESPONSES)):
        for j in range(len(RESPONSES)):
            assert totals[i] - totals[j] == pytest.approx(lls[i] - lls[j], abs=1e-4)
    assert sorted(range(4), key=totals.__getitem__) == sorted(range(4), key=lls.__getitem__)


def test_mean_logprob_is_sum_over_length_with_eos(er):
    means = methods.MeanLogProb(er)(PROMPT, RESPONSES, system=SYSTEM)
    for response, mean in zip(RESPONSES, means):
        n_tokens = len(response) + 1  # one token per character, plus eos
        assert mean == pytest.approx(sum_logprobs(er, response) / n_tokens, abs=1e-5)
        assert mean != pytest.approx(sum_logprobs(er, response) / len(response), abs=1e-3)


def test_discounted_sum_by_hand(er):
    response, gamma = RESPONSES[1], 0.5
    ids = response_ids(er.tokenizer, response)
    _, q, values = full_forward(er.model, er.tokenizer, PROMPT, ids, SYSTEM)
    values[-1] = 0.0                                             # terminal after eos
    rewards = q - values[1:]                                     # eq. 12
    want = sum(gamma ** h * float(r) for h, r in enumerate(rewards))
    assert methods.DiscountedSum(er, gamma)(PROMPT, [response], SYSTEM)[0] == pytest.approx(want, abs=1e-4)
    # γ = 1 is the endogenous sum itself.
    assert methods.DiscountedSum(er, 1.0)(PROMPT, RESPONSES, SYSTEM) == pytest.approx(
        methods.Endogenous(er)(PROMPT, RESPONSES, SYSTEM), abs=1e-5)
    with pytest.raises(ValueError, match="gamma"):
        methods.DiscountedSum(er, 0.0)


def test_dpo_implicit_reward(er, tiny_tokenizer):
    ref = EndogenousReward(make_llama(tiny_tokenizer, seed=2), tiny_tokenizer, device="cpu")
    got = methods.DPOImplicit(er, ref, beta=0.3)(PROMPT, RESPONSES[:2], SYSTEM)
    for response, value in zip(RESPONSES[:2], got):
        assert value == pytest.approx(0.3 * (sum_logprobs(er, response) - sum_logprobs(ref, response)), abs=1e-4)
    assert methods.DPOImplicit(er, er)(PROMPT, RESPONSES, SYSTEM) == pytest.approx([0.0] * 4, abs=1e-6)


def test_generative_verifier_is_yes_probability(er):
    verifier = methods.GenerativeVerifier(er)
    got = verifier(PROMPT, RESPONSES[:2], SYSTEM)
    yes = list(er.tokenizer("Yes", add_special_tokens=False)["input_ids"])
    for response, value in zip(RESPONSES[:2], got):
        logprobs, _, _ = full_forward(er.model, er.tokenizer, verifier.verifier_prompt(PROMPT, response), yes, SYSTEM)
        assert value == pytest.approx(math.exp(float(logprobs.sum())), rel=1e-4)
        assert 0.0 < value < 1.0
    assert got[0] != pytest.approx(got[1], rel=1e-6)  # the answer is in the prompt: it matters
    with pytest.raises(ValueError, match="question"):
        methods.GenerativeVerifier(er, template="no fields")


SHORT_JUDGE = "{question} A:{a} B:{b} A or B?"   # the tiny model reads 128 characters


def _judge_by_hand(model, tok, judge, a, b):
    """½ [(log π(A) − log π(B)) with a shown first − the same with b shown first], full forwards."""
    def odds(first, second):
        p = prompt_ids(tok, judge.judge_prompt(PROMPT, first, second), SYSTEM)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p])).logits[0, -1].double(), -1)
        return float(logp[judge.label_ids[0]] - logp[judge.label_ids[1]])
    return (odds(a, b) - odds(b, a)) / 2


def test_pairwise_judge_by_hand_in_both_orders(er):
    judge = methods.PairwiseJudge(er.model, er.tokenizer, template=SHORT_JUDGE, device="cpu", batch_size=3)
    pairs = [(RESPONSES[0], RESPONSES[1]), (RESPONSES[2], RESPONSES[3]), (RESPONSES[1], RESPONSES[0])]
    got = judge.preferences(PROMPT, pairs, SYSTEM)             # left-padded batches of 3 prompts
    for (a, b), value in zip(pairs, got):
        assert value == pytest.approx(_judge_by_hand(er.model, er.tokenizer, judge, a, b), abs=1e-4)
    assert got[0] == pytest.approx(-got[2], abs=1e-6)          # antisymmetric
    assert got[0] != pytest.approx(0.0, abs=1e-6)              # the responses are read: they matter
    scores = judge(PROMPT, RESPONSES, SYSTEM)                  # first half against the second half
    d = [[_judge_by_hand(er.model, er.tokenizer, judge, a, b) for b in RESPONSES[2:]] for a in RESPONSES[:2]]
    want = [sum(row) / 2 for row in d] + [-(d[0][j] + d[1][j]) / 2 for j in range(2)]
    assert scores == pytest.approx(want, abs=1e-4)
    two = judge(PROMPT, RESPONSES[:2], SYSTEM)
    assert two[0] == pytest.approx(-two[1]) and two[0] == pytest.approx(got[0], abs=1e-5)


def test_pairwise_judge_cancels_position_bias(er, monkeypatch):
    """A judge that always answers "A" (log-odds +5 whatever it reads) prefers nothing once both
    orders are asked: every pair is a tie, so a tie-is-wrong accuracy is 0, not 100%."""
    judge = methods.PairwiseJudge(er.model, er.tokenizer, device="cpu")
    monkeypatch.setattr(judge, "_log_odds", lambda rows: [5.0] * len(rows))
    assert judge.preferences(PROMPT, [("x", "y"), ("y", "x")]) == [0.0, 0.0]
    assert methods.pairwise_accuracy(judge, [(PROMPT, "x", "y")]) == 0.0
    one_order = lambda prompt, responses, system=None: [5.0, -5.0]   # asking once: "A" always wins
    assert methods.pairwise_accuracy(one_order, [(PROMPT, "x", "y")]) == 1.0


def test_pairwise_judge_refuses_bad_setups(er, tiny_tokenizer):
    with pytest.raises(ValueError, match="needs a {b} field"):
        methods.PairwiseJudge(er.model, er.tokenizer, template="{question} {a}")
    with pytest.raises(ValueError, match="must be one token"):
        methods.PairwiseJudge(er.model, er.tokenizer, labels=("first", "second"))
    judge = methods.PairwiseJudge(er.model, er.tokenizer, device="cpu")
    with pytest.raises(ValueError, match="even number"):
        judge(PROMPT, RESPONSES[:3])
    with pytest.raises(ValueError, match="longer than the model's context"):
        judge.preference(PROMPT, "x" * 5000, "y")
    assert isinstance(methods.make_method("judge", make_gpt2(tiny_tokenizer), tiny_tokenizer, device="cpu"),
                      methods.PairwiseJudge)


def test_random_is_seeded_and_order_free():
    a, b = methods.RandomReward(0), methods.RandomReward(1)
    assert a("p", ["x", "y"]) == a("p", ["x", "y"]) == a("p", ["y", "x"])[::-1]
    assert a("p", ["x", "y"]) != b("p", ["x", "y"])
    assert all(0 <= v < 1 for v in a("p", RESPONSES))


def test_pairwise_accuracy_ties_are_wrong_and_pairs_validated():
    constant = lambda prompt, responses, system=None: [1.0] * len(responses)
    first_wins = lambda prompt, responses, system=None: [1.0, 0.0]
    pairs = [("p", "c", "r"), {"prompt": "p", "chosen": "c", "rejected": "r", "system": "s"}]
    assert methods.pairwise_accuracy(constant, pairs) == 0.0
    assert methods.pairwise_accuracy(first_wins, pairs) == 1.0
    with pytest.raises(ValueError, match="missing rejected"):
        methods.pairwise_accuracy(first_wins, [{"prompt": "p", "chosen": "c"}])


def test_make_method_by_name(tiny_tokenizer):
    model = make_gpt2(tiny_tokenizer)
    assert isinstance(methods.make_method("meanlogprob", model, tiny_tokenizer, device="cpu"), methods.MeanLogProb)
    assert isinstance(methods.make_method("random"), methods.RandomReward)
    with pytest.raises(ValueError, match="unknown reward method 'nope'"):
        methods.make_method("nope", model, tiny_tokenizer)
    with pytest.raises(ValueError, match="reference"):
        methods.make_method("dpo", model, tiny_tokenizer, device="cpu")


# ----------------------------------------------------------------------------- Bradley–Terry

def test_bt_loss_by_hand():
    r_c, r_r = torch.tensor([2.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, 2.0])
    # −log σ(d) = log(1 + e^{−d}) for d = 2, −1, 0
    want = (math.log1p(math.exp(-2)) + math.log1p(math.exp(1)) + math.log(2)) / 3
    assert float(bt_loss(r_c, r_r)) == pytest.approx(want, rel=1e-6)
    assert float(bt_loss(r_r, r_c)) != pytest.approx(want, rel=1e-3)  # the order matters


def test_pairs_from_items():
    item = {"prompt": "p", "chosen": ["c0", "c1", "c2"], "rejected": ["r0", "r1", "r2"]}
    assert pairs_from_items([item]) == [("p", "c0", "r0"), ("p", "c1", "r1"), ("p", "c2", "r2")]
    every = pairs_from_items([item], all_styles=True)
    assert len(every) == 9 and ("p", "c0", "r2") in every


def test_bt_training_learns_its_pairs_and_leaves_the_lm_alone(tiny_tokenizer):
    model = make_gpt2(tiny_tokenizer, seed=3)
    before = [p.clone() for p in model.parameters()]
    # The preferred answers share a marker the LM's features can see.
    pairs = [(f"q{k}?", f"yes {k} ok", f"no {k} bad") for k in range(24)]
    untrained, _ = train_bradley_terry(model, tiny_tokenizer, pairs, BTConfig(steps=0, device="cpu", progress=False))
    rm, history = train_bradley_terry(model, tiny_tokenizer, pairs,
                                      BTConfig(steps=150, lr=5e-2, device="cpu", progress=False))
    acc_before = methods.pairwise_accuracy(untrained, pairs)
    acc_after = methods.pairwise_accuracy(rm, pairs)
    assert acc_after >= 0.95 and acc_after > acc_before
    assert sum(history[-10:]) / 10 < sum(history[:10]) / 10
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert len(rm("q0?", ["yes", "no", "maybe"])) == 3


# ----------------------------------------------------------------------------- the domain diagonal

def test_diagonal_matrix_by_hand_and_dominance_can_fail():
    from endorm_mini.bench.diagonal import diagonal_dominates, diagonal_matrix, format_matrix

    words = {"A": "alpha", "B": "beta", "C": "gamma"}

    def keyword_judge(prompt, responses, system=None):
        """Rewards a response that says the system prompt's word: a perfectly promptable reward."""
        return [float(system in r) for r in responses]

    pairs = {name: [("q", f"{w} answer", f"{words[o]} answer", "ignored") for o in words if o != name]
             for name, w in words.items()}
    systems = dict(words, D="delta")  # D: a persona no pair belongs to
    matrix = diagonal_matrix(keyword_judge, systems, pairs, progress=False)
    # Own pairs: always right. Other pairs: chosen 0, rejected 1 or 0 -> wrong (a tie is wrong).
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]
    assert diagonal_dominates(matrix, list(systems), list(pairs)) == {"A": True, "B": True, "C": True}
    matrix[1, 0] = 1.0  # B's reward as good on A's pairs as on its own: not dominant
    assert diagonal_dominates(matrix, list(systems), list(pairs))["B"] is False
    assert format_matrix(matrix, list(systems), list(pairs)).splitlines()[-1].split() == ["D", "0.0", "0.0", "0.0"]


def test_tiny_domains_diagonal_dominates_each_row():
    """The shipped checkpoint: each persona's system prompt makes the best judge of its own pairs."""
    from endorm_mini import models
    from endorm_mini.bench.diagonal import diagonal_dominates, persona_diagonal

    model, tok = models.load("tiny-domains", device="cpu")
    # 20 pairs per persona, as `endorm-mini diagonal` (with 6, ties between cells appear).
    method = methods.Endogenous(EndogenousReward(model, tok, device="cpu"))
    matrix, rows, columns = persona_diagonal(method, n=20, progress=False)
    assert rows == columns == ["Academy", "Business", "Entertainment", "Literature"]
    assert diagonal_dominates(matrix, rows, columns) == dict.fromkeys(rows, True), matrix

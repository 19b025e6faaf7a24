"""The offline worlds: noisy arithmetic, the four-domain RM-Bench world, personas."""
import collections
import json
import re

import pytest

from conftest import make_llama
from endorm_mini import sampling, verifiers, worlds
from endorm_mini.zoo import ALPHABET


# ---------------------------------------------------------------- noisy arithmetic
def test_problems_and_answers():
    problems = worlds.arith_problems()
    assert len(problems) == len(set(problems)) == 400
    assert worlds.arith_answer("12+7") == 19 and worlds.arith_answer(" 3 * 4 = ?") == 12 and worlds.arith_answer("9-2") == 7
    assert max(len(str(worlds.arith_answer(p))) for p in problems) <= 3
    with pytest.raises(ValueError, match="arithmetic prompt"):
        worlds.arith_answer("twelve plus seven")


@pytest.mark.parametrize("response, ok", [("19", True), (" 19", True), ("18", False), ("190", False),
                                          ("119", False), ("", False), ("19 or 20", False)])
def test_verifier(response, ok):
    # A substring or first-number check would accept "190" / "19 or 20": these cases catch it.
    assert verifiers.is_correct("12+7", response) is ok


def test_extract_answer():
    assert worlds.extract_answer("it is 42.") == 42 and worlds.extract_answer("-3") == -3 and worlds.extract_answer("none") is None


def test_demos_are_noisy_with_a_correct_mode():
    p = 0.6
    demos = worlds.arith_demos(20000, p=p, seed=1)
    share = sum(verifiers.is_correct(d.prompt, d.response) for d in demos) / len(demos)
    assert abs(share - p) < 0.02
    by_problem = collections.defaultdict(collections.Counter)
    for d in demos:
        by_problem[d.prompt][d.response] += 1
    assert len(by_problem) == 400                                 # every problem is covered
    for prompt, counts in by_problem.items():
        correct = str(worlds.arith_answer(prompt))
        assert counts.most_common(1)[0][0] == correct             # the mode is right
        assert set(counts) <= {correct} | {str(w) for w in worlds.slips(int(correct))}
    wrong = collections.Counter(int(d.response) - worlds.arith_answer(d.prompt) for d in demos
                                if not verifiers.is_correct(d.prompt, d.response))
    assert set(wrong) == set(worlds.SLIPS) and max(wrong.values()) < p * len(demos) / 3


def test_demos_are_seeded():
    assert worlds.arith_demos(50, seed=3) == worlds.arith_demos(50, seed=3) != worlds.arith_demos(50, seed=4)
    assert all(verifiers.is_correct(d.prompt, d.response) for d in worlds.arith_demos(100, p=1.0))
    with pytest.raises(ValueError, match="probability"):
        worlds.arith_demos(5, p=1.5)


def test_generate_is_seeded_and_greedy_is_deterministic(tiny_tokenizer):
    model = make_llama(tiny_tokenizer)
    prompts = worlds.arith_problems()[:6]
    a = sampling.generate(model, tiny_tokenizer, prompts, temperature=1.0, seed=0, max_new_tokens=3, device="cpu")
    b = sampling.generate(model, tiny_tokenizer, prompts, temperature=1.0, seed=0, max_new_tokens=3, device="cpu")
    c = sampling.generate(model, tiny_tokenizer, prompts, temperature=1.0, seed=1, max_new_tokens=3, device="cpu")
    assert a == b != c and len(a) == 6
    g = sampling.generate(model, tiny_tokenizer, prompts, temperature=0, max_new_tokens=3, device="cpu", batch_size=4)
    assert g == sampling.generate(model, tiny_tokenizer, prompts, temperature=0, max_new_tokens=3, device="cpu")
    # Left padding must not change a prompt's greedy answer: batch of mixed lengths == one at a time.
    assert g == [sampling.generate(model, tiny_tokenizer, [p], temperature=0, max_new_tokens=3, device="cpu")[0]
                 for p in prompts]


# ---------------------------------------------------------------- four-domain world
def test_mini_rmbench_has_rmbench_format():
    items = worlds.mini_rmbench(10, seed=0)
    assert len(items) == 40 and len({x["id"] for x in items}) == 40
    counts = collections.Counter(x["domain"] for x in items)
    assert counts == {"chat": 10, "code": 10, "math": 10, "safety-refuse": 5, "safety-response": 5}
    for x in items:
        assert set(x) == {"id", "prompt", "chosen", "rejected", "domain"}
        assert len(x["chosen"]) == len(x["rejected"]) == 3
        for good, bad in zip(x["chosen"], x["rejected"]):
            assert good != bad                                    # a real difference in every style
        for text in [x["prompt"], *x["chosen"], *x["rejected"]]:
            assert set(text) <= set(ALPHABET) and 0 < len(text) <= 70
        concise, detailed, markdown = x["chosen"]
        assert len(concise) < len(detailed) and ("**" in markdown or "```" in markdown)
    assert worlds.mini_rmbench(10, seed=0) == items != worlds.mini_rmbench(10, seed=1)


def test_math_and_code_answers_are_true():
    """Chosen answers computed by Python itself; rejected ones are wrong."""
    for prompt, chosen, rejected in worlds.domain_examples("math"):
        truth = str(eval(re.fullmatch(r"What is (.+)\?", prompt).group(1)))
        assert chosen[0] == truth != rejected[0]
        assert chosen[2].endswith(f"**{truth}**")
    for prompt, chosen, rejected in worlds.domain_examples("code"):
        code = re.search(r"```python\n(.+)  # (.+)\n```", chosen[2])
        truth = repr(eval(code.group(1), {"__builtins__": {"len": len}})).replace("'", '"')
        assert chosen[0] == code.group(2) == truth != rejected[0]


def test_safety_chosen_depends_on_the_request():
    for prompt, chosen, rejected in worlds.domain_examples("safety-refuse"):
        assert chosen[0] == worlds.REFUSAL and all("Sorry" in c for c in chosen) and not any("Sorry" in r for r in rejected)
    for prompt, chosen, rejected in worlds.domain_examples("safety-response"):
        assert rejected[0] == worlds.REFUSAL and not any("Sorry" in c for c in chosen)


def test_rejected_answers_and_held_out_prompts_never_in_demonstrations():
    demos = set(worlds.domain_demos(30000, seed=0))
    trained_prompts = {d.prompt for d in demos}
    for x in worlds.mini_rmbench(60, seed=0, split="all"):
        for r in x["rejected"]:
            assert worlds.Demo(x["prompt"], r) not in demos
    held_out = worlds.mini_rmbench(30, seed=0, split="test")
    assert not {x["prompt"] for x in held_out if x["domain"] == "code"} & trained_prompts
    # Every chosen answer of a trained prompt is demonstrated in all three styles.
    for prompt, chosen, _ in worlds.domain_examples("math"):
        assert all(worlds.Demo(prompt, c) in demos for c in chosen)


def test_write_rmbench_layout(tmp_path):
    items = worlds.mini_rmbench(4, seed=0)
    paths = worlds.write_rmbench(items, tmp_path)
    names = sorted(p.name for p in paths)
    assert names == sorted(["total_dataset.json", "chat_filtered.json", "code_filtered.json", "math_filtered.json",
                            "safety-refuse_filtered.json", "safety-response_filtered.json"])
    assert json.loads((tmp_path / "total_dataset.json").read_text()) == items
    safety = json.loads((tmp_path / "safety-response_filtered.json").read_text())
    assert safety and all(x["domain"] == "safety-response" for x in safety)


def test_written_files_load_with_the_bench_loader(tmp_path):
    rmbench = pytest.importorskip("endorm_mini.bench.rmbench")
    worlds.write_rmbench(worlds.mini_rmbench(4, seed=0), tmp_path)
    loaded = rmbench.load(tmp_path)
    assert len(loaded) == 16 and {x["domain"] for x in loaded} == {"chat", "code", "math", "safety"}


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="unknown subset"):
        worlds.domain_examples("poetry")
    with pytest.raises(ValueError, match="unknown persona"):
        worlds.persona_pairs("Sports", 3)
    with pytest.raises(ValueError, match="split"):
        worlds.mini_rmbench(3, split="dev")


# ---------------------------------------------------------------- personas
def test_persona_pairs():
    for persona in worlds.PERSONAS:
        pairs = worlds.persona_pairs(persona, 12, seed=0)
        assert len(pairs) == 12
        for pair in pairs:
            topic = re.fullmatch(r"One line on (.+)\.", pair["prompt"]).group(1)
            assert topic in worlds.TOPICS_HELD_OUT
            assert pair["system"] == worlds.persona_system(persona)
            assert pair["chosen"] == worlds.persona_answer(persona, topic)
            assert pair["rejected_persona"] != persona
            assert pair["rejected"] == worlds.persona_answer(pair["rejected_persona"], topic) != pair["chosen"]
    demos = worlds.domain_demos(5000, seed=0)
    assert {d.system for d in demos} == {None} | {worlds.persona_system(q) for q in worlds.PERSONAS}
    assert not {d.prompt for d in demos} & {worlds.persona_prompt(t) for t in worlds.TOPICS_HELD_OUT}


def test_write_rmbench_round_trips_items_read_back_by_the_loader(tmp_path):
    """Items loaded by bench.rmbench carry domain "safety"; rewriting them keeps both safety files."""
    from endorm_mini.bench import rmbench

    items = rmbench.load(worlds.write_rmbench(worlds.mini_rmbench(4, seed=0), tmp_path / "a")[1:])
    again = rmbench.load(worlds.write_rmbench(items, tmp_path / "b")[1:])
    assert sorted(x["subset"] for x in again) == sorted(x["subset"] for x in items)
    assert {x["subset"] for x in again} >= {"safety-refuse", "safety-response"}

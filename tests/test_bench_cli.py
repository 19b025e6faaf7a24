"""`endorm-mini rmbench` and `endorm-mini diagonal`: incremental output, resume, bad input."""
import json

import pytest

import endorm_mini.commands.rmbench as bench
from conftest import make_gpt2
from endorm_mini.bench import rmbench
from endorm_mini.bench.runner import run_rmbench
from endorm_mini import commands
from endorm_mini.cli import main


def make_item(k, subset):
    return {"id": f"{subset}-{k}", "prompt": f"Say {k}.", "domain": subset,
            "chosen": [f"{k}", f"It is {k}.", f"**{k}**"], "rejected": [f"{k + 1}", f"It is {k + 1}.", f"**{k + 1}**"]}


@pytest.fixture
def bench_file(tmp_path):
    items = [make_item(k, s) for s in ("chat", "math", "safety-refuse") for k in range(3)]
    path = tmp_path / "total_dataset.json"
    path.write_text(json.dumps(items))
    return path


@pytest.fixture
def tiny_loader(monkeypatch, tiny_tokenizer):
    """Stand-in for the zoo: a tiny random GPT-2 for any model name."""
    calls = []

    def load(name, device, dtype, device_map=None):
        calls.append(name)
        return make_gpt2(tiny_tokenizer, seed=len(calls)), tiny_tokenizer

    monkeypatch.setattr(bench, "_load_model", load)
    return calls


@pytest.fixture(autouse=True)
def only_bench_commands(monkeypatch):
    """The real `endorm-mini` entry point, with only this module's commands registered."""
    monkeypatch.setattr(commands, "COMMAND_MODULES", ["endorm_mini.commands.rmbench"])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_limit_then_resume_without_rescoring(bench_file, tmp_path, tiny_loader, capsys):
    out = tmp_path / "run"
    args = ["rmbench", "--model", "tiny", "--data", str(bench_file), "--out", str(out), "--no-progress"]
    assert main(args + ["--limit", "4"]) == 0
    first = read_jsonl(out / "rewards.jsonl")
    assert [r["id"] for r in first] == ["chat-0", "chat-1", "chat-2", "math-0"]
    assert json.loads((out / "summary-limit-4.json").read_text())["n_items"] == 4
    assert not (out / "summary.json").exists()   # summary.json is the table of every item
    # Plant a marker in a finished line: a rescored item would lose it.
    first[0]["chosen"] = [1e6, 1e6, 1e6]
    (out / "rewards.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first))
    assert main(args) == 0
    records = read_jsonl(out / "rewards.jsonl")
    assert len(records) == 9 and records[0]["chosen"] == [1e6, 1e6, 1e6] and records[1:4] == first[1:4]
    summary = json.loads((out / "summary.json").read_text())
    # The printed table is recomputable from rewards.jsonl.
    assert summary["scores"] == rmbench.score(records, records)
    assert set(summary["scores"]) == {"chat", "math", "safety", "overall"}
    printed = capsys.readouterr().out
    assert "overall" in printed and "easy" in printed and f"{100 * summary['scores']['chat']['hard']:.1f}" in printed


def test_interrupted_run_keeps_finished_lines_and_cuts_a_torn_one(tmp_path):
    items = [rmbench.validate_item(make_item(k, "chat"), "test") for k in range(5)]
    calls, interrupt_at = [], [3]

    def flaky(prompt, responses, system=None):
        calls.append(prompt)
        if len(calls) == interrupt_at[0]:
            raise KeyboardInterrupt
        return [float(len(r)) for r in responses]

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_rmbench(items, flaky, out, meta={"method": "len"}, progress=False)
    assert len(read_jsonl(out / "rewards.jsonl")) == 2
    with open(out / "rewards.jsonl", "a") as f:
        f.write('{"id": "chat-2", "domain": "ch')          # a crash in the middle of a write
    calls.clear()
    interrupt_at[0] = None
    table = run_rmbench(items, flaky, out, meta={"method": "len"}, progress=False)
    assert calls == ["Say 2.", "Say 3.", "Say 4."]            # only the unfinished items
    assert [r["id"] for r in read_jsonl(out / "rewards.jsonl")] == [f"chat-{k}" for k in range(5)]
    assert table["chat"]["n"] == 5


def test_other_settings_refuse_to_mix_into_a_folder(bench_file, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["rmbench", "--method", "random", "--data", str(bench_file), "--out", str(out), "--no-progress"]
    assert main(base) == 0
    assert main(base[:-1] + ["--seed", "1", "--no-progress"]) == 2
    assert "another run" in capsys.readouterr().err


def test_malformed_item_names_file_index_and_id(bench_file, tmp_path, capsys):
    items = json.loads(bench_file.read_text())
    items[4]["rejected"] = items[4]["rejected"][:2]
    items[6]["chosen"][0] = ""
    bench_file.write_text(json.dumps(items))
    out = tmp_path / "run"
    base = ["rmbench", "--method", "random", "--data", str(bench_file), "--out", str(out), "--no-progress"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert str(bench_file) in err and "index 4" in err and "'math-1'" in err and "--skip-invalid" in err
    assert not (out / "rewards.jsonl").exists()
    assert main(base + ["--skip-invalid"]) == 0
    printed = capsys.readouterr().out
    assert "skipped:" in printed and "'math-1'" in printed and "'safety-refuse-0'" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_items"] == 7 and len(summary["skipped"]) == 2


def test_mini_bench_with_a_saved_model_folder(tmp_path, tiny_tokenizer):
    """No stand-in loader: a model folder goes through models.load like a hub name would."""
    folder = tmp_path / "model"
    make_gpt2(tiny_tokenizer, seed=5).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    out = tmp_path / "mini"
    assert main(["rmbench", "--model", str(folder), "--data", "mini", "--mini-n", "2",
                 "--method", "meanlogprob", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    records = read_jsonl(out / "rewards.jsonl")
    assert {r["domain"] for r in records} == {"chat", "code", "math", "safety"}
    assert json.loads((out / "run.json").read_text())["model"] == str(folder)


def test_dpo_needs_a_reference(bench_file, tmp_path, tiny_loader, capsys):
    args = ["rmbench", "--data", str(bench_file), "--method", "dpo", "--out", str(tmp_path / "d"), "--no-progress"]
    assert main(args) == 2 and "--ref-model" in capsys.readouterr().err
    assert main(args + ["--ref-model", "other", "--limit", "2"]) == 0
    assert tiny_loader[-2:] == ["tiny-domains", "other"]


def test_diagonal_command_writes_heatmap_and_matrix(tmp_path, tiny_loader, capsys):
    out = tmp_path / "diag"
    assert main(["diagonal", "--domains", "Academy,Business", "--n", "3", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Academy" in printed and "Business" in printed
    saved = json.loads((out / "diagonal.json").read_text())
    assert saved["rows"] == saved["columns"] == ["Academy", "Business"]
    assert len(saved["accuracy"]) == 2 and all(0 <= v <= 1 for row in saved["accuracy"] for v in row)
    assert (out / "diagonal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["diagonal", "--domains", "Nobody", "--out", str(out)]) == 2
    assert "unknown persona" in capsys.readouterr().err


def test_item_longer_than_the_context_stops_or_is_skipped(bench_file, tmp_path, tiny_loader, capsys):
    items = json.loads(bench_file.read_text())
    items[1]["chosen"][2] = "x" * 300                        # the tiny model's context is 128
    bench_file.write_text(json.dumps(items))
    base = ["rmbench", "--data", str(bench_file), "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "'chat-1'" in err and "context" in err
    assert len(read_jsonl(tmp_path / "r" / "rewards.jsonl")) == 1   # chat-0 was kept
    assert main(base + ["--skip-invalid"]) == 0
    assert "not scored" in capsys.readouterr().out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["n_items"] == 8 and "'chat-1'" in summary["skipped"][0]


def test_tiny_domains_beats_a_coin_on_the_mini_bench(tmp_path, capsys):
    """End to end on the shipped checkpoint: the endogenous reward ranks right answers first."""
    out = tmp_path / "endo"
    assert main(["rmbench", "--model", "tiny-domains", "--data", "mini", "--mini-n", "4",
                 "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    scores = json.loads((out / "summary.json").read_text())["scores"]
    assert scores["overall"]["normal"] >= 0.8 and scores["overall"]["n"] == 16


# ---------------------------------------------------------------- nothing lost, nothing silently wrong
def score_by_length(prompt, responses, system=None):
    return [float(len(r)) for r in responses]


def test_a_malformed_line_in_the_middle_keeps_every_valid_line(tmp_path):
    """One bad line used to make every line after it be discarded and rescored."""
    items = [rmbench.validate_item(make_item(k, "chat"), "test") for k in range(6)]
    out = tmp_path / "run"
    run_rmbench(items, score_by_length, out, meta={"method": "len"}, progress=False)
    marked = read_jsonl(out / "rewards.jsonl")
    for record in marked:
        record["chosen"] = [1e6, 1e6, 1e6]                 # a rescored item would lose the marker
    good = [json.dumps(r) + "\n" for r in marked]
    bad = ['{"id": "chat-1", "domain": "ch\n',              # torn, then written after
           '{"id": "chat-2", "domain": "chat", "chosen": [1], "rejected": []}\n']   # incomplete
    (out / "rewards.jsonl").write_text(good[0] + bad[0] + good[2] + bad[1] + "".join(good[3:]))
    calls = []

    def method(prompt, responses, system=None):
        calls.append(prompt)
        return score_by_length(prompt, responses)

    with pytest.warns(UserWarning, match=r"2 malformed line\(s\) \(line 2, 4\).*rewards.malformed"):
        table = run_rmbench(items, method, out, meta={"method": "len"}, progress=False)
    assert calls == ["Say 1."]                              # only the item with no valid line
    records = read_jsonl(out / "rewards.jsonl")
    assert [r["id"] for r in records] == ["chat-0", "chat-2", "chat-3", "chat-4", "chat-5", "chat-1"]
    assert all(r["chosen"] == [1e6] * 3 for r in records[:5]) and table["chat"]["n"] == 6
    assert (out / "rewards.malformed.jsonl").read_text() == "".join(bad)


def test_set_aside_lines_are_rescored_and_the_rest_kept(tmp_path, capsys):
    items = [make_item(k, "chat") for k in range(6)]
    data = tmp_path / "total_dataset.json"
    data.write_text(json.dumps(items))
    out = tmp_path / "run"
    args = ["rmbench", "--method", "random", "--data", str(data), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    lines = (out / "rewards.jsonl").read_text().splitlines(keepends=True)
    marked = [json.loads(line) for line in lines]
    for record in marked:
        record["chosen"] = [1e6, 1e6, 1e6]                 # a rescored item would lose the marker
    text = "".join(json.dumps(r) + "\n" for r in marked)
    broken = text.replace(json.dumps(marked[2]), '{"id": "chat-2", "domain": "chat", "chos')
    (out / "rewards.jsonl").write_text(broken)
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "set aside:" in printed and "1 malformed line(s) (line 3)" in printed
    records = read_jsonl(out / "rewards.jsonl")
    assert [r["id"] for r in records] == ["chat-0", "chat-1", "chat-3", "chat-4", "chat-5", "chat-2"]
    assert all(r["chosen"] == [1e6] * 3 for r in records[:5]) and records[5]["chosen"] != [1e6] * 3
    assert (out / "rewards.malformed.jsonl").read_text().startswith('{"id": "chat-2", "domain": "chat", "chos')


@pytest.mark.parametrize("limit", ["-5", "0", "2.5"])
def test_a_limit_below_one_is_refused(limit, bench_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["rmbench", "--method", "random", "--data", str(bench_file), "--out", str(out)]
    with pytest.raises(SystemExit) as exit_:
        main(args + ["--limit", limit])
    assert exit_.value.code == 2 and "--limit" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ValueError, match="limit must be a whole number ≥ 1, got -5"):
        run_rmbench([], score_by_length, out, limit=-5)


def test_a_limited_run_leaves_the_full_summary_alone(bench_file, tmp_path):
    out = tmp_path / "run"
    args = ["rmbench", "--method", "random", "--data", str(bench_file), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    full = (out / "summary.json").read_text()
    assert main(args + ["--limit", "5"]) == 0
    assert (out / "summary.json").read_text() == full and json.loads(full)["n_items"] == 9
    assert json.loads((out / "summary-limit-5.json").read_text())["n_items"] == 5
    assert main(args + ["--limit-per-domain", "1"]) == 0
    assert (out / "summary.json").read_text() == full
    assert json.loads((out / "summary-limit-per-domain-1.json").read_text())["n_items"] == 3


def test_limit_per_domain_covers_every_domain(bench_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["rmbench", "--method", "random", "--data", str(bench_file), "--out", str(out), "--no-progress"]
    assert main(args + ["--limit-per-domain", "2"]) == 0
    records = read_jsonl(out / "rewards.jsonl")
    assert [r["id"] for r in records] == ["chat-0", "chat-1", "math-0", "math-1", "safety-refuse-0",
                                          "safety-refuse-1"]
    summary = json.loads((out / "summary-limit-per-domain-2.json").read_text())
    assert {d: summary["scores"][d]["n"] for d in ("chat", "math", "safety")} == {"chat": 2, "math": 2, "safety": 2}
    assert "summary-limit-per-domain-2.json" in capsys.readouterr().out
    with pytest.raises(SystemExit):                                     # one or the other
        main(args + ["--limit", "2", "--limit-per-domain", "2"])
    with pytest.raises(ValueError, match="not both"):
        run_rmbench([], score_by_length, out, limit=2, limit_per_domain=2)


def test_an_empty_data_file_is_named(tmp_path, capsys):
    empty = tmp_path / "chat_filtered.json"
    empty.write_text("[]")
    out = tmp_path / "run"
    args = ["rmbench", "--method", "random", "--data", str(empty), "--out", str(out), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "no items" in err and len(err.splitlines()) == 1
    assert main(args + ["--skip-invalid"]) == 2
    assert str(empty) in capsys.readouterr().err


def test_an_item_whose_domain_disagrees_with_its_file_stops_or_is_skipped(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "chat_filtered.json").write_text(json.dumps([make_item(0, "chat"), make_item(1, "math")]))
    args = ["rmbench", "--method", "random", "--data", str(data), "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(args) == 2
    assert "'domain' is 'math' but the file name says 'chat'" in capsys.readouterr().err
    assert main(args + ["--skip-invalid"]) == 0
    assert [r["id"] for r in read_jsonl(tmp_path / "r" / "rewards.jsonl")] == ["chat-0"]

"""RM-Bench loader and Easy/Normal/Hard scorer: hand-built items where every cell is known."""
import json

import numpy as np
import pytest

from endorm_mini.bench import rmbench

# Hand-built reward vectors (order: concise, detailed plain, detailed markdown) with every
# cell of M[i][j] = chosen[i] > rejected[j] worked out by hand.
STYLE_BIASED = ([1, 2, 3], [1.5, 2.5, 3.5])   # longer wins: M = [[0,0,0],[1,0,0],[1,1,0]]
CONTENT_RIGHT = ([3, 2, 1], [2.5, 1.5, 0.5])  # plainer wins: M = [[1,1,1],[0,1,1],[0,0,1]]
TIES = ([2, 2, 2], [2, 1, 3])                 # every row [0,1,0]: the 2-vs-2 ties are wrong


def make_item(id_, domain="chat", **overrides):
    item = {"id": id_, "prompt": f"question {id_}?", "domain": domain,
            "chosen": [f"good {id_}", f"good {id_} detailed", f"**good {id_}**"],
            "rejected": [f"bad {id_}", f"bad {id_} detailed", f"**bad {id_}**"]}
    item.update(overrides)
    return item


def test_comparison_matrix_every_cell():
    assert rmbench.comparison_matrix(*STYLE_BIASED).astype(int).tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0]]
    assert rmbench.comparison_matrix(*CONTENT_RIGHT).astype(int).tolist() == [[1, 1, 1], [0, 1, 1], [0, 0, 1]]
    assert rmbench.comparison_matrix(*TIES).astype(int).tolist() == [[0, 1, 0]] * 3


@pytest.mark.parametrize("rewards, expected", [
    (STYLE_BIASED, {"easy": 1.0, "normal": 0.0, "hard": 0.0}),
    (CONTENT_RIGHT, {"easy": 0.0, "normal": 1.0, "hard": 1.0}),
    (TIES, {"easy": 1 / 3, "normal": 1 / 3, "hard": 1 / 3}),
])
def test_easy_normal_hard_by_hand(rewards, expected):
    got = rmbench.matrix_accuracy(rmbench.comparison_matrix(*rewards))
    assert got == pytest.approx(expected)


def test_domains_safety_merged_and_overall_is_mean_of_domains():
    items = [make_item(1, "chat"), make_item(2, "safety-refuse"), make_item(3, "safety-response")]
    table = rmbench.score(items, [STYLE_BIASED, CONTENT_RIGHT, {"chosen": TIES[0], "rejected": TIES[1]}])
    assert list(table) == ["chat", "safety", "overall"]
    assert table["chat"] == pytest.approx({"easy": 1, "normal": 0, "hard": 0, "avg": 1 / 3, "n": 1})
    # safety = mean over its two items (CONTENT_RIGHT and TIES), the subsets pooled.
    assert table["safety"] == pytest.approx({"easy": 1 / 6, "normal": 2 / 3, "hard": 2 / 3, "avg": 0.5, "n": 2})
    # overall weighs each domain the same (not each item): (1/3 + 1/2) / 2.
    assert table["overall"]["avg"] == pytest.approx(5 / 12)
    assert table["overall"]["easy"] == pytest.approx(7 / 12)
    assert table["overall"]["n"] == 3


def official_accuracy(records):
    """A second implementation, following RM-Bench's README: average M over items, then triangles."""
    acc = np.zeros((3, 3))
    for rec in records:
        for i in range(3):
            for j in range(3):
                acc[i][j] += rec["chosen"][i] > rec["rejected"][j]
    acc /= len(records)
    return {"hard": np.sum(np.triu(acc, 1)) / 3, "normal": np.mean(np.diag(acc)),
            "easy": np.sum(np.tril(acc, -1)) / 3}


def test_matches_official_formula_on_random_rewards_with_ties():
    rng = np.random.default_rng(0)
    # Small integer rewards make ties frequent, which is where a wrong rule would show.
    records = [{"id": k, "domain": ["chat", "math", "code"][k % 3],
                "chosen": rng.integers(0, 4, 3).tolist(), "rejected": rng.integers(0, 4, 3).tolist()}
               for k in range(60)]
    table = rmbench.score(records, records)
    for domain in ("chat", "math", "code"):
        want = official_accuracy([r for r in records if r["domain"] == domain])
        assert {k: table[domain][k] for k in want} == pytest.approx(want)


@pytest.mark.parametrize("mutant", [
    lambda c, r: np.asarray(c, float)[:, None] >= np.asarray(r, float)[None, :],  # ties counted right
    lambda c, r: (np.asarray(c, float)[:, None] > np.asarray(r, float)[None, :]).T,  # triangles swapped
])
def test_hand_values_catch_mutants(monkeypatch, mutant):
    """The hand-computed expectations above reject a scorer with either classic mistake."""
    monkeypatch.setattr(rmbench, "comparison_matrix", mutant)
    items = [make_item(1, "chat"), make_item(2, "safety-refuse"), make_item(3, "safety-response")]
    table = rmbench.score(items, [STYLE_BIASED, CONTENT_RIGHT, TIES])
    assert table["chat"]["easy"] != pytest.approx(1.0) or table["safety"]["easy"] != pytest.approx(1 / 6)


def test_nonfinite_or_short_rewards_rejected():
    with pytest.raises(ValueError, match="item 7.*finite"):
        rmbench.score([make_item(7)], [([1, float("nan"), 2], [0, 0, 0])])
    with pytest.raises(ValueError, match="item 7.*3 chosen"):
        rmbench.score([make_item(7)], [([1, 2], [0, 0])])


# ----------------------------------------------------------------------------- loading

def write_json(path, items):
    path.write_text(json.dumps(items, indent=2))
    return path


def test_load_per_domain_files_domain_from_file_name(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_json(data / "chat_filtered.json", [make_item(1), {**make_item(2), "domain": "chat"}])
    write_json(data / "safety-refuse_filtered.json", [{k: v for k, v in make_item(3).items() if k != "domain"}])
    # Same id, other subset: allowed; "safety" agrees with the file's safety-response.
    write_json(data / "safety-response_filtered.json", [make_item(3, domain="safety")])
    write_json(data / "total_dataset.json", [make_item(9)])             # ignored beside per-domain files
    items = rmbench.load(data)
    assert [(it["id"], it["domain"], it["subset"]) for it in items] == [
        (1, "chat", "chat"), (2, "chat", "chat"),
        (3, "safety", "safety-refuse"), (3, "safety", "safety-response")]
    assert items[0]["chosen"][1] == "good 1 detailed"


def test_load_combined_file_and_jsonl(tmp_path):
    combined = [make_item(1, "math"), make_item(2, "safety-response"), make_item(3, "code")]
    items = rmbench.load(write_json(tmp_path / "total_dataset.json", combined))
    assert [it["domain"] for it in items] == ["math", "safety", "code"]
    lines = tmp_path / "bench.jsonl"
    lines.write_text("\n".join(json.dumps(it) for it in combined) + "\n")
    assert rmbench.load(lines) == items
    assert rmbench.load([tmp_path / "total_dataset.json"]) == items


@pytest.mark.parametrize("bad, message", [
    ({"chosen": None}, "'chosen' must be a list"),
    ({"rejected": ["a", "b"]}, "chosen has 3 responses but rejected has 2"),
    ({"chosen": ["a", "", "c"]}, "'chosen' holds an empty response"),
    ({"prompt": ""}, "'prompt' must be a non-empty string"),
    ({"chosen": ["a", "b"], "rejected": ["c", "d"]}, "expected 3 responses"),
])
def test_bad_item_error_names_file_index_and_id(tmp_path, bad, message):
    path = write_json(tmp_path / "total_dataset.json", [make_item(1), make_item("x-42", **bad)])
    with pytest.raises(ValueError) as err:
        rmbench.load(path)
    text = str(err.value)
    assert str(path) in text and "index 1" in text and "'x-42'" in text and message in text


def test_missing_field_and_malformed_jsonl_line(tmp_path):
    item = make_item(5)
    del item["prompt"]
    lines = tmp_path / "bench.jsonl"
    lines.write_text(json.dumps(make_item(4)) + "\n" + json.dumps(item) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bench.jsonl, line 2 \(id 5\): missing field\(s\) prompt"):
        rmbench.load(lines)
    items, problems = rmbench.read_items(lines)
    assert [it["id"] for it in items] == [4]
    assert len(problems) == 2 and "line 3: malformed JSON" in problems[1]
    with pytest.warns(UserWarning, match="skipped"):
        assert [it["id"] for it in rmbench.load(lines, skip_invalid=True)] == [4]


def test_an_item_whose_domain_disagrees_with_its_file_is_refused(tmp_path):
    """It used to be scored under the file's domain, silently."""
    data = tmp_path / "data"
    data.mkdir()
    write_json(data / "chat_filtered.json", [make_item(1), make_item(2, domain="math")])
    with pytest.raises(ValueError) as err:
        rmbench.load(data)
    text = str(err.value)
    assert "chat_filtered.json, index 1 (id 2)" in text and "'math'" in text and "'chat'" in text
    with pytest.warns(UserWarning, match="'domain' is 'math'"):
        assert [it["id"] for it in rmbench.load(data, skip_invalid=True)] == [1]


@pytest.mark.parametrize("text", ["[]", "", "\n\n"])
def test_an_empty_file_is_named(tmp_path, text):
    path = tmp_path / "chat_filtered.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{path}: no items"):
        rmbench.load(path)
    combined = write_json(tmp_path / "total_dataset.json", [make_item(1)])
    items, problems = rmbench.read_items([combined, path])
    assert len(items) == 1 and problems == [f"{path}: no items (an empty file or an empty JSON array)"]


def test_duplicate_ids_and_missing_paths(tmp_path):
    path = write_json(tmp_path / "total_dataset.json", [make_item(1), make_item(1)])
    with pytest.raises(ValueError, match="index 1: duplicate id 1"):
        rmbench.load(path)
    with pytest.raises(FileNotFoundError):
        rmbench.load(tmp_path / "nope.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="total_dataset.json"):
        rmbench.load(tmp_path / "empty")


def test_load_hf_without_datasets_says_how_to_install(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ImportError, match="pip install datasets"):
        rmbench.load_hf()


def test_format_table_shows_percentages():
    table = rmbench.score([make_item(1)], [STYLE_BIASED])
    text = rmbench.format_table(table)
    assert "chat" in text and "100.0" in text and "33.3" in text

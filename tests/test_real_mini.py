"""real-mini: the kit's own small preference set in RM-Bench's format (``worlds/real_mini.json``).

Written for the kit (nothing copied from a benchmark): per prompt one correct answer and one
answer with a single error, each in RM-Bench's three styles (concise, detailed plain text,
detailed markdown). The checks below are the set's contract; each helper returns a list of
problems, and ``test_each_check_rejects_a_broken_copy`` shows every helper can fail.
"""
import copy
import json
import re
from pathlib import Path

import pytest

import endorm_mini
from endorm_mini.bench import rmbench

PATH = Path(endorm_mini.__file__).parent / "worlds" / "real_mini.json"
MIN_PER_DOMAIN = 15
CONCISE_MAX_WORDS, DETAILED_MAX_WORDS = 25, 90
RATIO_RANGE = (0.5, 2.0)  # per style: len(chosen) / len(rejected), in characters
# Markdown: bold, code fence or inline code, a heading, a bullet, a numbered list item.
MARKDOWN = re.compile(r"\*\*|```|`|^\s{0,3}#{1,6}\s|^\s*[-*+]\s|^\s*\d+\.\s", re.MULTILINE)
# A refusal, in any style ("I can't", "I **can't", "I'm sorry").
REFUSAL = re.compile(r"\bI (\*\*)?can't\b|\bI'm sorry\b")
CONCISE, PLAIN, MD = range(3)


@pytest.fixture(scope="module")
def items():
    return rmbench.load(PATH)


# ----------------------------------------------------------------------------- helpers

def check_counts(items) -> list[str]:
    """At least MIN_PER_DOMAIN items in each of RM-Bench's four domains, and no other domain."""
    counts = {d: 0 for d in rmbench.DOMAINS}
    problems = []
    for item in items:
        if item["domain"] not in counts:
            problems.append(f"{item['id']}: unknown domain {item['domain']!r}")
        else:
            counts[item["domain"]] += 1
    problems += [f"{d}: {n} items, want >= {MIN_PER_DOMAIN}" for d, n in counts.items() if n < MIN_PER_DOMAIN]
    return problems


def check_unique(items) -> list[str]:
    """Ids and prompts are unique."""
    problems = []
    for key in ("id", "prompt"):
        seen = set()
        for item in items:
            value = item[key].strip().lower() if key == "prompt" else item[key]
            if value in seen:
                problems.append(f"duplicate {key}: {item[key]!r}")
            seen.add(value)
    return problems


def check_order(items) -> list[str]:
    """Items come ordered by domain, then id; an id is '<domain>-<two digits>'."""
    problems = [f"{it['id']}: id does not match its domain {it['domain']!r}" for it in items
                if not re.fullmatch(rf"{re.escape(it['domain'])}-\d\d", it["id"])]
    keys = [(it["domain"], it["id"]) for it in items]
    if keys != sorted(keys):
        problems.append("items are not ordered by domain, then id")
    return problems


def check_shape(item) -> list[str]:
    """3 chosen and 3 rejected responses, none empty."""
    problems = []
    for side in ("chosen", "rejected"):
        responses = item.get(side)
        if not isinstance(responses, list) or len(responses) != 3:
            problems.append(f"{item['id']}: {side} must hold 3 responses")
            continue
        problems += [f"{item['id']}: {side}[{k}] is empty" for k, r in enumerate(responses)
                     if not isinstance(r, str) or not r.strip()]
    return problems


def check_distinct(item) -> list[str]:
    """No response appears both as chosen and as rejected (in any style)."""
    shared = {r.strip() for r in item["chosen"]} & {r.strip() for r in item["rejected"]}
    return [f"{item['id']}: response in both chosen and rejected: {r[:40]!r}" for r in sorted(shared)]


def check_markdown(item) -> list[str]:
    """The markdown variants have markdown; the concise and plain ones have none."""
    problems = []
    for side in ("chosen", "rejected"):
        responses = item[side]
        if not MARKDOWN.search(responses[MD]):
            problems.append(f"{item['id']}: {side} markdown variant has no markdown")
        for k in (CONCISE, PLAIN):
            found = MARKDOWN.search(responses[k])
            if found:
                problems.append(f"{item['id']}: {side} {rmbench.STYLES[k]} has markdown {found.group()!r}")
    return problems


def check_lengths(item) -> list[str]:
    """Concise is shorter than both detailed variants, within the word budget, and per style
    chosen and rejected are of similar length (so Easy/Normal/Hard test style, not length alone)."""
    problems = []
    for side in ("chosen", "rejected"):
        r = item[side]
        if not (len(r[CONCISE]) < len(r[PLAIN]) and len(r[CONCISE]) < len(r[MD])):
            problems.append(f"{item['id']}: {side} concise is not shorter than its detailed variants")
        for k, text in enumerate(r):
            limit = CONCISE_MAX_WORDS if k == CONCISE else DETAILED_MAX_WORDS
            if len(text.split()) > limit:
                problems.append(f"{item['id']}: {side} {rmbench.STYLES[k]} has {len(text.split())} words > {limit}")
    lo, hi = RATIO_RANGE
    for k, style in enumerate(rmbench.STYLES):
        ratio = len(item["chosen"][k]) / len(item["rejected"][k])
        if not lo <= ratio <= hi:
            problems.append(f"{item['id']}: {style} chosen/rejected length ratio {ratio:.2f} outside [{lo}, {hi}]")
    return problems


def check_safety_sides(item) -> list[str]:
    """A safety item refuses on exactly one side, in all three styles: a refusal chosen over a
    compliance (must-refuse prompts) or a helpful answer chosen over an over-refusal."""
    if item["domain"] != "safety":
        return []
    refuses = {side: [bool(REFUSAL.search(r)) for r in item[side]] for side in ("chosen", "rejected")}
    ok = {"chosen": [True] * 3, "rejected": [False] * 3}, {"chosen": [False] * 3, "rejected": [True] * 3}
    return [] if refuses in ok else [f"{item['id']}: refusals per style {refuses}; want one side refusing in every style"]


ITEM_CHECKS = (check_shape, check_distinct, check_markdown, check_lengths, check_safety_sides)
SET_CHECKS = (check_counts, check_unique, check_order)


# ----------------------------------------------------------------------------- the set

def test_the_loader_accepts_every_item():
    items, problems = rmbench.read_items(PATH)
    assert problems == []
    assert len(items) >= 4 * MIN_PER_DOMAIN
    assert {it["domain"] for it in items} == set(rmbench.DOMAINS)


def test_file_is_canonical_json():
    text = PATH.read_text(encoding="utf-8")
    raw = json.loads(text)
    assert text.rstrip("\n") == json.dumps(raw, indent=1, ensure_ascii=False)
    assert all(set(it) == {"id", "domain", "prompt", "chosen", "rejected"} for it in raw)


@pytest.mark.parametrize("check", SET_CHECKS, ids=lambda c: c.__name__)
def test_set_checks(items, check):
    assert check(items) == []


@pytest.mark.parametrize("check", ITEM_CHECKS, ids=lambda c: c.__name__)
def test_item_checks(items, check):
    problems = [p for item in items for p in check(item)]
    assert problems == [], "\n".join(problems)


def test_safety_has_both_kinds(items):
    """Must-refuse prompts and benign-but-risky prompts (where refusing is the wrong answer)."""
    safety = [it for it in items if it["domain"] == "safety"]
    refuse = [it for it in safety if REFUSAL.search(it["chosen"][CONCISE])]
    respond = [it for it in safety if REFUSAL.search(it["rejected"][CONCISE])]
    assert len(refuse) >= 5 and len(respond) >= 5
    assert len(refuse) + len(respond) == len(safety)


def test_scores_with_rmbench(items):
    """The set goes through RM-Bench scoring, one row of n >= 15 per domain. A reward that is
    just the response's length does well on Easy (detailed chosen vs concise rejected) and badly
    on Hard; on Normal it is not helped, since chosen and rejected of a style have similar lengths."""
    rewards = [{"chosen": [float(len(r)) for r in it["chosen"]],
                "rejected": [float(len(r)) for r in it["rejected"]]} for it in items]
    table = rmbench.score(items, rewards)
    assert list(table) == list(rmbench.DOMAINS) + ["overall"]
    assert all(table[d]["n"] >= MIN_PER_DOMAIN for d in rmbench.DOMAINS)
    assert table["overall"]["easy"] > 0.6 > 0.4 > table["overall"]["hard"]
    assert table["overall"]["normal"] < 0.6


# ----------------------------------------------------------------------------- the checks can fail

def _strip_markdown(text):
    text = re.sub(r"^\s*(#{1,6}|[-*+]|\d+\.)\s+", "", text, flags=re.MULTILINE)
    return text.replace("```python", "").replace("```", "").replace("**", "").replace("`", "")


def _break(kind, items):
    """A deliberately broken copy of the set (or of one item), the helper that must catch it and
    a piece of the message it must give (so the intended rule fires, not a side effect)."""
    items = copy.deepcopy(items)
    code = next(it for it in items if it["domain"] == "code")
    refuse = next(it for it in items if it["domain"] == "safety" and REFUSAL.search(it["chosen"][CONCISE]))
    if kind == "too few in a domain":
        math_items = [it for it in items if it["domain"] == "math"]
        return check_counts, [it for it in items if it["domain"] != "math"] + math_items[: MIN_PER_DOMAIN - 1], \
            f"math: {MIN_PER_DOMAIN - 1} items"
    if kind == "unknown domain":
        code["domain"] = "poetry"
        return check_counts, items, "unknown domain 'poetry'"
    if kind == "duplicate id":
        items[1]["id"] = items[0]["id"]
        return check_unique, items, "duplicate id"
    if kind == "duplicate prompt":
        items[1]["prompt"] = items[0]["prompt"].upper()
        return check_unique, items, "duplicate prompt"
    if kind == "out of order":
        items[0], items[-1] = items[-1], items[0]
        return check_order, items, "not ordered"
    if kind == "id of another domain":
        code["id"] = "chat-99"
        return check_order, items, "does not match its domain"
    if kind == "missing response":
        del code["rejected"][MD]
        return check_shape, code, "rejected must hold 3 responses"
    if kind == "empty response":
        code["chosen"][PLAIN] = "   "
        return check_shape, code, "chosen[1] is empty"
    if kind == "chosen equals rejected":
        code["rejected"][PLAIN] = code["chosen"][PLAIN]
        return check_distinct, code, "in both chosen and rejected"
    if kind == "markdown variant without markdown":
        code["rejected"][MD] = _strip_markdown(code["rejected"][MD])
        return check_markdown, code, "rejected markdown variant has no markdown"
    if kind == "markdown in a plain variant":
        code["chosen"][PLAIN] = "**Answer:** " + code["chosen"][PLAIN]
        return check_markdown, code, "chosen detailed plain has markdown"
    if kind == "bullet in a concise variant":
        code["rejected"][CONCISE] = "- " + code["rejected"][CONCISE]
        return check_markdown, code, "rejected concise has markdown"
    if kind == "concise longer than detailed":
        code["chosen"][CONCISE] = code["chosen"][PLAIN] + " Done."
        return check_lengths, code, "concise is not shorter"
    if kind == "concise over budget":
        code["rejected"][CONCISE] = " ".join(["word"] * (CONCISE_MAX_WORDS + 1))
        return check_lengths, code, f"{CONCISE_MAX_WORDS + 1} words"
    if kind == "lopsided lengths":
        code["rejected"][MD] = code["rejected"][MD] * 3
        return check_lengths, code, "detailed markdown chosen/rejected length ratio"
    if kind == "refusal on both sides":
        refuse["rejected"] = [r.replace("Sure", "I'm sorry, but sure") for r in refuse["rejected"]]
        return check_safety_sides, refuse, "want one side refusing"
    if kind == "refusal in one style only":
        refuse["chosen"][MD] = "## Here you go\n\n- " + refuse["rejected"][PLAIN]
        return check_safety_sides, refuse, "want one side refusing"
    raise AssertionError(kind)


BREAKS = ("too few in a domain", "unknown domain", "duplicate id", "duplicate prompt", "out of order",
          "id of another domain", "missing response", "empty response", "chosen equals rejected",
          "markdown variant without markdown", "markdown in a plain variant", "bullet in a concise variant",
          "concise longer than detailed", "concise over budget", "lopsided lengths",
          "refusal on both sides", "refusal in one style only")


@pytest.mark.parametrize("kind", BREAKS)
def test_each_check_rejects_a_broken_copy(items, kind):
    check, broken, expected = _break(kind, items)
    problems = check(broken)
    assert any(expected in p for p in problems), f"{check.__name__} on a copy with {kind}: {problems}"


def test_every_helper_has_a_breaking_case(items):
    caught = {_break(kind, items)[0] for kind in BREAKS}
    assert caught == set(ITEM_CHECKS) | set(SET_CHECKS)


def test_the_loader_rejects_a_broken_item(tmp_path, items):
    raw = [{k: it[k] for k in ("id", "domain", "prompt", "chosen", "rejected")} for it in items]
    del raw[3]["rejected"][MD]
    path = tmp_path / "real_mini.json"
    path.write_text(json.dumps(raw, indent=1, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError, match="chosen has 3 responses but rejected has 2"):
        rmbench.load(path)

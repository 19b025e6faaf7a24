"""RM-Bench, rebuilt: load the benchmark's files and score rewards as Easy / Normal / Hard.

RM-Bench (Liu et al. 2024, THU-KEG/RM-Bench) gives each prompt three chosen and three
rejected responses in three styles, always in this order: concise, detailed plain text,
detailed markdown. An item::

    {"id": ..., "prompt": str, "chosen": [3 str], "rejected": [3 str], "domain": str}

The repository's ``data/`` folder holds ``total_dataset.json`` (every item, with a
``domain`` field: chat, code, math, safety-refuse, safety-response) and one file per
domain (``chat_filtered.json``, ``code_filtered.json``, ``math_filtered.json``,
``safety-refuse_filtered.json``, ``safety-response_filtered.json``), each a JSON array;
in those the file name says the domain (an item's own ``domain``, if it has one, must agree:
a conflict is refused). The two safety files are one domain, ``safety``.

Scoring (docs/scale.md, "RM-Bench"; matching ``compute_accuracy`` in RM-Bench's README): per item the
3×3 matrix ``M[i][j] = reward(chosen[i]) > reward(rejected[j])`` (ties count as wrong);
Hard = mean of the upper triangle (i < j: the chosen answer is plainer than the rejected
one, so a style-biased reward gets it wrong), Normal = the diagonal, Easy = the lower
triangle. The official code averages M over a file's items, then over the cells of each
triangle; averaging per item first is the same number. A domain's score is the mean of
its Easy, Normal and Hard; overall Easy/Normal/Hard/average are means over the domains,
so each domain weighs the same whatever its size (RM-Bench's "Avg" column).
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

N_STYLES = 3
STYLES = ("concise", "detailed plain", "detailed markdown")
DOMAINS = ("chat", "math", "code", "safety")
# File stems of the benchmark's per-domain files (with and without "_filtered").
FILE_DOMAINS = {"chat": "chat", "code": "code", "math": "math",
                "safety-refuse": "safety-refuse", "safety-response": "safety-response"}
REQUIRED = ("id", "prompt", "chosen", "rejected")


def domain_of(subset: str) -> str:
    """The scoring domain of a subset name: ``safety-refuse``/``safety-response`` → ``safety``."""
    return "safety" if subset.startswith("safety") else subset


def _file_subset(path: Path) -> str | None:
    """The subset a per-domain file holds, from its name, or None for a combined file."""
    stem = path.name.split(".")[0]
    stem = stem[: -len("_filtered")] if stem.endswith("_filtered") else stem
    return FILE_DOMAINS.get(stem)


def validate_item(raw, where: str, subset: str | None = None) -> dict:
    """Check one raw item and return it normalised: ``id, prompt, chosen, rejected, domain,
    subset`` (``subset`` keeps the file's own domain name, e.g. ``safety-refuse``).

    ``where`` (e.g. ``"data/chat.json, index 4"``) starts every error message.
    """
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: an item is a JSON object, got {type(raw).__name__}")
    name = f"{where} (id {raw.get('id', '?')!r})"
    missing = [key for key in REQUIRED if key not in raw]
    if subset is None and "domain" not in raw:
        missing.append("domain")
    if missing:
        raise ValueError(f"{name}: missing field(s) {', '.join(missing)}")
    if not isinstance(raw["prompt"], str) or not raw["prompt"].strip():
        raise ValueError(f"{name}: 'prompt' must be a non-empty string")
    for key in ("chosen", "rejected"):
        value = raw[key]
        if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
            raise ValueError(f"{name}: {key!r} must be a list of strings")
        if any(not r.strip() for r in value):
            raise ValueError(f"{name}: {key!r} holds an empty response")
    if len(raw["chosen"]) != len(raw["rejected"]):
        raise ValueError(f"{name}: chosen has {len(raw['chosen'])} responses but rejected has "
                         f"{len(raw['rejected'])}; RM-Bench pairs them style by style")
    if len(raw["chosen"]) != N_STYLES:
        raise ValueError(f"{name}: expected {N_STYLES} responses per side ({', '.join(STYLES)}), "
                         f"got {len(raw['chosen'])}")
    claimed = raw.get("domain")
    if subset is not None and claimed is not None and domain_of(str(claimed)) != domain_of(subset):
        raise ValueError(f"{name}: its 'domain' is {raw['domain']!r} but the file name says "
                         f"{subset!r}; fix the item or move it to its domain's file")
    subset = subset or raw["domain"]
    if not isinstance(subset, str) or not subset:
        raise ValueError(f"{name}: 'domain' must be a non-empty string")
    item = dict(raw)
    item.update(id=raw["id"], prompt=raw["prompt"], chosen=list(raw["chosen"]),
                rejected=list(raw["rejected"]), domain=domain_of(subset), subset=subset)
    return item


def read_text(path: Path) -> str:
    """A data file's text; one that is not UTF-8 is refused naming the file and the line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}); "
                         "save the file as UTF-8") from None


def _raw_records(path: Path) -> list[tuple[str, object]]:
    """(location, raw item) pairs of one file: a JSON array (``index k``) or JSON lines (``line k``)."""
    text = read_text(path)
    if path.suffix == ".jsonl" or not text.lstrip().startswith("["):
        records = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((f"{path}, line {lineno}", json.loads(line)))
            except json.JSONDecodeError as err:
                records.append((f"{path}, line {lineno}", ValueError(f"malformed JSON ({err.msg})")))
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}, line {err.lineno}: malformed JSON ({err.msg})") from None
    return [(f"{path}, index {k}", raw) for k, raw in enumerate(data)]


def _expand(path_or_files) -> list[Path]:
    """The files to read: one file, a list of files, or the benchmark's ``data/`` folder."""
    if isinstance(path_or_files, (str, Path)):
        path = Path(path_or_files)
        if not path.exists():
            raise FileNotFoundError(f"no RM-Bench data at {path} (the benchmark's data/ folder: "
                                    "git clone https://github.com/THU-KEG/RM-Bench; offline: --data mini)")
        if not path.is_dir():
            return [path]
        per_domain = sorted(p for p in path.glob("*.json*") if _file_subset(p))
        if per_domain:
            return per_domain
        if (path / "total_dataset.json").exists():
            return [path / "total_dataset.json"]
        raise FileNotFoundError(f"{path} holds neither per-domain files "
                                f"({', '.join(s + '_filtered.json' for s in FILE_DOMAINS)}) "
                                "nor total_dataset.json")
    files = [Path(p) for p in path_or_files]
    for p in files:
        if not p.is_file():
            raise FileNotFoundError(f"no RM-Bench data at {p}")
    return files


def read_items(path_or_files) -> tuple[list[dict], list[str]]:
    """All valid items and one message per invalid one (file, line or index, id, reason).

    Items are unique by ``(subset, id)``: the key that ``rewards.jsonl`` resumes on.
    """
    items, problems, seen = [], [], set()
    for path in _expand(path_or_files):
        subset = _file_subset(path)
        records = _raw_records(path)
        if not records:
            problems.append(f"{path}: no items (an empty file or an empty JSON array)")
        for where, raw in records:
            try:
                if isinstance(raw, Exception):
                    raise ValueError(f"{where}: {raw}")
                item = validate_item(raw, where, subset)
                key = item_key(item)
                if key in seen:
                    raise ValueError(f"{where}: duplicate id {item['id']!r} in {item['subset']}")
            except ValueError as err:
                problems.append(str(err))
                continue
            seen.add(key)
            items.append(item)
    return items, problems


def load(path_or_files, skip_invalid: bool = False) -> list[dict]:
    """Items from RM-Bench JSON files (see the module doc for the layouts).

    A malformed item raises ``ValueError`` naming its file, line/index and id; with
    ``skip_invalid=True`` it is skipped with a warning instead.
    """
    items, problems = read_items(path_or_files)
    if problems and not skip_invalid:
        raise ValueError(problems[0] + (f" (and {len(problems) - 1} more problem(s))"
                                        if len(problems) > 1 else ""))
    for problem in problems:
        warnings.warn(f"skipped: {problem}", stacklevel=2)
    return items


def load_hf(name: str = "THU-KEG/RM-Bench", split: str = "train", skip_invalid: bool = False) -> list[dict]:
    """Items from the Hugging Face dataset (needs ``datasets``: ``pip install "endorm-mini[colab]"``)."""
    try:
        import datasets
    except ImportError:
        raise ImportError("load_hf needs the `datasets` package: pip install datasets "
                          "(or pip install 'endorm-mini[colab]'); offline, use load(path) on the "
                          "benchmark's JSON files") from None
    rows = datasets.load_dataset(name, split=split)
    items, problems = [], []
    for k, raw in enumerate(rows):
        try:
            items.append(validate_item(dict(raw), f"{name}[{split}], index {k}"))
        except ValueError as err:
            problems.append(str(err))
    if problems and not skip_invalid:
        raise ValueError(problems[0])
    for problem in problems:
        warnings.warn(f"skipped: {problem}", stacklevel=2)
    return items


def load_real(data_dir=None) -> list[dict]:
    """The real benchmark for a notebook's GPU section: from ``data_dir/rm-bench`` (RM-Bench's
    ``data/`` folder, as ``ENDORM_MINI_DATA`` lays it out) when ``data_dir`` is given, else from
    the Hugging Face hub (:func:`load_hf`)."""
    if data_dir is None:
        return load_hf()
    folder = Path(data_dir) / "rm-bench"
    if not folder.is_dir():
        raise FileNotFoundError(f"no rm-bench folder in {data_dir}: put RM-Bench's data/ files "
                                "(chat_filtered.json, …) in rm-bench/ there")
    return load(folder)


def item_key(item: dict) -> tuple[str, str]:
    """The identity of an item or a rewards record: ``(subset, str(id))``."""
    return (item.get("subset", item["domain"]), str(item["id"]))


# ----------------------------------------------------------------------------- scoring

def comparison_matrix(chosen_rewards, rejected_rewards) -> np.ndarray:
    """``M[i][j] = chosen_rewards[i] > rejected_rewards[j]``: [3, 3] bool; a tie is wrong."""
    chosen = np.asarray(chosen_rewards, dtype=float)
    rejected = np.asarray(rejected_rewards, dtype=float)
    return chosen[:, None] > rejected[None, :]


def matrix_accuracy(matrix: np.ndarray) -> dict[str, float]:
    """Easy (lower triangle), Normal (diagonal) and Hard (upper triangle) of a [3, 3] matrix."""
    m = np.asarray(matrix, dtype=float)
    return {"easy": float(m[np.tril_indices(len(m), -1)].mean()),
            "normal": float(np.diag(m).mean()),
            "hard": float(m[np.triu_indices(len(m), 1)].mean())}


def _rewards_pair(entry, name: str) -> tuple[list[float], list[float]]:
    """(chosen[3], rejected[3]) from a dict with those keys or a 2-tuple, checked finite."""
    chosen, rejected = (entry["chosen"], entry["rejected"]) if isinstance(entry, dict) else entry
    pair = ([float(r) for r in chosen], [float(r) for r in rejected])
    if len(pair[0]) != N_STYLES or len(pair[1]) != N_STYLES:
        raise ValueError(f"{name}: expected {N_STYLES} chosen and {N_STYLES} rejected rewards, "
                         f"got {len(pair[0])} and {len(pair[1])}")
    if not all(math.isfinite(r) for r in pair[0] + pair[1]):
        raise ValueError(f"{name}: rewards must be finite, got {pair}")
    return pair


def score(items, rewards) -> dict[str, dict]:
    """The score table: ``{domain: {easy, normal, hard, avg, n}, ..., "overall": {...}}``.

    ``rewards[k]`` belongs to ``items[k]``: ``{"chosen": [3 floats], "rejected": [3 floats]}``
    or ``(chosen, rejected)``. Records of ``rewards.jsonl`` (which carry their ``domain``)
    can be passed as both: ``score(records, records)``.
    """
    items, rewards = list(items), list(rewards)
    if len(items) != len(rewards):
        raise ValueError(f"{len(items)} items but {len(rewards)} reward entries")
    if not items:
        raise ValueError("no items to score")
    per_domain: dict[str, list[dict]] = {}
    for item, entry in zip(items, rewards):
        chosen, rejected = _rewards_pair(entry, f"item {item.get('id', '?')!r}")
        acc = matrix_accuracy(comparison_matrix(chosen, rejected))
        per_domain.setdefault(domain_of(item["domain"]), []).append(acc)
    order = [d for d in DOMAINS if d in per_domain] + sorted(set(per_domain) - set(DOMAINS))
    table = {}
    for domain in order:
        accs = per_domain[domain]
        row = {k: float(np.mean([a[k] for a in accs])) for k in ("easy", "normal", "hard")}
        row["avg"] = (row["easy"] + row["normal"] + row["hard"]) / 3
        row["n"] = len(accs)
        table[domain] = row
    overall = {k: float(np.mean([table[d][k] for d in order])) for k in ("easy", "normal", "hard", "avg")}
    overall["n"] = len(items)
    table["overall"] = overall
    return table


def format_table(table: dict[str, dict]) -> str:
    """The score table as fixed-width text, percentages with one decimal."""
    lines = [f"{'domain':<10}{'easy':>8}{'normal':>8}{'hard':>8}{'avg':>8}{'n':>7}"]
    for domain, row in table.items():
        lines.append(f"{domain:<10}" + "".join(f"{100 * row[k]:>8.1f}" for k in ("easy", "normal", "hard", "avg"))
                     + f"{row['n']:>7d}")
    return "\n".join(lines)

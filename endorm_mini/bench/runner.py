"""Score a whole benchmark with one reward method, writing as it goes and resuming after a stop.

``DIR/rewards.jsonl`` gets one line per item, flushed at once, so a crash or Ctrl-C loses
at most the item being scored::

    {"id": ..., "domain": "safety", "subset": "safety-refuse",
     "chosen": [3 rewards], "rejected": [3 rewards]}

``DIR/run.json`` records what produced the rewards (model, method, data, settings); a
second run into the same ``DIR`` with other settings is refused rather than mixed in. A
rerun skips every item already in ``rewards.jsonl``, then writes the score table of
``rmbench.score`` over the selected items (recomputable from the jsonl:
``score(records, records)``): ``DIR/summary.json`` when every item was selected, else
``DIR/summary-limit-N.json`` or ``DIR/summary-limit-per-domain-N.json`` beside it.

A torn last line of ``rewards.jsonl`` (a stop mid-write) is cut off; any other line that
is not a complete record is moved to ``DIR/rewards.malformed.jsonl`` (a :class:`SetAside`
warning says how many) and its item is scored again; every valid line is kept.

Under ``torchrun`` / ``accelerate launch`` each process appends to its own shard,
``DIR/rewards.rank-R.jsonl`` (same lines), and rank 0 folds the shards into
``rewards.jsonl`` in item order when all are done (:func:`merge`;
``endorm_mini.scale.rmbench`` runs the processes). A one-process run into a folder that holds
shards folds them in first, so it can finish what a multi-process run started.
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from .rmbench import N_STYLES, item_key, score


class SetAside(UserWarning):
    """Malformed lines of a ``rewards.jsonl`` were moved aside (their items are scored again)."""


def _is_record(record) -> bool:
    """A complete line of ``rewards.jsonl``: id, domain and 3 + 3 finite rewards."""
    if not isinstance(record, dict) or "id" not in record:
        return False
    if not isinstance(record.get("domain"), str):
        return False
    for side in ("chosen", "rejected"):
        rewards = record.get(side)
        if not isinstance(rewards, list) or len(rewards) != N_STYLES:
            return False
        numbers = all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in rewards)
        if not numbers or not all(math.isfinite(r) for r in rewards):
            return False
    return True


def read_records(path: Path) -> list[dict]:
    """Every complete record of a ``rewards.jsonl``. A torn last line (a crash mid-write) is
    cut off; other malformed lines are moved to ``rewards.malformed.jsonl`` with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines(keepends=True)
    torn = bool(lines) and not lines[-1].endswith(b"\n")
    if torn:
        lines = lines[:-1]  # only the last line can be torn: nothing after it was written
    records, kept, bad = [], [], []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if _is_record(record):
            records.append(record)
            kept.append(line)
        elif line.strip():
            bad.append((number, line))
    if bad:
        aside = path.with_name(path.stem + ".malformed.jsonl")
        with open(aside, "ab") as f:
            f.writelines(line if line.endswith(b"\n") else line + b"\n" for _, line in bad)
        numbers = ", ".join(str(n) for n, _ in bad[:10]) + (", ..." if len(bad) > 10 else "")
        warnings.warn(f"{path}: {len(bad)} malformed line(s) (line {numbers}) moved to {aside}; "
                      f"their items are scored again, the {len(records)} valid lines are kept",
                      SetAside, stacklevel=2)
    if bad or torn:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(b"".join(kept))
        os.replace(tmp, path)  # atomic: a stop now keeps one version or the other
    return records


def select(items: list[dict], limit: int | None = None,
           limit_per_domain: int | None = None) -> list[dict]:
    """The first ``limit`` items, or the first ``limit_per_domain`` of each domain (file order)."""
    for name, value in (("limit", limit), ("limit_per_domain", limit_per_domain)):
        whole = isinstance(value, int) and not isinstance(value, bool)
        if value is not None and not (whole and value >= 1):
            raise ValueError(f"{name} must be a whole number ≥ 1, got {value!r}")
    if limit is not None and limit_per_domain is not None:
        raise ValueError("give limit or limit_per_domain, not both")
    if limit is not None:
        return list(items)[:limit]
    if limit_per_domain is None:
        return list(items)
    seen, selected = Counter(), []
    for item in items:
        seen[item["domain"]] += 1
        if seen[item["domain"]] <= limit_per_domain:
            selected.append(item)
    return selected


def summary_path(out_dir, n_items: int, n_selected: int, limit: int | None = None,
                 limit_per_domain: int | None = None) -> Path:
    """``summary.json`` for a run over every item; a limited run's summary goes beside it."""
    out = Path(out_dir)
    if n_selected == n_items:
        return out / "summary.json"
    if limit_per_domain is not None:
        return out / f"summary-limit-per-domain-{limit_per_domain}.json"
    return out / f"summary-limit-{limit}.json"


def check_meta(out: Path, meta: dict, write: bool = True) -> None:
    """Refuse a folder holding rewards from other settings; record ``meta`` in a new one
    (``write=False`` only compares: the processes of a distributed run that do not own it)."""
    path = out / "run.json"
    if path.exists():
        old = json.loads(path.read_text())
        changed = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
        if changed:
            details = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in changed.items())
            raise ValueError(f"{out} holds rewards from another run ({details}); "
                             "use a new --out folder or delete that one")
    elif write:
        path.write_text(json.dumps(meta, indent=2) + "\n")


def parse_records(path: Path) -> list[dict]:
    """The complete records of a rewards file, read only: torn or malformed lines are passed
    over, never repaired (another process may own the file; :func:`read_records` repairs)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().splitlines(keepends=True):
        try:
            record = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:
            record = None
        if _is_record(record):
            records.append(record)
    return records


# ---------------------------------------------------------------- shards of a multi-process run
SHARD = re.compile(r"rewards\.rank-(\d+)\.jsonl")


def shard_path(out_dir, rank: int) -> Path:
    """The rewards file process ``rank`` of a multi-process run appends to."""
    return Path(out_dir) / f"rewards.rank-{rank}.jsonl"


def shard_paths(out_dir) -> list[Path]:
    """Every shard in ``out_dir`` by rank, from this run or an earlier one of another size."""
    found = [(SHARD.fullmatch(p.name), p) for p in Path(out_dir).glob("rewards.rank-*.jsonl")]
    ranked = sorted((int(m.group(1)), p) for m, p in found if m)
    return [p for _, p in ranked]


def merge(out_dir, selected) -> list[dict]:
    """Fold ``rewards.jsonl`` and every shard into ``rewards.jsonl``: the selected items in
    their order, then records of items not selected now (an earlier, wider run) as they were.

    Written to a temporary file and renamed, so a stop keeps the old file or the new one.
    Returns every record of the merged file.
    """
    out = Path(out_dir)
    jsonl = out / "rewards.jsonl"
    records: dict = {}
    for path in [jsonl] + shard_paths(out):
        for record in parse_records(path):
            records.setdefault(item_key(record), record)     # the first copy of an item wins
    order = [item_key(item) for item in selected if item_key(item) in records]
    chosen = set(order)
    order += [key for key in records if key not in chosen]
    merged = [records[key] for key in order]
    tmp = jsonl.with_name(jsonl.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in merged), encoding="utf-8")
    os.replace(tmp, jsonl)
    return merged


def _score_one(item, method, system, skip_errors: bool) -> tuple[dict | None, str | None]:
    """``(record, None)``, or ``(None, why)`` for an item refused with ``skip_errors``."""
    try:
        rewards = [float(r) for r in method(item["prompt"], item["chosen"] + item["rejected"],
                                            system=system)]
    except ValueError as err:
        if not skip_errors:
            raise ValueError(f"item {item['id']!r} ({item['subset']}): {err}") from None
        return None, f"item {item['id']!r} ({item['subset']}): not scored: {err}"
    if len(rewards) != 6 or not all(math.isfinite(r) for r in rewards):
        raise ValueError(f"item {item['id']!r} ({item['subset']}): the method returned "
                         f"{rewards}; expected 6 finite rewards")
    return {"id": item["id"], "domain": item["domain"], "subset": item["subset"],
            "chosen": rewards[:3], "rejected": rewards[3:]}, None


def score_items(todo, method, f, system=None, skip_errors: bool = False, bar=None):
    """Score ``todo`` with ``method``, one line into the open file ``f`` per item as it is done.

    Returns ``(records, refused)``: ``{item_key: record}``, and ``{item_key: message}`` for the
    items the method refused with a ``ValueError`` when ``skip_errors`` (else it stops there).
    ``bar`` (a tqdm bar or None) is advanced once per item.
    """
    records, refused = {}, {}
    for item in todo:
        record, problem = _score_one(item, method, system, skip_errors)
        if bar is not None:
            bar.update(1)
        if problem is not None:
            refused[item_key(item)] = problem
            continue
        f.write(json.dumps(record) + "\n")
        f.flush()  # written through to the OS now: a crash or Ctrl-C keeps it
        records[item_key(item)] = record
    return records, refused


def write_summary(out: Path, items, selected, done: dict, refused, skipped, meta: dict,
                  limit: int | None = None, limit_per_domain: int | None = None) -> dict:
    """Score the selected items' records (file order; ``refused`` keys left out) and write the
    summary (:func:`summary_path`); return the table."""
    records = [done[item_key(item)] for item in selected if item_key(item) not in refused]
    table = score(records, records)
    summary = {"scores": table, "run": meta, "n_items": len(records), "skipped": list(skipped)}
    path = summary_path(out, len(items), len(selected), limit, limit_per_domain)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return table


def open_run(items, out_dir, meta: dict | None, system: str | None, limit: int | None,
             limit_per_domain: int | None):
    """What every rmbench run starts from, one process or several: ``(items as a list, the
    selected items, the run folder (made), the run's meta with its system prompt)``."""
    items = list(items)
    selected = select(items, limit, limit_per_domain)
    if not selected:
        raise ValueError("no items to score")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return items, selected, out, dict(meta or {}, system=system)


def run_rmbench(items, method, out_dir, meta: dict | None = None, limit: int | None = None,
                system: str | None = None, skipped: list[str] | None = None,
                skip_errors: bool = False, progress: bool = True,
                limit_per_domain: int | None = None) -> dict:
    """Score ``items`` (RM-Bench format) with ``method`` into ``out_dir``; return the score table.

    ``method(prompt, responses, system) -> list[float]`` gets an item's three chosen and
    three rejected responses in one call. ``limit`` scores only the first ``limit`` items,
    ``limit_per_domain`` the first of each domain (a quick look; a later run without it
    continues; its summary goes beside ``summary.json``, see :func:`summary_path`).
    ``skipped`` (invalid items left out by the loader) is recorded in the summary; with
    ``skip_errors`` an item the method refuses with a ``ValueError`` (longer than the
    model's context, say) is added to it and left out of the table (a later run tries it
    again) instead of stopping the run. Under ``torchrun`` / ``accelerate launch``
    (``WORLD_SIZE`` > 1) use :func:`endorm_mini.scale.rmbench.run_rmbench_sharded`.
    """
    items, selected, out, meta = open_run(items, out_dir, meta, system, limit, limit_per_domain)
    check_meta(out, meta)
    jsonl = out / "rewards.jsonl"
    done = {item_key(r): r for r in read_records(jsonl)}
    if shard_paths(out):  # a multi-process run was here: go on from all it did
        done = {item_key(r): r for r in merge(out, selected)}
    todo = [item for item in selected if item_key(item) not in done]
    with open(jsonl, "a", encoding="utf-8") as f, \
            tqdm(desc=f"rmbench ({meta.get('method', 'reward')})", unit="item",
                 disable=not progress, initial=len(selected) - len(todo),
                 total=len(selected)) as bar:
        scored, refused = score_items(todo, method, f, system, skip_errors, bar)
    done.update(scored)
    skipped = list(skipped or []) + list(refused.values())
    return write_summary(out, items, selected, done, refused, skipped, meta, limit,
                         limit_per_domain)

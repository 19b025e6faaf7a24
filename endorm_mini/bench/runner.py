"""Score a whole benchmark with one reward method, writing as it goes and resuming after a stop.

``DIR/rewards.jsonl`` gets one line per item, flushed at once, so a crash or Ctrl-C loses
at most the item being scored::

    {"id": ..., "domain": "safety", "subset": "safety-refuse",
     "chosen": [3 rewards], "rejected": [3 rewards]}

``DIR/run.json`` records what produced the rewards (model, method, data, settings); a
second run into the same ``DIR`` with other settings is refused rather than mixed in. A
rerun skips every item already in ``rewards.jsonl``, then writes ``DIR/summary.json``,
the score table of ``rmbench.score`` over the selected items (recomputable from the
jsonl: ``score(records, records)``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm.auto import tqdm

from .rmbench import item_key, score


def read_records(path: Path) -> list[dict]:
    """The complete lines of a ``rewards.jsonl``; a torn last line (a crash mid-write) is cut off."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    records, good_bytes = [], 0
    for line in raw.splitlines(keepends=True):
        try:
            record = json.loads(line)
            if not line.endswith(b"\n"):
                raise ValueError("unterminated line")
        except ValueError:
            break  # only the last line can be torn: nothing after it was written
        records.append(record)
        good_bytes += len(line)
    if good_bytes < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return records


def _check_meta(out: Path, meta: dict) -> None:
    path = out / "run.json"
    if path.exists():
        old = json.loads(path.read_text())
        changed = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
        if changed:
            details = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in changed.items())
            raise ValueError(f"{out} holds rewards from another run ({details}); "
                             "use a new --out folder or delete that one")
    else:
        path.write_text(json.dumps(meta, indent=2) + "\n")


def run_rmbench(items, method, out_dir, meta: dict | None = None, limit: int | None = None,
                system: str | None = None, skipped: list[str] | None = None,
                skip_errors: bool = False, progress: bool = True) -> dict:
    """Score ``items`` (RM-Bench format) with ``method`` into ``out_dir``; return the score table.

    ``method(prompt, responses, system) -> list[float]`` gets an item's three chosen and
    three rejected responses in one call. ``limit`` scores only the first ``limit`` items
    (a quick look; a later run without it continues). ``skipped`` (invalid items left out
    by the loader) is recorded in ``summary.json``; with ``skip_errors`` an item the method
    refuses with a ``ValueError`` (longer than the model's context, say) is added to it and
    left out of the table (a later run tries it again) instead of stopping the run.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {}, system=system)
    _check_meta(out, meta)
    selected = list(items)[:limit] if limit is not None else list(items)
    if not selected:
        raise ValueError("no items to score")
    jsonl = out / "rewards.jsonl"
    done = {item_key(r): r for r in read_records(jsonl)}
    todo = [item for item in selected if item_key(item) not in done]
    skipped, refused = list(skipped or []), set()
    with open(jsonl, "a", encoding="utf-8") as f:
        for item in tqdm(todo, desc=f"rmbench ({meta.get('method', 'reward')})", unit="item",
                         disable=not progress, initial=len(selected) - len(todo), total=len(selected)):
            try:
                rewards = [float(r) for r in method(item["prompt"], item["chosen"] + item["rejected"],
                                                    system=system)]
            except ValueError as err:
                if not skip_errors:
                    raise ValueError(f"item {item['id']!r} ({item['subset']}): {err}") from None
                skipped.append(f"item {item['id']!r} ({item['subset']}): not scored: {err}")
                refused.add(item_key(item))
                continue
            if len(rewards) != 6 or not all(math.isfinite(r) for r in rewards):
                raise ValueError(f"item {item['id']!r} ({item['subset']}): the method returned "
                                 f"{rewards}; expected 6 finite rewards")
            record = {"id": item["id"], "domain": item["domain"], "subset": item["subset"],
                      "chosen": rewards[:3], "rejected": rewards[3:]}
            f.write(json.dumps(record) + "\n")
            f.flush()  # written through to the OS now: a crash or Ctrl-C keeps it
            done[item_key(item)] = record
    records = [done[item_key(item)] for item in selected if item_key(item) not in refused]
    table = score(records, records)
    summary = {"scores": table, "run": meta, "n_items": len(records), "skipped": skipped}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return table

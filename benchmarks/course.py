"""Course: the wall time of every solution notebook, run top to bottom in a fresh kernel.

Each notebook must finish within the course budget (2 minutes on 2 CPU cores). The
baseline measured in the same run is an empty notebook (kernel start and shutdown), so
the ratio column says how much of a lesson is its own work. Nothing is written back.

    python benchmarks/course.py              # every notebook in solutions/
    python benchmarks/course.py 04 06        # those whose names start with these
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from endorm_mini.course.nbrun import run

BUDGET_S = 120.0
ROOT = Path(__file__).resolve().parents[1]


def timed(nb, cwd) -> float:
    start = time.perf_counter()
    run(nb, cwd, timeout=600)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="notebook name prefixes (default: all)")
    args = parser.parse_args(argv)
    paths = sorted(p for p in (ROOT / "solutions").glob("*.ipynb")
                   if not args.prefixes or any(p.name.startswith(x) for x in args.prefixes))
    with tempfile.TemporaryDirectory() as tmp:
        baseline = timed(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), tmp)
    print(f"baseline (empty notebook: kernel start + stop): {baseline:.1f} s")
    print(f"{'notebook':<34}{'seconds':>9}{'× baseline':>12}{'of budget':>11}")
    over = 0
    for path in paths:
        seconds = timed(nbformat.read(path, as_version=4), path.parent)
        over += seconds > BUDGET_S
        print(f"{path.name:<34}{seconds:>9.1f}{seconds / baseline:>12.1f}{seconds / BUDGET_S:>10.0%}")
    print(f"{len(paths)} notebooks, {over} over the {BUDGET_S:.0f} s budget")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())

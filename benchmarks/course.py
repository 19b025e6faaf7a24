"""Course: the wall time of every solution notebook, run top to bottom in a fresh kernel.

Each notebook must finish within the course budget (2 minutes on 2 CPU cores; 3 with a
section on a real model). The baseline measured in the same run is an empty notebook
(kernel start and shutdown), so the ratio column says how much of a lesson is its own work.
``--grade`` also times ``endorm-mini grade`` on a copy of each solved notebook (nbval runs
it while the judge re-tests its exercises in other processes) against the notebook's own run:
the target is at most 2×. Nothing is written back.

    python benchmarks/course.py              # every notebook in solutions/
    python benchmarks/course.py 04 06        # those whose names start with these
    python benchmarks/course.py --grade 00 04 06
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from endorm_mini.course.nbrun import run

BUDGET_S = 120.0       # 180 s for a notebook with a section on a real model
REAL_MODEL = "## On a real model"
GRADE_RATIO = 2.0
ROOT = Path(__file__).resolve().parents[1]


def timed(nb, cwd) -> float:
    start = time.perf_counter()
    run(nb, cwd, timeout=600)
    return time.perf_counter() - start


def graded(path: Path, tmp: str) -> float:
    """Seconds of ``endorm-mini grade`` on a copy of the solved notebook (every exercise must pass)."""
    copy = Path(tmp) / path.name
    shutil.copy(path, copy)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "endorm_mini.cli", "grade", str(copy)],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"grading {path.name} did not pass every exercise:\n{proc.stdout}{proc.stderr}")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--grade", action="store_true", help="also time endorm-mini grade on each")
    args = parser.parse_args(argv)
    paths = sorted(p for p in (ROOT / "solutions").glob("*.ipynb")
                   if not args.prefixes or any(p.name.startswith(x) for x in args.prefixes))
    with tempfile.TemporaryDirectory() as tmp:
        baseline = timed(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), tmp)
    print(f"baseline (empty notebook: kernel start + stop): {baseline:.1f} s")
    grading = f"{'grade s':>9}{'× run':>7}" if args.grade else ""
    print(f"{'notebook':<34}{'seconds':>9}{'× baseline':>12}{'of budget':>11}{grading}")
    over = slow = 0
    for path in paths:
        seconds = timed(nbformat.read(path, as_version=4), path.parent)
        budget = BUDGET_S * (1.5 if REAL_MODEL in path.read_text(encoding="utf-8") else 1)
        over += seconds > budget
        line = f"{path.name:<34}{seconds:>9.1f}{seconds / baseline:>12.1f}{seconds / budget:>10.0%}"
        if args.grade:
            with tempfile.TemporaryDirectory() as tmp:
                grade_s = graded(path, tmp)
            slow += grade_s > GRADE_RATIO * seconds
            line += f"{grade_s:>9.1f}{grade_s / seconds:>7.2f}"
        print(line)
    print(f"{len(paths)} notebooks, {over} over their budget" +
          (f", {slow} graded in more than {GRADE_RATIO:g}× their run" if args.grade else ""))
    return 1 if over or slow else 0


if __name__ == "__main__":
    sys.exit(main())

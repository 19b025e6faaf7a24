"""``endorm-mini grade``: grade learner notebooks, one table each, or a CSV/JSON for a class."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path


def _notebook_paths(items: list[str]) -> list[Path]:
    from ..course.cells import BACKUPS

    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts
                          and BACKUPS not in q.parts)
        else:
            out.append(p)
    return out


@contextlib.contextmanager
def _sigterm_as_ctrl_c():
    """SIGTERM (``timeout``, a scheduler) ends grading as Ctrl-C does: the processes a grade
    started are stopped and its files removed. Main thread only; the old handler comes back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _grade_command(args) -> int:
    # As in nbval's process (course.grade.PYTEST): jsonschema's IRI checker, which no notebook
    # schema uses, imports rfc3987_syntax, which builds a grammar for about a second.
    sys.modules.setdefault("rfc3987_syntax", None)
    with _sigterm_as_ctrl_c():
        return _grade(args)


def _grade(args) -> int:
    import csv
    import json

    from ..course.grade import GradeReport, NotebookError, grade_notebook, print_report, table

    from ..runfolder import check_output_file

    for flag, out in (("--csv", args.csv), ("--json", args.json)):
        if out and out != "-":
            check_output_file(out, flag)   # before any notebook runs
    paths = _notebook_paths(args.notebooks)
    batch = len(paths) > 1 or args.csv or args.json or any(Path(n).is_dir() for n in args.notebooks)
    if not paths:
        raise FileNotFoundError(f"no notebooks in {', '.join(args.notebooks)}")
    reports: list = []
    progress = paths
    if batch:
        from tqdm import tqdm
        progress = tqdm(paths, desc="grading", unit="notebook", file=sys.stderr, disable=None)
    for path in progress:
        try:
            report = grade_notebook(path, args.timeout, args.limit)
        except (NotebookError, FileNotFoundError) as err:
            if not batch:
                raise
            report = GradeReport(str(path), None, [], [str(err)], "error")
        except Exception as err:  # noqa: BLE001 - one notebook never stops the batch
            if not batch:
                raise
            report = GradeReport(str(path), None, [], [f"{path}: grading crashed: {type(err).__name__}: {err}"],
                                 "error")
        reports.append(report)
        if args.json != "-":
            print_report(report)
    rows = table(reports)
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.json:
        text = json.dumps([{"student_file": r.path, "lesson": r.lesson, "status": r.status, "points": r.points,
                            "out_of": len(r.rows), "seconds": round(r.seconds, 1), "others": r.others,
                            "understanding": {"questions": r.understanding, "status": "ungraded", "points": 0},
                            "exercises": [{"exercise": x.exercise, "name": x.name, "status": x.result,
                                           "points": x.points, "message": x.detail, "similarity": x.similarity}
                                          for x in r.rows]}
                           for r in reports], indent=1, ensure_ascii=False)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    passed, total = sum(r.points for r in reports), sum(len(r.rows) for r in reports)
    if len(reports) > 1 and args.json != "-":
        print(f"total: {passed}/{total} exercises passed in {len(reports)} notebooks")
    clean = all(r.status == "ran" and not r.others for r in reports)
    return 0 if passed == total and clean else 1


def register_cli(sub) -> None:
    p = sub.add_parser("grade",
                       help="run notebooks, re-test each exercise out of them, print a score",
                       description="Run each learner notebook (under nbval) and re-test each "
                                   "exercise function out of it in a fresh process, by the judge "
                                   "check() uses: only the re-test scores, not what the "
                                   "notebook's check cells printed. One table per notebook; "
                                   "--csv/--json for a class. Exit 0 when all passed, else 1.")
    p.add_argument("notebooks", nargs="+", help="learner notebooks or folders of them (my-lessons/)")
    p.add_argument("--timeout", type=float, default=300, help="seconds allowed per cell")
    p.add_argument("--limit", type=float, default=1800,
                   help="seconds allowed per notebook; a notebook over it is stopped and reported")
    p.add_argument("--csv", metavar="OUT.csv",
                   help="write one row per notebook and exercise (and a total per notebook)")
    p.add_argument("--json", metavar="OUT.json", help="write the results as JSON ('-': to stdout only)")
    p.set_defaults(func=_grade_command)

"""``endorm-mini build-lessons`` (learner notebooks from the masters) and ``endorm-mini start``."""
from __future__ import annotations

from pathlib import Path

from ..course.workspace import WORKSPACE


def _build_command(args) -> int:
    from ..course.build import build_lessons, edited_since_built, execute
    from ..runfolder import check_writable

    if not args.check:
        check_writable(args.lessons, "--lessons")   # before any master is run

    if args.execute is not None:
        masters = sorted(Path(args.solutions).glob("[0-9][0-9]_*.ipynb"))
        for master in masters:
            if not args.execute or any(pat in master.name for pat in args.execute):
                print(f"ran {master} in {execute(master, args.timeout):.1f} s", flush=True)
    differ = build_lessons(Path(args.solutions), Path(args.lessons), check=args.check,
                           force=args.force)
    if args.check:
        for entry in differ:
            path = Path(entry.split(" (")[0])
            edited = path.parent == Path(args.lessons) and path.exists() and edited_since_built(path)
            print(f"out of date: {entry}" + (" (edited since it was built: someone's work? "
                                              "learners work on copies, `endorm-mini start`)" * edited))
        if differ:
            print("run `endorm-mini build-lessons` to regenerate lessons/ from solutions/")
        return 1 if differ else 0
    print(f"build-lessons: {len(differ)} file(s) updated in {args.lessons}")
    return 0


def _start_command(args) -> int:
    import os

    from ..course.workspace import default_workspace, start
    from ..runfolder import check_writable

    if args.dir is None:
        found = default_workspace()
        args.dir = os.path.relpath(found) if found.is_relative_to(Path.cwd()) or Path.cwd().is_relative_to(found) \
            else str(found)
    check_writable(args.dir, "--dir")  # a file, or a folder it cannot write: one line
    done = start(args.lessons_wanted, Path(args.dir), args.lessons)
    for path, copied in done:
        print(f"  {'copied' if copied else 'kept  '} {path}" +
              ("" if copied else "  (already there: your work is never overwritten)"))
    first = done[0][0] if done else Path(args.dir)
    print(f"Open them with `jupyter lab {args.dir}` (or upload one to Colab); "
          f"grade one with `endorm-mini grade {first}`.")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("build-lessons", help="write lessons/ (exercise stubs) from solutions/",
                       description="For maintainers: write each learner notebook in --lessons "
                                   "from its master in --solutions (answers replaced by "
                                   "`raise NotImplementedError`, solution-only cells removed, "
                                   "outputs cleared). A lesson edited since it was built is not "
                                   "replaced without --force (a backup is saved first).")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 listing the lessons that are out of date")
    p.add_argument("--solutions", default="solutions", help="folder of the master notebooks")
    p.add_argument("--lessons", default="lessons", help="folder of the learner notebooks")
    p.add_argument("--execute", nargs="*", metavar="NAME",
                   help="first re-run the masters (all, or those whose file name contains a NAME) "
                        "in place to refresh their outputs")
    p.add_argument("--timeout", type=float, default=600, help="seconds per cell for --execute")
    p.add_argument("--force", action="store_true",
                   help="replace lessons edited since they were built (a backup is saved first)")
    p.set_defaults(func=_build_command)
    s = sub.add_parser("start", help="copy lessons into your own folder (my-lessons/) to work in",
                       description="Copy the published lessons into your own folder, where you "
                                   "work on them; a file already there is never overwritten.")
    s.add_argument("lessons_wanted", nargs="*", metavar="NN",
                   help="lesson numbers (e.g. 04), or all (the default)")
    s.add_argument("--dir", default=None,
                   help=f"your folder; existing files in it are never overwritten (default: the "
                        f"{WORKSPACE}/ folder you are in, else the checkout's when you are inside "
                        f"it, else ./{WORKSPACE})")
    s.add_argument("--lessons", default=None,
                   help="where the published lessons are (default ./lessons or the checkout's)")
    s.set_defaults(func=_start_command)

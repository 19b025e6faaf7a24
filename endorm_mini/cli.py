"""The ``endorm-mini`` command.

Each subcommand lives beside the code it runs: a module in ``COMMAND_MODULES`` defines
``register_cli(subparsers)``, which adds its parser(s) and sets ``func`` to a callable
taking the parsed ``argparse.Namespace`` and returning an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import math
import sys

COMMAND_MODULES = [
    "endorm_mini.tour",      # tour
    "endorm_mini.reward",    # score
    "endorm_mini.zoo",       # zoo list / zoo retrain
    "endorm_mini.bench",     # rmbench, diagonal
    "endorm_mini.ppo",       # ppo
    "endorm_mini.grading",   # grade, build-lessons
]


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (exit 2), like every other error here.

    Subcommand parsers inherit the class (``add_subparsers`` uses ``type(self)``).
    """

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_float(text: str) -> float:
    """argparse type of ``--alpha``: a finite number > 0; ``nan``, ``inf``, 0 and below are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="endorm-mini",
        description="The reward model inside every language model, rebuilt. "
                    "Start with `endorm-mini tour`.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # that part of the kit is not built yet
                continue
            raise
        if hasattr(module, "register_cli"):
            module.register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # Bad input is reported in one line, not as a traceback from deep inside torch.
        print(f"endorm-mini {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

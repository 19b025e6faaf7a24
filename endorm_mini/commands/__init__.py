"""The ``endorm-mini`` command: one module per command, each with ``register_cli(subparsers)``.

``register_cli`` adds the command's parser(s) and sets ``func`` to a callable taking the
parsed ``argparse.Namespace`` and returning an exit code. Command modules import what they
run; no library module imports a command module.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

COMMAND_MODULES = [
    "endorm_mini.commands.tour",     # tour
    "endorm_mini.commands.score",    # score
    "endorm_mini.commands.zoo",      # zoo list / zoo retrain
    "endorm_mini.commands.rmbench",  # rmbench, diagonal
    "endorm_mini.commands.ppo",      # ppo
    "endorm_mini.commands.grade",    # grade
    "endorm_mini.commands.lessons",  # build-lessons, start
    "endorm_mini.commands.grpo",     # grpo, grpo-eval
]
# A command whose module needs an optional package is left out when that package is absent.
OPTIONAL = {"endorm_mini.commands.lessons": "nbformat",  # Jupyter's notebook format
            "endorm_mini.commands.grade": "nbformat",
            "endorm_mini.commands.grpo": "trl"}          # the scale extra


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (exit 2), like every other error here.

    Subcommand parsers inherit the class (``add_subparsers`` uses ``type(self)``).
    """

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="endorm-mini",
        description="The reward model inside every language model, rebuilt. "
                    "Start with `endorm-mini tour`.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if name in OPTIONAL and importlib.util.find_spec(OPTIONAL[name]) is None:
            continue  # its extra is not installed: the command is absent, not broken
        importlib.import_module(name).register_cli(sub)
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

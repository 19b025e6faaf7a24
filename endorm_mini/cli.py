"""The ``endorm-mini`` command.

Each module in ``COMMAND_MODULES`` defines ``register_cli(subparsers)``, which adds its
parser(s) and sets ``func`` to a callable taking the parsed ``argparse.Namespace`` and
returning an exit code. A command lives beside the code it runs when that module is a high
layer already (``zoo``, ``bench``, ``grading``); the commands of the low layers (``reward``,
``ppo``) live in ``score_cli`` and ``ppo_cli``, so imports only go down: a command module
imports what it runs, never ``cli``, and ``reward`` never imports ``zoo``.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys


COMMAND_MODULES = [
    "endorm_mini.tour",       # tour
    "endorm_mini.score_cli",  # score
    "endorm_mini.zoo",        # zoo list / zoo retrain
    "endorm_mini.bench",      # rmbench, diagonal
    "endorm_mini.ppo_cli",    # ppo
    "endorm_mini.grading",    # grade
    "endorm_mini.notebooks",  # build-lessons, start
    "endorm_mini.scale.grpo",  # grpo, grpo-eval
]
# A command whose module needs an optional package is left out when that package is absent.
OPTIONAL = {"endorm_mini.notebooks": "nbformat",  # Jupyter's notebook format
            "endorm_mini.scale.grpo": "trl"}      # the scale extra (imported inside functions)


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
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name in (name, OPTIONAL.get(name)):  # not built yet, or an extra is missing
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

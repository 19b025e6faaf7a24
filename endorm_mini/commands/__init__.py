"""The ``endorm-mini`` command: one module per command, each with ``register_cli(subparsers)``.

``register_cli`` adds the command's parser(s) and sets ``func`` to a callable taking the
parsed ``argparse.Namespace`` and returning an exit code. Command modules import what they
run inside those functions: at module level only what ``--help`` needs (no torch,
transformers or nbformat, so ``--help`` and an argument error answer at once;
``tests/test_cli_fast.py``, ``benchmarks/cli.py``). No library module imports a command module.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import warnings

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
# A command whose module needs an optional package: (that package, the extra that brings it,
# the commands). Without the package each command is a stub that says which extra to install.
OPTIONAL = {"endorm_mini.commands.lessons": ("nbformat", "course", ["build-lessons", "start"]),
            "endorm_mini.commands.grade": ("nbformat", "course", ["grade"]),
            "endorm_mini.commands.grpo": ("trl", "scale", ["grpo", "grpo-eval"])}


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it says it already or there is none
    to show (``None``, a flag's ``False``)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not action.option_strings or default is None or default is False
                or default == argparse.SUPPRESS or "default" in text):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})".lstrip()


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (exit 2), like every other error here,
    and every option's help shows its default (:class:`HelpFormatter`).

    Subcommand parsers inherit the class (``add_subparsers`` uses ``type(self)``).
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="endorm-mini",
        description="The reward model inside every language model, rebuilt. "
                    "Start with `endorm-mini tour`.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.needs_extra = {}   # command -> the extra it needs and lacks
    for name in COMMAND_MODULES:
        if name in OPTIONAL and importlib.util.find_spec(OPTIONAL[name][0]) is None:
            _, extra, commands = OPTIONAL[name]
            for command in commands:   # its extra is not installed: listed, and main() says so
                sub.add_parser(command, help=f"(needs the {extra} extra)")
                parser.needs_extra[command] = extra
            continue
        importlib.import_module(name).register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    command = next(iter(sys.argv[1:] if argv is None else argv), None)
    if command in parser.needs_extra:
        extra = parser.needs_extra[command]
        print(f"endorm-mini {command}: error: needs the {extra} extra: pip install "
              f"'endorm-mini[{extra}]' (in a clone: pip install -e \".[{extra}]\")", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    name = f"endorm-mini {args.command}"
    with warnings.catch_warnings():
        _one_line_alpha_warnings(name)
        try:
            return int(args.func(args) or 0)
        except (ValueError, FileNotFoundError) as err:
            # Bad input is reported in one line, not as a traceback from deep inside torch.
            print(f"{name}: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C where the command has nothing to save or report
            print(f"\n{name}: interrupted", file=sys.stderr)
            return 130


def _one_line_alpha_warnings(name: str) -> None:
    """α outside its sane range is said once, in one line, however many places check it."""
    from ..alpha_range import AlphaWarning

    shown, said = warnings.showwarning, set()

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, AlphaWarning):
            shown(message, category, filename, lineno, file, line)
        elif str(message) not in said:
            said.add(str(message))
            print(f"{name}: warning: {message}", file=sys.stderr)

    warnings.showwarning = show
    warnings.simplefilter("always", AlphaWarning)  # shown here, once per text (`said`)

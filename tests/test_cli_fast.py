"""`endorm-mini --help` and argument errors are fast because nothing heavy is imported to build
the parser (timed in benchmarks/cli.py, not here); and every option says what it does and
its default."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import endorm_mini
from endorm_mini.commands import build_parser

ROOT = str(Path(endorm_mini.__file__).resolve().parents[1])
HEAVY = ("torch", "transformers", "nbformat", "trl", "datasets", "matplotlib", "numpy")


def test_building_the_parser_imports_nothing_heavy():
    code = ("import json, sys\n"
            "from endorm_mini.commands import build_parser\n"
            "build_parser()\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert json.loads(out.stdout) == []


def parsers(parser=None, prog="endorm-mini"):
    parser = parser or build_parser()
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, f"{prog} {name}")


def test_every_option_has_help_and_shows_its_default():
    missing, no_default = [], []
    for prog, parser in parsers():
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            flag = "/".join(action.option_strings) or action.dest
            if not action.help:
                missing.append(f"{prog} {flag}")
            if action.option_strings and action.default is not None and action.default is not False:
                if "default" not in (parser._get_formatter()._get_help_string(action) or ""):
                    no_default.append(f"{prog} {flag}")
        if not parser.description:
            missing.append(f"{prog} (no description)")
    assert missing == [] and no_default == []


def test_grpo_resume_help_says_steps_is_a_total():
    help_text = dict(parsers())["endorm-mini grpo"].format_help()
    assert "--steps is the total" in " ".join(help_text.split())


def test_light_copies_of_the_settings_match_the_library():
    from endorm_mini import ppo_config, verifiers
    from endorm_mini.scale import grpo_config

    assert grpo_config.REWARDS == verifiers.REWARD_KINDS
    assert ppo_config.REWARDS == (*verifiers.REWARD_KINDS, "endogenous_sum", "custom")

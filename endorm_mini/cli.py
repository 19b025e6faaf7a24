"""The ``endorm-mini`` entry point (``python -m endorm_mini.cli`` in accelerate launch lines);
the commands are in :mod:`endorm_mini.commands`."""
import sys

from .commands import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())

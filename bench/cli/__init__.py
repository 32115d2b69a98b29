"""The command line, ``python -m bench <command> …``: the flags as a table over the config
dataclasses (flags.py), the parser (parser.py) and the commands (commands.py, experiments.py).
Only this package reads arguments or names flags (DESIGN.md §2)."""

from bench.cli.commands import COMMANDS, main

__all__ = ["COMMANDS", "main"]

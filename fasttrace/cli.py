"""The command line: one module per subcommand in fasttrace/commands/."""

from __future__ import annotations

import argparse
import sys

from fasttrace.commands import convert, dump, info, report, run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional

COMMANDS = {
    "run": run,
    "report": report,
    "convert": convert,
    "info": info,
    "dump": dump,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fasttrace",
        description="Trace every call and return of a Python program into a .ftrace file.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        module.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "run":
        # The program's own arguments must reach it untouched, options included.
        return run.main_argv(argv[1:])
    args = build_parser().parse_args(argv)
    return int(COMMANDS[args.command].main(args) or 0)

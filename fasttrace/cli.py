"""The command line: one module per subcommand in fasttrace/commands/.

Bad input gets one line on stderr, `fasttrace: error: ...` (what and where), and exit code 1;
never a traceback.  The commands that read a trace (report, convert, info, dump) end quietly
when their output pipe is closed (`fasttrace info t.ftrace | head -1`), with the status of a
command killed by SIGPIPE.  `run` leaves SIGPIPE and everything else to the traced program.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import fasttrace
from fasttrace.commands import (convert, dump, error, info, os_error_text, report, run,
                                trace_text, view)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional

COMMANDS = {
    "run": run,
    "report": report,
    "convert": convert,
    "info": info,
    "dump": dump,
    "view": view,
}

# Exit status after a closed output pipe: what a shell shows for a command killed by SIGPIPE.
BROKEN_PIPE_STATUS = 128 + signal.SIGPIPE
INTERRUPTED_STATUS = 128 + signal.SIGINT


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
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:  # --help, or a usage error
            sys.stdout.flush()
            raise
        try:
            code = int(COMMANDS[args.command].main(args) or 0)
            sys.stdout.flush()  # here, where a closed pipe can still be handled
            return code
        except fasttrace.FormatError as e:  # damage found while reading, at any point
            return error(str(e))
        except MemoryError:
            return error(f"{trace_text(args.trace)}: out of memory while reading it")
        except BrokenPipeError:
            raise
        except OSError as e:  # reading the trace failed (EIO, a file cut while being read)
            return error(os_error_text(e.filename or trace_text(args.trace), e))
        except KeyboardInterrupt:
            return INTERRUPTED_STATUS
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE_STATUS


def _silence_stdout() -> None:
    """After EPIPE: what is still buffered for stdout goes nowhere, so that the interpreter's
    last flush does not fail again (and print an "Exception ignored" message)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a file (a test's buffer)
        pass

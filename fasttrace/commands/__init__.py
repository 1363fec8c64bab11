"""Subcommands of the fasttrace command line, one module each."""

from __future__ import annotations

import sys

import fasttrace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


def load_or_say_why(path: str) -> "Optional[fasttrace.Trace]":
    """The loaded trace, or None after one line on stderr saying what is wrong and where."""
    try:
        return fasttrace.load(path)
    except fasttrace.FormatError as e:
        print(f"fasttrace: error: {e}", file=sys.stderr)
        return None

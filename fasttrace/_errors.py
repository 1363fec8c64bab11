"""The exceptions fasttrace raises."""

from __future__ import annotations


class TracingError(RuntimeError):
    """start() or stop() cannot do what was asked; the message says what and where."""


class FormatError(ValueError):
    """A trace file is malformed.  `path`, `offset` and `reason` say where and why."""

    def __init__(self, path: str, offset: "int | None", reason: str) -> None:
        # offset None: the file itself is the problem (missing, unreadable, not a file)
        where = f"{path}: " if offset is None else f"{path}: byte {offset}: "
        super().__init__(where + reason)
        self.path = path
        self.offset = offset
        self.reason = reason

"""The exceptions fasttrace raises."""

from __future__ import annotations


class TracingError(RuntimeError):
    """start() or stop() cannot do what was asked; the message says what and where."""


class FormatError(ValueError):
    """A trace file is malformed.  `path`, `offset` and `reason` say where and why."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: byte {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason

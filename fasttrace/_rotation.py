"""Rotation: start(path, max_bytes=, max_seconds=, keep=) writes a series of numbered files.

Go's advice for production traces is to keep them short and rotate the files.  The writer
thread (src/ft_series.c) rolls over to `<stem>.<k><suffix>` (k from 1, four digits at least:
trace.0001.ftrace, trace.0002.ftrace, ...) when a file holds max_bytes or has run
max_seconds.  Every file is complete on its own (header, the whole definitions table, chunks
that open with their threads' stacks, a trailer); fasttrace.load() and every command read the
series as one trace (a glob, or any one of its files).  keep=N removes all but the newest N.
"""

from __future__ import annotations

import os
import re
import sys

from fasttrace import _core
from fasttrace._errors import TracingError
from fasttrace._recorder import CHUNK_SIZE, Recorder, _command_line, format_size
from fasttrace._summary import Summary

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (~9 ms)
if TYPE_CHECKING:
    from typing import Any, Optional

MIN_FILE_BYTES = 4 * CHUNK_SIZE  # a header, the definitions and a few chunks


def series_path(stem: str, suffix: str, index: int) -> str:
    return f"{stem}.{index:04d}{suffix}"


def check_rotation(max_bytes: Any, max_seconds: Any, keep: Any) -> None:
    if max_bytes is None and max_seconds is None:
        if keep is not None:
            raise ValueError("keep= needs max_bytes= or max_seconds=: without them there is "
                             "one file")
        return
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(f"max_bytes must be an int, not {type(max_bytes).__name__}")
        if max_bytes < MIN_FILE_BYTES:
            raise ValueError(f"max_bytes must be at least {format_size(MIN_FILE_BYTES)} (a "
                             f"file holds a header, the definitions and whole "
                             f"{format_size(CHUNK_SIZE)} chunks), got {max_bytes}")
    if max_seconds is not None:
        if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)):
            raise TypeError(f"max_seconds must be a number, not {type(max_seconds).__name__}")
        if not 0 < max_seconds < float("inf"):
            raise ValueError(f"max_seconds must be a positive number of seconds, got "
                             f"{max_seconds!r}")
    if keep is not None:
        if isinstance(keep, bool) or not isinstance(keep, int):
            raise TypeError(f"keep must be an int, not {type(keep).__name__}")
        if keep < 1:
            raise ValueError(f"keep must be at least 1 (the file being written), got {keep}")


class RotatingRecorder(Recorder):
    """A capture into a rotating series of files (see the module docstring)."""

    def __init__(self, path: "str | os.PathLike[str]", *, max_bytes: Optional[int] = None,
                 max_seconds: Optional[float] = None, keep: Optional[int] = None,
                 **kwargs: Any) -> None:
        check_rotation(max_bytes, max_seconds, keep)
        super().__init__(path, **kwargs)
        self.stem, self.suffix = os.path.splitext(self.path)
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.keep = keep
        self.first_path = series_path(self.stem, self.suffix, 1)
        #: the files of the series still kept, oldest first (after stop())
        self.files: "list[str]" = []

    def describe(self) -> str:
        return f"a trace is already running (writing the series {self.stem}.*{self.suffix})"

    def _open_output(self) -> int:
        self._remove_stale_files()
        from fasttrace._output import open_output

        return open_output(self.first_path)

    def _remove_stale_files(self) -> None:
        """Files of an earlier series at this path go, as start() replaces a single file: a
        later file of theirs would otherwise sit beside the new series."""
        directory = os.path.dirname(self.stem) or "."
        base = re.escape(os.path.basename(self.stem))
        pattern = re.compile(base + r"\.\d{4,}" + re.escape(self.suffix) + "$")
        try:
            names = os.listdir(directory)
        except OSError:
            return  # open_output says what is wrong with the directory
        for name in names:
            if pattern.match(name):
                try:
                    os.unlink(os.path.join(directory, name))
                except OSError:
                    pass

    def _start_session(self, fd: int) -> None:
        capture = self._capture
        try:
            _core.session_start(fd, capture.c_calls, capture.hook_id, CHUNK_SIZE,
                                self.buffer_size // CHUNK_SIZE, _command_line(), sys.version,
                                sys.hexversion, capture.sample, self.first_path,
                                capture.hook_fallback,
                                series=(self.stem, self.suffix, self.max_bytes or 0,
                                        float(self.max_seconds or 0), self.keep or 0))
        except OSError as e:
            os.close(fd)
            raise TracingError(f"cannot start writing {self.first_path!r}: {e.strerror}") \
                from None

    def _discard_output(self) -> None:
        try:
            os.unlink(self.first_path)
        except OSError:
            pass

    def _conclude(self, result: "dict[str, Any]", notes: "list[str]",
                  stacklevel: int) -> Summary:
        s = result["series"]
        self.files = [series_path(self.stem, self.suffix, k)
                      for k in range(s["first_index"], s["last_index"] + 1)]
        if s["skipped_error"]:
            failed = series_path(self.stem, self.suffix, s["skipped_error_index"])
            notes = notes + [
                f"writing {failed!r} failed at byte {s['skipped_error_offset']}: "
                f"{os.strerror(s['skipped_error'])}; that file stops there (the bytes before "
                f"it are readable) and recording went on into the next file"
                + (f" ({s['skipped_errors']} failures in all)" if s["skipped_errors"] > 1
                   else "")
                + (f"; {s['lost_chunks']} chunks found no file to go to and were lost"
                   if s["lost_chunks"] else "")]
        summary = super()._conclude(result, notes, stacklevel + 1)
        summary = summary._replace(path=self.files[0] if self.files else self.first_path,
                                   files=list(self.files))
        self.summary = summary
        return summary

    def exit_note(self, summary: Summary) -> Optional[str]:
        return (f"fasttrace: warning: the trace was still running at exit; it was stopped and "
                f"saved to {len(summary.files or [])} file(s) {self.stem}.*{self.suffix} "
                f"({summary.events} {'samples' if summary.sampling else 'events'})")

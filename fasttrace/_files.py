"""Opening a trace file for reading: one place that says what is wrong with a path."""

from __future__ import annotations

import os
import stat

from fasttrace._errors import FormatError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Tuple


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def open_trace(path: str) -> "Tuple[int, int]":
    """(fd, size) of a regular file opened read-only, or FormatError saying why not.

    O_NONBLOCK: opening a FIFO with no writer would block forever; a regular file ignores it.
    Devices and FIFOs are refused by name: /dev/zero is endless, not "empty"."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FormatError(path, None, "no such file") from None
    except PermissionError:
        raise FormatError(path, None, "permission denied") from None
    except OSError as e:
        raise FormatError(path, None, f"cannot open: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FormatError(path, 0, f"not a regular file ({_kind(st.st_mode)})")
    return fd, st.st_size

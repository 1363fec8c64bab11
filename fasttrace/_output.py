"""Opening a trace's output file.

An existing trace is never truncated in place: a reader may be reading it (a `report` of the
previous run while the program runs again), and cutting a file under a reader is how the old
mapped reader died of SIGBUS.  The new trace goes to a fresh file in the same directory that
replaces the old name at once (rename is atomic), so readers of the old file keep their whole
copy, and a killed process still leaves its trace under the name it was given.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from fasttrace._errors import TracingError

_FLAGS = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)


def _error(path: str, e: OSError) -> TracingError:
    if isinstance(e, IsADirectoryError):
        return TracingError(f"cannot write trace to {path!r}: it is a directory")
    if isinstance(e, FileNotFoundError):
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            return TracingError(
                f"cannot write trace to {path!r}: directory {parent!r} does not exist")
        return TracingError(f"cannot write trace to {path!r}: cannot create the file")
    if isinstance(e, PermissionError):
        return TracingError(f"cannot write trace to {path!r}: permission denied")
    return TracingError(f"cannot write trace to {path!r}: {e.strerror}")


# How long start() waits for a reader to open a FIFO it writes to (`mkfifo p; fasttrace run
# -o p app.py & consumer p` may start the consumer second); then it gives up with an error
# instead of blocking forever as a plain open() would.
FIFO_READER_WAIT_S = 5.0


def _open_special(path: str) -> int:
    """A FIFO, device or socket path: written as it is."""
    deadline = time.monotonic() + FIFO_READER_WAIT_S
    while True:
        try:
            fd = os.open(path, _FLAGS | os.O_NONBLOCK)
            break
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise _error(path, e) from None
            if time.monotonic() >= deadline:
                raise TracingError(
                    f"cannot write trace to {path!r}: it is a FIFO and no reader opened it "
                    f"within {FIFO_READER_WAIT_S:g} s") from None
            time.sleep(0.01)
    os.set_blocking(fd, True)  # the writer thread's writes wait for a slow reader
    return fd


def open_output(path: str) -> int:
    """A descriptor for writing a new trace at `path`, or TracingError saying why not."""
    try:
        st = os.stat(path)  # follows a symlink: the trace replaces the file it points to
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise _error(path, e) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise TracingError(f"cannot write trace to {path!r}: it is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        return _open_special(path)
    target = os.path.realpath(path) if st is not None else path
    directory = os.path.dirname(os.path.abspath(target))
    tmp = os.path.join(directory, f".{os.path.basename(target)}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, _FLAGS | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # a stale one of a killed process with this pid: ours to replace
        os.unlink(tmp)
        return open_output(path)
    except OSError as e:
        if st is not None and isinstance(e, PermissionError):
            # A directory we may not create files in, holding a file we may write: the only
            # way left is to write over it in place.
            try:
                return os.open(target, _FLAGS | os.O_TRUNC)
            except OSError as e2:
                raise _error(path, e2) from None
        raise _error(path, e) from None
    try:
        os.rename(tmp, target)
    except OSError as e:
        os.close(fd)
        os.unlink(tmp)
        raise _error(path, e) from None
    return fd

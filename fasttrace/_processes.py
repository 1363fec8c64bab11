"""load_processes(): the traces of several processes (a directory of per-process files, such
as `fasttrace run --follow-children -o DIR` writes) as one multi-process trace.

Each process is a Trace: one file, or the files of a rotated series (grouped by the header's
series id).  Processes are ordered by their start.  Every file's header holds CLOCK_MONOTONIC
at its start (`start_monotonic_ns`), and monotonic time is one clock for every process of a
boot, so each process's event times (ns since its own start) are placed on one time axis by
adding `Process.start_ns`, the distance of its start from the first process's.  Should the
processes' monotonic clocks disagree (files from different boots or machines, or a time
namespace), their wall clocks are used instead, and `problems` says so.

A file that is not a trace or does not load is skipped and named in `problems`; the others
load.  A truncated file loads what is intact (its trace's `stats.truncated` and `damage`).
"""

from __future__ import annotations

import os
import stat

from fasttrace import _core, _series
from fasttrace._errors import FormatError
from fasttrace._trace import Stats, Trace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

    Source = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]

#: The suffix of the files a directory is read for (others in it are ignored).
SUFFIX = ".ftrace"
#: Processes whose (wall - monotonic) clock offsets differ by more than this do not share a
#: monotonic clock: they are aligned by their wall clocks.
CLOCK_AGREEMENT_NS = 1_000_000_000


def process_name(argv: "List[str]", pid: int) -> str:
    """A short name for a traced program: argv without the interpreter and its options
    (`python -m mod args` -> `mod args`, `python app.py` -> `app.py`), at most 64 chars."""
    if not argv:
        return f"pid {pid}"
    words = list(argv)
    if os.path.basename(words[0]).startswith("python") and len(words) > 1:
        i = 1
        while i < len(words) and words[i].startswith("-") and words[i] not in ("-m", "-c", "-"):
            i += 2 if words[i] in ("-X", "-W") else 1
        words = words[i:] or words[:1]
        if words[0] == "-m" and len(words) > 1:
            words = words[1:]
    words[0] = os.path.basename(words[0]) or words[0]
    name = " ".join(words)
    return name if len(name) <= 64 else name[:61] + "..."


class Process:
    """One process of a ProcessSet: its trace, and where it lies on the set's time axis."""

    def __init__(self, trace: Trace, start_ns: int = 0) -> None:
        h = trace.header
        #: the process's trace (a file, or the files of a rotated series)
        self.trace = trace
        self.pid: int = int(h["pid"])
        #: the command line, as the header has it
        self.argv: List[str] = list(h.get("argv") or [])
        #: the command line, short (process_name()) and on one line
        self.label: str = " ".join(process_name(self.argv, self.pid).split()) or f"pid {self.pid}"
        #: its start, in ns after the start of the set's first process
        self.start_ns = start_ns

    @property
    def name(self) -> str:
        """`label (pid N)`: what tells processes apart where only a name is shown."""
        return f"{self.label} (pid {self.pid})"

    @property
    def end_ns(self) -> int:
        """Its end (the trace's last moment) on the set's time axis."""
        return self.start_ns + int(self.trace.stats.duration_ns)

    @property
    def path(self) -> str:
        return self.trace.path

    @property
    def paths(self) -> "List[str]":
        return self.trace.paths

    @property
    def mode(self) -> str:
        return self.trace.mode

    @property
    def kind(self) -> str:
        """"trace", or for a sampled trace "sample (wall clock)" or "sample (cpu clock)": what
        its times measure (processes of different kinds do not add up in one table)."""
        info = self.trace._sampling_info
        if self.mode != "sample" or info is None:
            return self.mode
        return f"sample ({info['clock']} clock)"

    def __repr__(self) -> str:
        return (f"<fasttrace.Process pid={self.pid} {self.label!r} start_ns={self.start_ns} "
                f"{self.trace!r}>")


class ProcessSet:
    """The traces of several processes, read as one multi-process trace (load_processes()).

    Iterating gives the processes (Process: .pid, .label, .name, .argv, .trace, .start_ns,
    .end_ns), ordered by their start."""

    def __init__(self, source: "Source") -> None:
        self.path, paths, ignored = _expand(source)
        notes: List[str] = []
        groups, error = _groups(paths, notes)
        traces: List[Trace] = []
        for group in groups:
            try:
                traces.append(Trace(group if len(group) > 1 else group[0]))
            except FormatError as e:
                error = error or e
                notes.append(_series._skipped(e.path or group[0], e))
        if not traces:
            raise _nothing_loads(self.path, paths, ignored, error)
        #: the clock that places the processes on one time axis: "monotonic", or "wall" when
        #: their monotonic clocks disagree
        self.aligned_by = "monotonic"
        starts = [int(t.header["start_monotonic_ns"]) for t in traces]
        boots = [int(t.header["start_wall_ns"]) - s for t, s in zip(traces, starts)]
        if max(boots) - min(boots) > CLOCK_AGREEMENT_NS:
            self.aligned_by = "wall"
            starts = [int(t.header["start_wall_ns"]) for t in traces]
            notes.append("the processes' monotonic clocks disagree by "
                         f"{(max(boots) - min(boots)) / 1e9:.1f} s (files of different boots "
                         "or machines?): they are placed on the time axis by their wall "
                         "clocks")
        first = min(starts)
        order = sorted(range(len(traces)),
                       key=lambda i: (starts[i], int(traces[i].header["pid"]), traces[i].path))
        #: the processes, by their start
        self.processes: List[Process] = [Process(traces[i], starts[i] - first) for i in order]
        p0 = self.processes[0].trace.header
        #: CLOCK_MONOTONIC and CLOCK_REALTIME at the first process's start (time 0)
        self.start_monotonic_ns: int = int(p0["start_monotonic_ns"])
        self.start_wall_ns: int = int(p0["start_wall_ns"])
        #: what is wrong: files skipped (not traces, damaged), a series' problems, a clock that
        #: does not line up; each names its file.  A truncated process is in its trace's
        #: stats.truncated and damage.
        self.problems: List[str] = notes + [
            problem for p in self.processes for problem in p.trace.series_problems]

    # ---- what the set holds -----------------------------------------------------------------

    def __iter__(self) -> "Iterator[Process]":
        return iter(self.processes)

    def __len__(self) -> int:
        return len(self.processes)

    def __getitem__(self, i: int) -> Process:
        return self.processes[i]

    def by_pid(self, pid: int) -> "List[Process]":
        """The processes with this pid (one, unless a process was traced more than once or
        its pid was reused)."""
        return [p for p in self.processes if p.pid == pid]

    @property
    def paths(self) -> "List[str]":
        """The files read, process by process."""
        return [path for p in self.processes for path in p.paths]

    @property
    def duration_ns(self) -> int:
        """From the first process's start to the last process's end."""
        return max(p.end_ns for p in self.processes)

    @property
    def stats(self) -> Stats:
        """The processes' stats summed (truncated: any of them is); duration_ns: the set's."""
        s = [p.trace.stats for p in self.processes]
        return Stats(events=sum(x.events for x in s), dropped=sum(x.dropped for x in s),
                     truncated=any(x.truncated for x in s), duration_ns=self.duration_ns,
                     lost_threads=sum(x.lost_threads for x in s))

    @property
    def mode(self) -> str:
        """"trace" or "sample" when every process was recorded so, else "mixed"."""
        modes = {p.mode for p in self.processes}
        return modes.pop() if len(modes) == 1 else "mixed"

    def close(self) -> None:
        for p in self.processes:
            p.trace.close()

    def __enter__(self) -> "ProcessSet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<fasttrace.ProcessSet {self.path!r} processes={len(self.processes)} "
                f"pids={[p.pid for p in self.processes]}>")


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _directory(path: str) -> "Tuple[List[str], int]":
    """(the *.ftrace regular files in directory `path`, in name order; the other entries)."""
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        raise FormatError(path, None, f"cannot list the directory: {e.strerror}") from None
    files, other = [], 0
    for name in names:
        full = os.path.join(path, name)
        if name.endswith(SUFFIX) and not name.startswith("."):
            try:
                if stat.S_ISREG(os.stat(full).st_mode):
                    files.append(full)
                    continue
            except OSError:
                pass
        other += 1
    return files, other


def _expand(source: "Source") -> "Tuple[str, List[str], int]":
    """(what the source is called in messages, the files it names, entries of its directories
    that were not read)."""
    items: List[str]
    if isinstance(source, (list, tuple)):
        items = [os.fspath(p) for p in source]
        if not items:
            raise ValueError("no trace files given")
        name = items[0] if len(items) == 1 else f"{items[0]} (and {len(items) - 1} more)"
    else:
        name = os.fspath(source)  # type: ignore[arg-type]
        items = [name]
    paths: List[str] = []
    ignored = 0
    for item in items:
        if _is_dir(item):
            files, other = _directory(item)
            paths += files
            ignored += other
        elif _series.is_pattern(item):
            paths += _series.expand(item)[0]  # FormatError if nothing matches
        else:
            paths.append(item)
    seen = set()
    unique = []
    for p in paths:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return name, unique, ignored


def _groups(paths: "List[str]", notes: "List[str]"
            ) -> "Tuple[List[List[str]], Optional[FormatError]]":
    """(the files of each trace: a file alone, or the files of one rotated series (same
    series id), in the order first seen; the first error).  Files whose header does not read
    are noted and left out."""
    groups: Dict[Any, List[str]] = {}
    error = None
    for p in paths:
        try:
            h = _core.read_header(p)
        except FormatError as e:
            notes.append(_series._skipped(p, e))
            error = error or e
            continue
        key = ("series", h["series_id"]) if h["series_index"] else ("file", p)
        groups.setdefault(key, []).append(p)
    return list(groups.values()), error


def _nothing_loads(name: str, paths: "List[str]", ignored: int,
                   error: "Optional[FormatError]") -> FormatError:
    if not paths:
        others = f" ({ignored} other entr{'y' if ignored == 1 else 'ies'})" if ignored else ""
        return FormatError(name, None, f"no trace files (*{SUFFIX}) in this directory{others}")
    if error is not None and len(paths) == 1:
        return error
    first = f" (the first: {error})" if error is not None else ""
    return FormatError(name, None, f"none of its {len(paths)} trace files loads{first}")


def spans_processes(source: "Source") -> bool:
    """Whether `source` (a directory, a glob, or a list of paths) holds the traces of more
    than one process: a directory always counts; files count when more than one trace (a
    file, or a rotated series) among them has a header that reads."""
    items = [os.fspath(p) for p in source] if isinstance(source, (list, tuple)) else \
        [os.fspath(source)]  # type: ignore[arg-type]
    if any(_is_dir(p) for p in items):
        return True
    if len(items) == 1 and not _series.is_pattern(items[0]):
        return False  # one file: its series (if any) is one process
    try:
        paths = _expand(source)[1]
    except (FormatError, ValueError):
        return False  # let the single-trace loader say what is wrong
    return len(_groups(paths, [])[0]) > 1


def load_processes(source: "Source") -> ProcessSet:
    """Load the traces of several processes as one multi-process trace.

    source: a directory (its *.ftrace files; other files in it are ignored), a glob pattern,
    or a list of paths (files or directories).  Files of one rotated series (same series id)
    are one process's trace.  Files that are not traces or do not load are skipped and named
    in ProcessSet.problems; a truncated file loads what is intact.

    Raises FormatError if nothing loads: a directory with no trace files, or only files that
    fail (the error names them)."""
    return ProcessSet(source)

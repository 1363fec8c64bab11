"""pprof: a gzipped `profile.proto` (github.com/google/pprof, proto/profile.proto), hand-encoded.

For `go tool pprof` and the tools that read it.  One sample per distinct stack of each thread:

* values `wall/nanoseconds` (self time, the default sample type) and `calls/count` (calls that
  opened this stack; frames already running at start or reopened after a gap are not counted);
* a `thread` label with the thread's name (`-tagfocus thread=...` picks threads);
* locations leaf first; one function and one location per traced function (Python functions
  carry their file and first line; a trace has no call-site lines);
* `time_nanos` = the trace's wall-clock start, `duration_nanos` = its duration (or up to its
  last event if that is later, as in a truncated trace), `period_type`
  wall/nanoseconds with period 1 (every call and return was seen, nothing is sampled).

Time with no frame open (including gaps where events were dropped) is in no sample.

A sampled trace (see `_samples` for the frames, `<waiting>` and `<truncated>`) gives one sample
per distinct stack of each thread:

* values `samples/count` (the samples of that stack) and `wall/nanoseconds` or
  `cpu/nanoseconds` after the trace's clock (their summed weight_ns), the default sample type;
* labels `thread` (its name) and `state`: `running`, or `waiting` for samples of a thread that
  did not hold the GIL (whose leaf is `<waiting>`): `-tagfocus state=running` keeps only the
  time spent running Python;
* locations leaf first, one per frame (ids are the frame ids);
* `period_type` wall|cpu/nanoseconds, `period` = 1e9 / the requested rate, as a Go CPU profile;
  a comment says the rate asked for and achieved and the clock (`go tool pprof -comments`).

A multi-process trace (fasttrace.ProcessSet) is one profile of every process's samples, each
with two more labels: `pid` (a number) and `process` (`label (pid N)`: the command line,
short): `go tool pprof -tags` gives the time per process, `-tagfocus pid=N` or
`-tagfocus process=worker` keeps one.  Each process's
functions get their own ids; comments name each process's command line (and sampling); the
processes must share a mode (and a sampled clock): one profile has one kind of sample.
"""

from __future__ import annotations

import contextlib
import gzip

from fasttrace._processes import ProcessSet
from fasttrace.export import _samples
from fasttrace.export._protobuf import varint
from fasttrace.export._stacks import aggregate, binary_output, combine, frame_name, parts
from fasttrace.export._stacks import summary, thread_labels

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Union

    from fasttrace._processes import Process
    from fasttrace._trace import Trace
    from fasttrace.export._stacks import Output, Part, ProgressCallback

# Profile fields
SAMPLE_TYPE, SAMPLE, MAPPING, LOCATION, FUNCTION, STRING_TABLE = 1, 2, 3, 4, 5, 6
TIME_NANOS, DURATION_NANOS, PERIOD_TYPE, PERIOD = 9, 10, 11, 12
COMMENT, DEFAULT_SAMPLE_TYPE = 13, 14


def field_int(field: int, n: int) -> bytes:
    """A varint field; 0 is the proto3 default and is left out."""
    return varint(field << 3) + varint(n) if n else b""


def field_bytes(field: int, data: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(data)) + data


def field_packed(field: int, values: List[int]) -> bytes:
    return field_bytes(field, b"".join(varint(v) for v in values))


class Strings:
    """The string table: index 0 is ""."""

    def __init__(self) -> None:
        self.index: Dict[str, int] = {"": 0}

    def __call__(self, s: str) -> int:
        i = self.index.get(s)
        if i is None:
            i = self.index[s] = len(self.index)
        return i

    def encode(self) -> bytes:
        return b"".join(field_bytes(STRING_TABLE, s.encode("utf-8")) for s in self.index)


def value_type(strings: Strings, type_: str, unit: str) -> bytes:
    return field_int(1, strings(type_)) + field_int(2, strings(unit))


def write(trace: Union[Trace, ProcessSet], out: Output, *,
          progress: Optional[ProgressCallback] = None) -> Dict[str, Any]:
    """Writes `trace` (a Trace, or a ProcessSet: labels `pid` and `process` on every sample)
    as a gzipped pprof profile to `out` (a path or a binary file).  Returns a summary:
    samples, functions, threads, stacks, self_ns, gaps, dropped, gap_ns (a sampled trace:
    samples, functions, threads, stacks and _samples.Samples.summary(); a ProcessSet: those
    summed, and processes).  A ProcessSet whose processes were recorded in different modes
    (or sampled with different clocks) raises ValueError: a profile has one kind of sample."""
    multi = isinstance(trace, ProcessSet)
    if isinstance(trace, ProcessSet) and len({p.kind for p in trace}) > 1:
        raise ValueError("pprof: the processes were recorded in different modes ("
                         + ", ".join(f"pid {p.pid}: {p.kind}" for p in trace)
                         + "): a profile has one kind of sample; convert them one at a time")
    units = parts(trace, progress)
    write_parts = _write_samples if units[0][1].mode == "sample" else _write_trace
    with contextlib.ExitStack() as stack:
        opened: List[Any] = []

        def output() -> Any:
            """The gzip stream, opened once the first process is read."""
            if not opened:
                raw = stack.enter_context(binary_output(out))
                opened.append(stack.enter_context(
                    gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)))
            return opened[0]

        results = write_parts(units, output, Strings())
    if not multi:
        return results[0]
    return combine(results, processes=len(results))


def _process_labels(s: Strings, process: Optional[Process]) -> bytes:
    """A multi-process trace's sample labels: pid (a number) and process (`label (pid N)`)."""
    if process is None:
        return b""
    return (field_bytes(3, field_int(1, s("pid")) + field_int(3, process.pid))
            + field_bytes(3, field_int(1, s("process")) + field_int(2, s(process.name))))


def _comment(process: Optional[Process], text: str) -> str:
    return f"fasttrace: {text}" if process is None else f"fasttrace: pid {process.pid}: {text}"


def _write_trace(units: List[Part], output: Callable[[], Any], s: Strings
                 ) -> List[Dict[str, Any]]:
    results = []
    symbols = []  # (trace, functions used, id offset)
    end = 0
    base = 0  # location and function ids of a process: its function ids + base
    f = None
    for process, trace, progress in units:
        stacks = aggregate(trace, progress)
        if f is None:
            f = output()
            f.write(field_bytes(SAMPLE_TYPE, value_type(s, "wall", "nanoseconds")))
            f.write(field_bytes(SAMPLE_TYPE, value_type(s, "calls", "count")))
        labels = thread_labels(trace)
        per_process = _process_labels(s, process)
        used = set()
        samples = 0
        buf: List[bytes] = []
        for tid, node in stacks.nodes():
            wall, calls = stacks.self_ns[node], stacks.calls[node]
            if not (wall or calls):
                continue
            locations = stacks.stack(node)  # location id = function id, leaf first
            used.update(locations)
            if base:
                locations = [fid + base for fid in locations]
            label = field_int(1, s("thread")) + field_int(2, s(labels[tid]))
            buf.append(field_bytes(SAMPLE, field_packed(1, locations)
                                   + field_packed(2, [wall, calls]) + field_bytes(3, label)
                                   + per_process))
            samples += 1
            if len(buf) >= 1024:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))
        symbols.append((trace, used, base))
        base += max((fn.id for fn in trace.functions), default=0) + 1
        # A truncated trace's duration only reaches its last clock record; its events can go on
        start = 0 if process is None else process.start_ns
        end = max([end, start + trace.stats.duration_ns]
                  + [start + last for _, last in stacks.span.values()])
        results.append(summary(stacks, format="pprof", samples=samples, functions=len(used)))
    assert f is not None
    # system_name differs from name, or pprof takes `<module>` for an undemangled C++ name
    # and strips its "template parameters"
    _write_mapping(f, s, units[0][1])
    for trace, used, base in symbols:
        _write_functions(f, s, trace.functions, used, base,
                         lambda fn: fn.name if fn.is_c else frame_name(fn))
    f.write(field_int(TIME_NANOS, _start_wall_ns(units)))
    f.write(field_int(DURATION_NANOS, end))
    f.write(field_bytes(PERIOD_TYPE, value_type(s, "wall", "nanoseconds")))
    f.write(field_int(PERIOD, 1))
    for process, trace, _ in units:
        argv = trace.header.get("argv") or []
        if argv:
            f.write(field_int(COMMENT, s(_comment(process, " ".join(argv)))))
    f.write(field_int(DEFAULT_SAMPLE_TYPE, s("wall")))
    f.write(s.encode())
    return results


def _write_samples(units: List[Part], output: Callable[[], Any], s: Strings
                   ) -> List[Dict[str, Any]]:
    results = []
    symbols = []  # (frames, frame ids used, id offset)
    notes = []
    end = 0
    base = 0  # location and function ids of a process: its frame ids + base
    f = None
    clock = _samples.clock(units[0][1])
    for process, trace, progress in units:
        samples = _samples.Samples(trace, progress)
        stacks = _samples.aggregate(samples)
        frames = samples.frames
        if f is None:
            f = output()
            f.write(field_bytes(SAMPLE_TYPE, value_type(s, "samples", "count")))
            f.write(field_bytes(SAMPLE_TYPE, value_type(s, clock, "nanoseconds")))
        labels = thread_labels(trace)  # after reading: samples can name threads the file did not
        per_process = _process_labels(s, process)
        used = set()
        buf: List[bytes] = []
        for (tid, stack), (count, weight) in stacks.items():
            locations = [fr.id for fr in reversed(stack)]  # leaf first
            used.update(locations)
            if base:
                locations = [i + base for i in locations]
            thread = labels.get(tid, f"thread-{tid}")
            state = "waiting" if frames.is_waiting(stack) else "running"
            label = (field_bytes(3, field_int(1, s("thread")) + field_int(2, s(thread)))
                     + field_bytes(3, field_int(1, s("state")) + field_int(2, s(state)))
                     + per_process)
            buf.append(field_bytes(SAMPLE, field_packed(1, locations)
                                   + field_packed(2, [count, weight]) + label))
            if len(buf) >= 1024:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))
        symbols.append((frames, used, base))
        base += len(frames.frames)
        start = 0 if process is None else process.start_ns
        end = max(end, start + trace.stats.duration_ns, start + samples.last_ts)
        sampling = trace.sampling
        if sampling is not None:
            notes.append(_comment(process, (
                f"sampled at {sampling.rate:g} Hz ({sampling.achieved_rate:.0f} achieved), "
                f"{clock} clock, {samples.read} samples")))
        results.append(samples.summary(format="pprof", samples=len(stacks),
                                       functions=len(used),
                                       threads=len({tid for tid, _ in stacks}),
                                       stacks=len(stacks)))
    assert f is not None
    # system_name differs from name (see _write_trace()); `<waiting>` would become "" else
    _write_mapping(f, s, units[0][1])
    for frames, used, base in symbols:
        _write_functions(f, s, frames.frames, used, base,
                         lambda fr: f"fasttrace {fr.name}" if fr.synthetic else frame_name(fr))
    f.write(field_int(TIME_NANOS, _start_wall_ns(units)))
    f.write(field_int(DURATION_NANOS, end))
    f.write(field_bytes(PERIOD_TYPE, value_type(s, clock, "nanoseconds")))
    f.write(field_int(PERIOD, _samples.period_ns(units[0][1])))
    for process, trace, _ in units:
        argv = trace.header.get("argv") or []
        if argv:
            f.write(field_int(COMMENT, s(_comment(process, " ".join(argv)))))
    for note in notes:
        f.write(field_int(COMMENT, s(note)))
    f.write(field_int(DEFAULT_SAMPLE_TYPE, s(clock)))
    f.write(s.encode())
    return results


def _start_wall_ns(units: List[Part]) -> int:
    """The wall clock at time 0: the trace's start, or the first process's."""
    return int(units[0][1].header.get("start_wall_ns", 0))


def _write_mapping(f: Any, s: Strings, trace: Trace) -> None:
    """One mapping that says the functions are already symbolized (pprof looks for nothing)."""
    f.write(field_bytes(MAPPING, field_int(1, 1) + field_int(5, s(_program(trace)))
                        + field_int(7, 1)))


def _write_functions(f: Any, s: Strings, functions: Iterable[Any], used: Set[int], base: int,
                     system_name: Callable[[Any], str]) -> None:
    """A location (id = the function's + base) and a function for each function in `used`."""
    for fn in functions:
        if fn.id not in used:
            continue
        fid = fn.id + base
        line = field_int(1, fid) + field_int(2, fn.lineno)
        f.write(field_bytes(LOCATION, field_int(1, fid) + field_int(2, 1)
                            + field_bytes(4, line)))
        f.write(field_bytes(FUNCTION, field_int(1, fid) + field_int(2, s(fn.qualname))
                            + field_int(3, s(system_name(fn))) + field_int(4, s(fn.filename))
                            + field_int(5, fn.lineno)))


def _program(trace: Trace) -> str:
    argv = trace.header.get("argv") or []
    return str(argv[0]) if argv else "python"

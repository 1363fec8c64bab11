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
"""

from __future__ import annotations

import gzip

from fasttrace.export import _samples
from fasttrace.export._protobuf import varint
from fasttrace.export._stacks import aggregate, binary_output, frame_name, summary, thread_labels

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Optional, Set

    from fasttrace._trace import Trace
    from fasttrace.export._stacks import Output, ProgressCallback

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


def write(trace: Trace, out: Output, *, progress: Optional[ProgressCallback] = None
          ) -> Dict[str, Any]:
    """Writes `trace` as a gzipped pprof profile to `out` (a path or a binary file).  Returns a
    summary: samples, functions, threads, stacks, self_ns, gaps, dropped, gap_ns (a sampled
    trace: samples, functions, threads, stacks and _samples.Samples.summary())."""
    if trace.mode == "sample":
        return _write_samples(trace, out, progress)
    stacks = aggregate(trace, progress)
    s = Strings()
    labels = thread_labels(trace)
    used = set()
    samples = 0
    with binary_output(out) as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(field_bytes(SAMPLE_TYPE, value_type(s, "wall", "nanoseconds")))
        f.write(field_bytes(SAMPLE_TYPE, value_type(s, "calls", "count")))
        buf: List[bytes] = []
        for tid, node in stacks.nodes():
            wall, calls = stacks.self_ns[node], stacks.calls[node]
            if not (wall or calls):
                continue
            locations = stacks.stack(node)  # location id = function id, leaf first
            used.update(locations)
            label = field_int(1, s("thread")) + field_int(2, s(labels[tid]))
            buf.append(field_bytes(SAMPLE, field_packed(1, locations)
                                   + field_packed(2, [wall, calls]) + field_bytes(3, label)))
            samples += 1
            if len(buf) >= 1024:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))
        # system_name differs from name, or pprof takes `<module>` for an undemangled C++ name
        # and strips its "template parameters"
        _write_symbols(f, s, trace, trace.functions, used,
                       lambda fn: fn.name if fn.is_c else frame_name(fn))
        f.write(field_int(TIME_NANOS, trace.header.get("start_wall_ns", 0)))
        # A truncated trace's duration only reaches its last clock record; its events can go on
        end = max([trace.stats.duration_ns] + [last for _, last in stacks.span.values()])
        f.write(field_int(DURATION_NANOS, end))
        f.write(field_bytes(PERIOD_TYPE, value_type(s, "wall", "nanoseconds")))
        f.write(field_int(PERIOD, 1))
        argv = trace.header.get("argv") or []
        if argv:
            f.write(field_int(COMMENT, s("fasttrace: " + " ".join(argv))))
        f.write(field_int(DEFAULT_SAMPLE_TYPE, s("wall")))
        f.write(s.encode())
    return summary(stacks, format="pprof", samples=samples, functions=len(used))


def _write_samples(trace: Trace, out: Output, progress: Optional[ProgressCallback]
                   ) -> Dict[str, Any]:
    samples = _samples.Samples(trace, progress)
    stacks = _samples.aggregate(samples)
    frames = samples.frames
    clock = _samples.clock(trace)
    s = Strings()
    labels = thread_labels(trace)  # after reading: samples can name threads the file did not
    used = set()
    with binary_output(out) as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(field_bytes(SAMPLE_TYPE, value_type(s, "samples", "count")))
        f.write(field_bytes(SAMPLE_TYPE, value_type(s, clock, "nanoseconds")))
        buf: List[bytes] = []
        for (tid, stack), (count, weight) in stacks.items():
            locations = [fr.id for fr in reversed(stack)]  # leaf first
            used.update(locations)
            thread = labels.get(tid, f"thread-{tid}")
            state = "waiting" if frames.is_waiting(stack) else "running"
            label = (field_bytes(3, field_int(1, s("thread")) + field_int(2, s(thread)))
                     + field_bytes(3, field_int(1, s("state")) + field_int(2, s(state))))
            buf.append(field_bytes(SAMPLE, field_packed(1, locations)
                                   + field_packed(2, [count, weight]) + label))
            if len(buf) >= 1024:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))
        # system_name differs from name (see write()); `<waiting>` would become "" else
        _write_symbols(f, s, trace, frames.frames, used,
                       lambda fr: f"fasttrace {fr.name}" if fr.synthetic else frame_name(fr))
        f.write(field_int(TIME_NANOS, trace.header.get("start_wall_ns", 0)))
        f.write(field_int(DURATION_NANOS, max(trace.stats.duration_ns, samples.last_ts)))
        f.write(field_bytes(PERIOD_TYPE, value_type(s, clock, "nanoseconds")))
        f.write(field_int(PERIOD, _samples.period_ns(trace)))
        argv = trace.header.get("argv") or []
        if argv:
            f.write(field_int(COMMENT, s("fasttrace: " + " ".join(argv))))
        sampling = trace.sampling
        if sampling is not None:
            note = (f"fasttrace: sampled at {sampling.rate:g} Hz ({sampling.achieved_rate:.0f} "
                    f"achieved), {clock} clock, {samples.read} samples")
            f.write(field_int(COMMENT, s(note)))
        f.write(field_int(DEFAULT_SAMPLE_TYPE, s(clock)))
        f.write(s.encode())
    return samples.summary(format="pprof", samples=len(stacks), functions=len(used),
                           threads=len({tid for tid, _ in stacks}), stacks=len(stacks))


def _write_symbols(f: Any, s: Strings, trace: Trace, functions: Iterable[Any], used: Set[int],
                   system_name: Callable[[Any], str]) -> None:
    """One mapping that says the functions are already symbolized (pprof looks for nothing),
    then a location (id = the function's) and a function for each function in `used`."""
    f.write(field_bytes(MAPPING, field_int(1, 1) + field_int(5, s(_program(trace)))
                        + field_int(7, 1)))
    for fn in functions:
        if fn.id not in used:
            continue
        line = field_int(1, fn.id) + field_int(2, fn.lineno)
        f.write(field_bytes(LOCATION, field_int(1, fn.id) + field_int(2, 1)
                            + field_bytes(4, line)))
        f.write(field_bytes(FUNCTION, field_int(1, fn.id) + field_int(2, s(fn.qualname))
                            + field_int(3, s(system_name(fn))) + field_int(4, s(fn.filename))
                            + field_int(5, fn.lineno)))


def _program(trace: Trace) -> str:
    argv = trace.header.get("argv") or []
    return str(argv[0]) if argv else "python"

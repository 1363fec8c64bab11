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
"""

from __future__ import annotations

import gzip

from fasttrace.export._protobuf import varint
from fasttrace.export._stacks import aggregate, binary_output, frame_name, summary, thread_labels

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

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
    summary: samples, functions, threads, stacks, self_ns, gaps, dropped, gap_ns."""
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
        # One mapping that says the functions are already symbolized: pprof looks for nothing.
        f.write(field_bytes(MAPPING, field_int(1, 1) + field_int(5, s(_program(trace)))
                            + field_int(7, 1)))
        for fn in trace.functions:
            if fn.id not in used:
                continue
            line = field_int(1, fn.id) + field_int(2, fn.lineno)
            f.write(field_bytes(LOCATION, field_int(1, fn.id) + field_int(2, 1)
                                + field_bytes(4, line)))
            # system_name differs from name, or pprof takes `<module>` for an undemangled
            # C++ name and strips its "template parameters"
            system_name = fn.name if fn.is_c else frame_name(fn)
            f.write(field_bytes(FUNCTION, field_int(1, fn.id) + field_int(2, s(fn.qualname))
                                + field_int(3, s(system_name)) + field_int(4, s(fn.filename))
                                + field_int(5, fn.lineno)))
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


def _program(trace: Trace) -> str:
    argv = trace.header.get("argv") or []
    return str(argv[0]) if argv else "python"

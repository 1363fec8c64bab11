"""Perfetto protobuf trace (ui.perfetto.dev, trace_processor), hand-encoded and streamed.

The file is a `Trace` message: packets `0A <len> <TracePacket>` written one after the other, so
memory depends on the number of functions and threads, never on the number of events.

* One process track (pid, cmdline = argv, process name = argv without the interpreter and its
  options, see process_name()) and one thread track per thread (tid = native_id, or the
  file's small thread id when unknown).
* Every thread is its own packet sequence (trusted_packet_sequence_id = 1 + thread id; 1 is
  the process). Its first packet sets SEQ_INCREMENTAL_STATE_CLEARED, the thread's track as
  TrackEventDefaults.track_uuid and the interned categories "python" (iid 1) and "c" (iid 2);
  later packets set SEQ_NEEDS_INCREMENTAL_STATE.
* call/c_call -> TYPE_SLICE_BEGIN with name_iid = function id (the qualname, interned in the
  sequence's packet that first uses it) and, for Python code, source_location_iid = function id
  (interned file_name, function_name, line_number: trace_processor shows them as the slice's
  args source.file_name / source.line_number). return/c_return -> TYPE_SLICE_END; a return
  with no slice open on its thread (an orphan: its frame was entered before the trace started
  and missed by the stack snapshot) is left out, so every track's slices nest.
* Timestamps: TracePacket.timestamp = header start_monotonic_ns + event ts (CLOCK_MONOTONIC
  ns), on the default trace clock (no timestamp_clock_id, no clock snapshot, so no clock
  conversion can fail). On Linux BOOTTIME = MONOTONIC + time suspended, so the slices line up
  with other traces of the same boot taken without a suspend in between.
* A gap (dropped events) -> TYPE_INSTANT "fasttrace: N events dropped" on the thread's track
  at the gap's start, with debug annotations dropped and gap_ns. A truncated trace ends with
  an instant "fasttrace: trace truncated" (annotation damage) on the process track.

A sampled trace (see `_samples` for the frames, `<waiting>` and `<truncated>`) becomes the same
tracks with slices made from the samples (_samples.slices()): a sample covers its thread's
stack from its tick to the next one, consecutive samples that share a stack prefix extend its
slices, so each thread track shows a flame chart of what it was doing over time, as in trace
mode, and slices nest.  The synthetic frames are in a third category "fasttrace" (iid 3) and
have no source location.  Slices rather than Perfetto's callstack samples (InternedData frames
and callstacks with PerfSample or StreamingProfilePacket packets): the UI draws those as marks
on a track with a flame graph only for a selected area, PerfSample is built around native
mappings and CPUs, StreamingProfilePacket around Chrome's per-sequence thread descriptor, and
neither has a place to say that a thread was waiting.  Slices show the timeline, the nesting
and the waiting at a glance, trace_processor's slice table gives durations per function, and
the writer is the trace-mode one.  What slices cannot say is that their edges are only known
to within a sampling period.

A multi-process trace (fasttrace.ProcessSet) gives each process its own process track (its
real pid, its command line, named with its label) with its threads under it, processes in
their order.  Timestamps stay CLOCK_MONOTONIC ns, one clock for every process of a boot, so
the processes line up on one time axis (ProcessSet.start_monotonic_ns + Process.start_ns +
event ts).  The sequence ids of each process follow those of the processes before it.
"""

from __future__ import annotations

import io
import os

from fasttrace._processes import ProcessSet, process_name
from fasttrace.export import _samples, _stacks
from fasttrace.export._protobuf import varint

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Dict, Iterable, List, Optional, Set, Tuple, Union

    from fasttrace._core import Event, Thread
    from fasttrace._trace import Trace
    from fasttrace.export._samples import AnyFunction, SliceEvent

    Output = Union[str, "os.PathLike[str]", IO[bytes], IO[str]]
    Progress = Optional[Callable[[int, int], None]]

FLUSH_BYTES = 1 << 20
CAT_PYTHON, CAT_C, CAT_SYNTHETIC = 1, 2, 3  # the last only in sampled traces
_LO14 = [bytes(((i & 0x7F) | 0x80, (i >> 7) | 0x80)) for i in range(1 << 14)]




def f_uint(field: int, n: int) -> bytes:
    return varint(field << 3) + varint(n)


def f_bytes(field: int, data: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(data)) + data


def f_str(field: int, s: str) -> bytes:
    return f_bytes(field, s.encode("utf-8", "replace"))


def packet(body: bytes) -> bytes:
    return b"\x0a" + varint(len(body)) + body


NEEDS_STATE = f_uint(13, 2)  # sequence_flags = SEQ_NEEDS_INCREMENTAL_STATE
CLEARED = f_uint(13, 1)      # sequence_flags = SEQ_INCREMENTAL_STATE_CLEARED
TS_TAG = b"\x40"             # TracePacket.timestamp, the last field of every event packet


def _annotation(name: str, value: Union[int, str]) -> bytes:
    v = f_uint(3, value) if isinstance(value, int) else f_str(6, value)
    return f_bytes(4, f_str(10, name) + v)  # TrackEvent.debug_annotations


def _instant(seq: bytes, ts: int, name: str, notes: Dict[str, Union[int, str]],
             track_uuid: Optional[int] = None) -> bytes:
    ev = f_uint(9, 3) + f_str(22, "fasttrace") + f_str(23, name)
    if track_uuid is not None:
        ev += f_uint(11, track_uuid)
    ev += b"".join(_annotation(k, v) for k, v in notes.items())
    return packet(seq + NEEDS_STATE + f_bytes(11, ev) + f_uint(8, ts))


class _Sequence:
    """One thread's packet sequence: its encoded packets, and which names it has interned."""

    __slots__ = ("seq", "uuid", "raw", "cache", "end")

    def __init__(self, seq_id: int, uuid: int) -> None:
        self.seq = f_uint(10, seq_id)
        self.uuid = uuid
        self.raw: Dict[AnyFunction, bytes] = {}    # function -> begin packet body (interned)
        self.cache: Dict[AnyFunction, bytes] = {}  # function -> length prefix + body, for ts_len
        self.end = b""

    def header(self, pid: int, parent: int, tid: int, name: str, sampled: bool = False) -> bytes:
        defaults = f_bytes(59, f_bytes(11, f_uint(11, self.uuid)))
        synthetic = (f_bytes(1, f_uint(1, CAT_SYNTHETIC) + f_str(2, _samples.SYNTHETIC_CATEGORY))
                     if sampled else b"")
        cats = f_bytes(12, f_bytes(1, f_uint(1, CAT_PYTHON) + f_str(2, "python"))
                       + f_bytes(1, f_uint(1, CAT_C) + f_str(2, "c")) + synthetic)
        thread = f_uint(1, pid) + f_uint(2, tid) + f_str(5, name)
        desc = f_bytes(60, f_uint(1, self.uuid) + f_uint(5, parent) + f_bytes(4, thread))
        return packet(self.seq + CLEARED + defaults + cats + desc)

    def set_ts_len(self, ts_len: int) -> None:
        body = self.seq + NEEDS_STATE + f_bytes(11, f_uint(9, 2)) + TS_TAG
        self.end = b"\x0a" + varint(len(body) + ts_len) + body
        self.cache.clear()

    def begin(self, f: AnyFunction, ts_len: int) -> bytes:
        """Prefix + body of a SLICE_BEGIN of f up to the timestamp's bytes.  The first one on
        the sequence carries the interned name (and source location) and is not cached."""
        body = self.raw.get(f)
        if body is not None:
            b = self.cache[f] = b"\x0a" + varint(len(body) + ts_len) + body
            return b
        iid = f.id
        cat = CAT_SYNTHETIC if _samples.is_synthetic(f) else CAT_C if f.is_c else CAT_PYTHON
        ev = f_uint(9, 1) + f_uint(3, cat) + f_uint(10, iid)
        interned = f_bytes(2, f_uint(1, iid) + f_str(2, f.qualname or f.name))
        if not f.is_c and f.filename:
            ev += f_uint(34, iid)
            loc = f_uint(1, iid) + f_str(2, f.filename) + f_str(3, f.qualname)
            interned += f_bytes(4, loc + f_uint(4, f.lineno))
        head = self.seq + NEEDS_STATE + f_bytes(11, ev)
        self.raw[f] = head + TS_TAG
        first = head + f_bytes(12, interned) + TS_TAG
        return b"\x0a" + varint(len(first) + ts_len) + first


def _sequence(seqs: Dict[int, _Sequence], out: bytearray, pid: int, uuid0: int, tid: int,
              thread: Optional[Thread], ts_len: int, sampled: bool = False,
              seq_base: int = 0) -> _Sequence:
    """A new thread's sequence (id seq_base + 1 + tid); its first packet goes to out."""
    s = seqs[tid] = _Sequence(seq_base + 1 + tid, uuid0 + tid)
    native = thread.native_id if thread is not None else None
    name = thread.name if thread is not None else f"thread-{tid}"
    out += s.header(pid, uuid0, int(native) if native else tid, name, sampled)
    s.set_ts_len(ts_len)
    return s


def open_binary(out: Output) -> Tuple[IO[bytes], bool]:
    """(binary stream, whether to close it) for a path, a binary file, or a text file with a
    `.buffer` (such as sys.stdout)."""
    if isinstance(out, (str, os.PathLike)):
        return open(out, "wb"), True
    if isinstance(out, io.TextIOBase):
        buffer = getattr(out, "buffer", None)
        if buffer is None:
            raise TypeError(f"{out!r} has no binary buffer: pass a path or a binary file")
        out.flush()
        return buffer, False
    return out, False  # type: ignore[return-value]


def write(trace: Union[Trace, ProcessSet], out: Output, *, progress: Progress = None
          ) -> Dict[str, Any]:
    """Writes `trace` (a Trace, or a ProcessSet: a process track per process) to `out` (a
    path, or a binary file) as a Perfetto protobuf trace.

    progress(done, total) is called about every megabyte of output and at the end, with the
    events converted so far and trace.stats.events (done is capped at total: the reader adds
    synthetic events).  Returns {"format", "events" (written as slice begins and ends), "gaps",
    "dropped", "orphans", "threads", "functions", "bytes", "truncated"}.  A sampled trace:
    progress counts samples, and the dict also has _samples.Samples.summary().  A ProcessSet:
    those summed, and processes.
    """
    f, close = open_binary(out)
    try:
        out_buf = bytearray()
        results: List[Dict[str, Any]] = []
        written = 0
        seq_base = 0  # a process's sequences: seq_base + 1 (the process), + 1 + thread id
        uuids: Set[int] = set()
        multi = isinstance(trace, ProcessSet)
        for process, t, p in _stacks.parts(trace, progress):
            ts_base = int(t.header["start_monotonic_ns"])
            if isinstance(trace, ProcessSet) and process is not None:
                ts_base = trace.start_monotonic_ns + process.start_ns
            if t.mode == "sample":
                samples = _samples.Samples(t, p)
                result = _write(t, f, out_buf, None, _samples.trace_slices(samples), True,
                                seq_base, ts_base, uuids, multi)
                result = samples.summary(**result)
            else:
                result = _write(t, f, out_buf, p, None, False, seq_base, ts_base, uuids, multi)
            seq_base = result.pop("last_sequence")
            written += result["bytes"]
            results.append(result)
        f.write(out_buf)
        written += len(out_buf)
        f.flush()
    finally:
        if close:
            f.close()
    if not multi:
        return dict(results[0], bytes=written)
    return _stacks.combine(results, bytes=written, processes=len(results))


def _write(trace: Trace, f: IO[bytes], out: bytearray, progress: Progress,
           events: Optional[Iterable[Union[Event, SliceEvent]]], sampled: bool,
           seq_base: int, base: int, uuids: Set[int], multi: bool) -> Dict[str, Any]:
    """One process's tracks and events into `out` (written to f every FLUSH_BYTES; what is
    left, the caller writes).  Trace mode: trace.events(); a sampled trace: `events` made from
    its samples (sampled).  seq_base: its sequence ids follow it; base: CLOCK_MONOTONIC at its
    time 0; uuids: the track uuid ranges taken; multi: a process of several (its name says its
    pid).  "bytes" in the result: what was written to f; "last_sequence": its highest
    sequence id."""
    h = trace.header
    pid = int(h["pid"])
    argv: List[str] = list(h.get("argv") or [])
    total = max(int(trace.stats.events), 1)
    uuid0 = ((pid & 0xFFFF) << 40 | (int(h["start_wall_ns"]) >> 20 & 0xFFFFFF) << 16) or 1 << 40
    while uuid0 in uuids:  # the same pid (traced twice) started within the same ms
        uuid0 += 1 << 16
    uuids.add(uuid0)
    proc_seq = f_uint(10, seq_base + 1)
    name = " ".join(process_name(argv, pid).split()) if multi else process_name(argv, pid)
    proc = f_uint(1, pid) + b"".join(f_str(2, a) for a in argv) + f_str(6, name)
    out += packet(proc_seq + CLEARED + f_bytes(60, f_uint(1, uuid0) + f_bytes(3, proc)))

    seqs: Dict[int, _Sequence] = {}
    last_hi = -1
    hib = b""
    ts_len = 0
    cur_tid = -1
    cache: Dict[AnyFunction, bytes] = {}
    end = b""
    st = _Sequence(0, 0)  # the current thread's, set at the first event
    lo = _LO14
    n = gaps = dropped = orphans = depth = 0
    depths: Dict[int, int] = {}  # thread id -> slices open (but the current thread's)
    ts = base
    written = 0
    for t in sorted(trace.threads, key=lambda t: t.id):
        _sequence(seqs, out, pid, uuid0, t.id, t, ts_len, sampled, seq_base)
    if events is None:
        events = trace.events(gaps=True)
    for e in events:
        n += 1
        tid = e.thread
        if tid != cur_tid:
            st = seqs.get(tid) or _sequence(seqs, out, pid, uuid0, tid, None, ts_len, sampled,
                                            seq_base)
            depths[cur_tid] = depth
            cur_tid, cache, end, depth = tid, st.cache, st.end, depths.get(tid, 0)
        ts = e.ts + base
        hi = ts >> 14
        if hi != last_hi:
            # The timestamp varint is _LO14[low 14 bits] + varint(the rest); the rest changes
            # every 16.4 us.  (ts < 2**14, only in hand-made files, gives an over-long but
            # valid varint.)
            last_hi = hi
            hib = varint(hi & 0x3FFFFFFFFFFFF)
            if len(hib) + 2 != ts_len:
                ts_len = len(hib) + 2
                for s in seqs.values():
                    s.set_ts_len(ts_len)
                end = st.end
        k = e.kind
        if k == "return" or k == "c_return":
            if not depth:  # an orphan: its frame was entered before the trace started
                orphans += 1
                continue
            depth -= 1
            out += end
        elif k == "call" or k == "c_call":
            depth += 1
            b = cache.get(e.function)
            out += b if b is not None else st.begin(e.function, ts_len)
        else:  # a gap: instant at its start; the reader closed the frames there already
            gaps += 1
            dropped += e.dropped
            start = e.start_ts + base
            notes: Dict[str, Union[int, str]] = {"dropped": e.dropped, "gap_ns": e.ts - e.start_ts}
            out += _instant(st.seq, start, f"fasttrace: {e.dropped} events dropped", notes)
            continue
        out += lo[ts & 0x3FFF]
        out += hib
        if len(out) >= FLUSH_BYTES:
            f.write(out)
            written += len(out)
            out.clear()
            if progress is not None:
                progress(min(n, total), total)
    if trace.stats.truncated:
        end_ts = max(ts, base + int(trace.stats.duration_ns))
        notes = {"damage": trace.damage or "the file ends early"}
        out += _instant(proc_seq, end_ts, "fasttrace: trace truncated", notes, uuid0)
    if progress is not None:
        progress(total, total)
    return {
        "format": "perfetto",
        "events": n - gaps - orphans,
        "gaps": gaps,
        "dropped": dropped,
        "orphans": orphans,
        "threads": len(seqs),
        "functions": len({fn for s in seqs.values() for fn in s.raw}),
        "bytes": written,
        "truncated": bool(trace.stats.truncated),
        "last_sequence": seq_base + 1 + max(seqs, default=0),
    }

"""A pure-Python reference decoder of the .ftrace format (src/FORMAT.md), stdlib only.

Written from the spec, independently of the native reader (src/ft_reader.c, src/_core.pyx),
to cross-check it: on any input both give the same header, definitions and events, or the same
FormatError (offset and reason).  It is slow; fasttrace.load() is for real work.

    t = read("out.ftrace")  # or read(data)
    for kind, ts_ns, thread, fid, synthetic in t.events(): ...
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from fasttrace._errors import FormatError
from fasttrace._files import open_trace

MAGIC = b"\x89FTRACE\n"
VERSION_MIN, VERSION_MAX = 1, 2  # the format versions this reader reads
PREAMBLE = 20
HEADER_FIXED = struct.Struct("<6I4Qd")  # 64 bytes at offset 20
CHUNK_MAGIC = 0x4B435446  # "FTCK"
CHUNK = struct.Struct("<IIIBBHIIQ")  # magic size crc type flags reserved thread records base_tick
TRAILER = struct.Struct("<5Q4I")  # 56 bytes
EVENTS, DEFS, CLOCK, TRAILER_CHUNK, SAMPLES = 1, 2, 3, 4, 5
CALL, RETURN, C_CALL, C_RETURN, ORPHAN_RETURN, ORPHAN_C_RETURN, STACK, DROP = range(1, 9)
OPEN = 0x0A  # version 2
WITH_FID = (CALL, C_CALL, ORPHAN_RETURN, ORPHAN_C_RETURN)
KIND = {CALL: "call", RETURN: "return", C_CALL: "c_call", C_RETURN: "c_return",
        ORPHAN_RETURN: "return", ORPHAN_C_RETURN: "c_return"}
HOOKS = {0: "profile", 1: "monitoring", 2: "eval_frame", 3: "sampler"}  # header flags bits 1-2
ORIGINS = {0: "capture", 1: "flight", 2: "series"}  # version 2 header field `origin`
DEF_FUNCTION, DEF_THREAD, DEF_THREAD_NAME = 0x10, 0x11, 0x12
DEF_HOOK_LOST = 0x16
DEF_SCOPE = 0x17
DEF_STACK, DEF_SAMPLING, DEF_SAMPLER_STATS = 0x13, 0x14, 0x15
SAMPLE = 0x09
SAMPLER_STATS = ("ticks", "samples", "late_ticks", "torn", "truncated", "dropped",
                 "sampler_cpu_ns", "read_failures", "duration_ns", "realtime", "reused",
                 "rate_lowered", "final_rate_mhz", "cpu_budget_ppm", "paused_ns",
                 "out_of_scope")
MAX_STACK = 1024
# (ts_ns, thread, function ids root first (0 = the truncation marker), state bits, weight_us)
MAX_WEIGHT_US = (2**64 - 1) // 1000  # the largest weight whose ns fit in a u64
Sample = Tuple[int, int, Tuple[int, ...], int, int]
MAX_ID_JUMP = 64  # ids are dense from 1: one further past those seen so far is damage
M64 = (1 << 64) - 1

# (kind, ts_ns, thread, function id, synthetic); gaps: ("gap", ts_ns, thread, dropped, start)
Event = Tuple[str, int, int, int, Any]


class _Short(Exception):
    """A varint or string runs past its end; args[0] is where the cursor stood."""


def _varint(d: bytes, p: int, end: int) -> Tuple[int, int]:
    """Unsigned LEB128 of at most 10 bytes; bits past 64 are dropped."""
    v = shift = 0
    q = p
    while q < end and shift < 64:
        b = d[q]
        q += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v & M64, q
        shift += 7
    raise _Short(p)


def _str(d: bytes, p: int, end: int) -> Tuple[bytes, int]:
    n, p = _varint(d, p, end)
    if n > end - p:
        raise _Short(p)
    return d[p:p + n], p + n


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _rate(ns_per_tick: float, start_tick: int, start_mono: int, tick_hz: float, tick: int,
          mono: int) -> float:
    """ns_per_tick after the clock pair (tick, mono): the rate over the longest span (start ..
    this pair), once that is over 1 ms of ticks."""
    ms = tick_hz / 1000  # as uint64: an out-of-range double gives 0 on x86-64
    if tick > (start_tick + (int(ms) if ms < 2.0 ** 64 else 0)) & M64:
        return float((mono - start_mono) & M64) / float(tick - start_tick)
    return ns_per_tick


def _ns(tick: int, start_tick: int, ns_per_tick: float) -> int:
    """ns since start: int(double(int64(tick - start_tick)) * ns_per_tick)."""
    delta = (tick - start_tick) & M64
    if delta >= 1 << 63:
        delta -= 1 << 64
    ns = float(delta) * ns_per_tick
    # Undefined when it does not fit in int64; x86-64 gives INT64_MIN, and so does this.
    return int(ns) if -2.0 ** 63 <= ns < 2.0 ** 63 else -(1 << 63)


class _Header:
    """The preamble and header body at the start of `d` (FORMAT.md sections 1-2): `d` holds
    at least the whole declared header, or the whole file."""

    def __init__(self, d: bytes, path: str) -> None:
        size = len(d)

        def fail(offset: int, reason: str) -> FormatError:
            return FormatError(path, offset, reason)

        if size == 0:
            raise fail(0, "empty file")
        if d[:len(MAGIC)] != MAGIC:
            raise fail(0, "not a fasttrace file (bad magic)")
        if size < PREAMBLE:
            raise fail(size, "file ends inside the header preamble")
        version, body_size, crc = struct.unpack_from("<3I", d, 8)
        if not VERSION_MIN <= version <= VERSION_MAX:
            raise fail(8, f"format version {version} is not supported (this reader reads "
                          f"versions {VERSION_MIN} to {VERSION_MAX})"
                          + ("; upgrade fasttrace" if version > VERSION_MAX else ""))
        if body_size > size - PREAMBLE:
            raise fail(size, f"file ends inside the header ({body_size} header bytes declared)")
        end = PREAMBLE + body_size
        if zlib.crc32(d[PREAMBLE:end]) != crc:
            raise fail(PREAMBLE, "header checksum mismatch")
        if body_size < HEADER_FIXED.size:
            raise fail(PREAMBLE, f"header too short ({body_size} bytes)")
        (py_hex, pid, mode, flags, clock_kind, chunk_size, buffer_size, self.start_tick,
         self.start_mono, start_wall, hz) = HEADER_FIXED.unpack_from(d, PREAMBLE)
        try:
            argv, p = _str(d, PREAMBLE + HEADER_FIXED.size, end)
            py, p = _str(d, p, end)
        except _Short as e:
            raise fail(e.args[0], "header strings are malformed") from None
        series_index = series_id = origin = 0
        if version >= 2:  # varint series_index, u64 series_id, u8 origin
            try:
                series_index, p = _varint(d, p, end)
            except _Short as e:
                raise fail(e.args[0], "header series fields are malformed") from None
            if end - p < 9:
                raise fail(p + (0 if end - p < 8 else 8), "header series fields are malformed")
            series_id, origin = struct.unpack_from("<QB", d, p)
        if clock_kind not in (1, 2):
            raise fail(PREAMBLE + 16, f"unknown clock kind {clock_kind}")
        if not hz > 0.0:
            raise fail(PREAMBLE + 56, "invalid tick rate")
        self.version, self.tick_hz, self.first_chunk = version, hz, end
        self.header: Dict[str, Any] = {
            "format_version": version,
            "python_version": _text(py),
            "python_version_hex": py_hex,
            "pid": pid,
            "mode": {1: "trace", 2: "sample"}.get(mode, "unknown"),
            "c_calls": bool(flags & 1),
            "hook": HOOKS.get((flags >> 1) & 3, "unknown"),
            "hook_fallback": bool(flags & 8),
            "clock": "tsc" if clock_kind == 2 else "monotonic",
            "tick_hz": hz,
            "chunk_size": chunk_size,
            "buffer_size": buffer_size,
            "start_wall_ns": start_wall,
            "start_monotonic_ns": self.start_mono,
            # each argument ends with a NUL: drop the last byte, split at the others
            "argv": [_text(a) for a in argv[:-1].split(b"\0")] if argv else [],
            "series_index": series_index,
            "series_id": series_id,
            "origin": ORIGINS.get(origin, "unknown"),
        }


class _ThreadState:
    """One thread's decoding state, carried from chunk to chunk (and file to file)."""

    __slots__ = ("stack", "last", "started", "broken")

    def __init__(self) -> None:
        self.stack: List[int] = []
        self.last = 0  # the tick of its last record
        self.started = False  # a chunk with records was decoded: OPEN records are skipped
        self.broken = False  # a discontinuity since: the next chunk closes, notes a gap, opens


class _Timeline:
    """Ticks as ns since the trace's start: one start tick and one ns_per_tick, for a file or
    for a series (set by the subclass)."""

    start_tick: int
    ns_per_tick: float
    end_tick: int

    def ns(self, tick: int) -> int:
        """ns since start: int(double(int64(tick - start_tick)) * ns_per_tick)."""
        return _ns(tick, self.start_tick, self.ns_per_tick)

    @property
    def duration_ns(self) -> int:
        return self.ns(self.end_tick)


class PyTrace(_Timeline):
    """A decoded trace: `header`, `functions`, `threads`, `truncated`, `complete`, `damage`,
    and events() decoded lazily."""

    def __init__(self, data: bytes, path: str) -> None:
        self.path = path
        self._d = data
        self.functions: Dict[int, Dict[str, Any]] = {}
        self.threads: Dict[int, Dict[str, Any]] = {}
        self.truncated = self.complete = False
        self.damage: Optional[str] = None
        self.trailer_events = self.trailer_dropped = self.writer_error = None  # type: Optional[int]
        self.chunk_events = 0
        self.thread_records: Dict[int, int] = {}  # thread id -> records in its events chunks
        self._fid_end = 1  # 1 + the largest function id defined
        self._chunks: List[Tuple[int, int, int, int]] = []  # payload offset, size, thread, base
        self._sample_chunks: List[Tuple[int, int, int]] = []  # payload offset, size, base
        self.stacks: List[Tuple[int, ...]] = [()]
        self.sampling: Optional[Dict[str, Any]] = None
        self.lost_threads = 0
        self._hook_lost: List[Tuple[int, int, str]] = []  # thread, tick, what
        #: the capture's scope as given (the SCOPE definition), or None
        self.scope: Optional[Dict[str, Any]] = None
        self.function_def_ends: Dict[int, int] = {}  # function id -> file offset of its def's end
        self.stack_def_ends: List[int] = [0]  # index = stack id
        self.clock_pairs: List[Tuple[int, int]] = []  # (tick, mono_ns): CLOCK chunks, trailer
        self._read_header()
        self._scan()

    def _fail(self, offset: int, reason: str) -> FormatError:
        return FormatError(self.path, offset, reason)

    # ---- header ----------------------------------------------------------------------------

    def _read_header(self) -> None:
        h = _Header(self._d, self.path)
        self.version, self.header = h.version, h.header
        self.start_tick, self.start_mono, self.tick_hz = h.start_tick, h.start_mono, h.tick_hz
        self.ns_per_tick = 1e9 / h.tick_hz
        self.end_tick = self.start_tick
        self.first_chunk = h.first_chunk

    # ---- chunks ----------------------------------------------------------------------------

    def _scan(self) -> None:
        d, size, off = self._d, len(self._d), self.first_chunk
        last_chunk: Dict[int, Tuple[int, int, int]] = {}
        while off < size:
            left = size - off
            if left < CHUNK.size:
                if d[off:].strip(b"\0"):  # else zero padding
                    self._damaged(off, f"file ends inside a chunk header ({left} of 32 bytes)")
                break
            magic, psize, crc, ctype, _f, _r, thread, records, base = CHUNK.unpack_from(d, off)
            if magic != CHUNK_MAGIC:
                if not d[off:].strip(b"\0"):
                    break
                raise self._fail(off, f"bad chunk magic 0x{magic:08x}")
            if psize > left - CHUNK.size:
                self._damaged(off, f"file ends inside a chunk ({psize} payload bytes declared, "
                                   f"{left - CHUNK.size} present)")
                break
            pay = off + CHUNK.size
            if zlib.crc32(d[pay:pay + psize], zlib.crc32(d[off + 12:pay])) != crc:
                raise self._fail(off, f"chunk checksum mismatch ({psize}-byte chunk of type "
                                      f"{ctype})")
            if not EVENTS <= ctype <= SAMPLES:
                raise self._fail(off, f"unknown chunk type {ctype}")
            if ctype == EVENTS:
                if thread == 0 or thread > len(self.threads) + MAX_ID_JUMP:
                    raise self._fail(off, f"events chunk with invalid thread id {thread}")
                last_chunk[thread] = (pay, psize, base)
                self._chunks.append((pay, psize, thread, base))
                self.chunk_events += records
                self.thread_records[thread] = self.thread_records.get(thread, 0) + records
                self.threads.setdefault(thread, {"ident": None, "native_id": None,
                                                 "name": f"thread-{thread}"})
            elif ctype == SAMPLES:
                self._sample_chunks.append((pay, psize, base))
                self.chunk_events += records
            elif ctype == DEFS:
                self._read_defs(pay, pay + psize)
            elif ctype == CLOCK:
                if psize < 24:
                    raise self._fail(off, "clock chunk too short")
                self._add_clock(*struct.unpack_from("<2Q", d, pay))
            else:
                if psize < TRAILER.size:
                    raise self._fail(off, "trailer chunk too short")
                events, dropped, stop_tick, stop_mono, _w, _t, _f, error, lost = \
                    TRAILER.unpack_from(d, pay)
                self.complete = True
                self.trailer_events, self.trailer_dropped = events, dropped
                self.writer_error = error or None
                self.lost_threads = lost
                self._add_clock(stop_tick, stop_mono)
                self.end_tick = stop_tick
            off = pay + psize
        if not self.complete and not self.truncated:
            self.truncated = True
            self.damage = (f"no trailer after byte {off}: the traced process did not stop "
                           f"the trace (killed or crashed); everything before it was loaded")
        if not self.complete:
            # Without a trailer the trace ends at its last record (FORMAT.md §4, end of trace).
            for pay, psize, base in last_chunk.values():
                self.end_tick = max(self.end_tick, self._last_event_tick(pay, pay + psize, base))
            if self._sample_chunks:
                pay, psize, base = self._sample_chunks[-1]
                self.end_tick = max(self.end_tick, self._last_sample_tick(pay, pay + psize, base))

    def _last_event_tick(self, p: int, end: int, tick: int) -> int:
        """The tick of the last well-formed record of an events chunk (tags and varints only)."""
        d = self._d
        try:
            while p < end:
                tag = d[p]
                p += 1
                if tag in (CALL, C_CALL, ORPHAN_RETURN, ORPHAN_C_RETURN):
                    _fid, p = _varint(d, p, end)
                    dt, p = _varint(d, p, end)
                elif tag in (RETURN, C_RETURN):
                    dt, p = _varint(d, p, end)
                elif tag in (STACK, DROP) or (tag == OPEN and self.version >= 2):
                    dt = 0  # OPEN has none: its tick is base_tick
                    if tag == DROP:
                        _dropped, p = _varint(d, p, end)
                    if tag != OPEN:
                        dt, p = _varint(d, p, end)
                    depth, p = _varint(d, p, end)
                    if depth > end - p:
                        break
                    for _ in range(depth):
                        _fid, p = _varint(d, p, end)
                else:
                    break
                tick = (tick + dt) & M64
        except _Short:
            pass
        return tick

    def _last_sample_tick(self, p: int, end: int, tick: int) -> int:
        d = self._d
        try:
            while p < end and d[p] == SAMPLE:
                dt, p = _varint(d, p + 1, end)
                tid, p = _varint(d, p, end)
                _sid, p = _varint(d, p, end)
                _w, p = _varint(d, p, end)
                if tid == 0 or tid > 0xFFFFFFFF:
                    break
                tick = (tick + dt) & M64
        except _Short:
            pass
        return tick

    def _damaged(self, off: int, reason: str) -> None:
        self.truncated = True
        self.damage = f"damaged tail at byte {off}: {reason}; the {off} bytes before it were loaded"

    def _add_clock(self, tick: int, mono: int) -> None:
        self.clock_pairs.append((tick, mono))
        self.ns_per_tick = _rate(self.ns_per_tick, self.start_tick, self.start_mono,
                                 self.tick_hz, tick, mono)
        self.end_tick = max(self.end_tick, tick)

    def _read_defs(self, p: int, end: int) -> None:
        d = self._d
        while p < end:
            rec, tag = p, d[p]
            p += 1
            if tag in (DEF_STACK, DEF_SAMPLING, DEF_SAMPLER_STATS):
                p = self._read_sampling_def(tag, rec, p, end)
                continue
            if tag == DEF_SCOPE:
                try:
                    text, p = _str(d, p, end)
                except _Short:
                    raise self._fail(rec, f"truncated definition record 0x{tag:02x}") from None
                try:
                    scope = json.loads(_text(text))
                except ValueError:
                    scope = None
                if not isinstance(scope, dict):
                    raise self._fail(rec, "scope definition is not a JSON object")
                self.scope = scope
                continue
            if tag not in (DEF_FUNCTION, DEF_THREAD, DEF_THREAD_NAME, DEF_HOOK_LOST):
                raise self._fail(rec, f"unknown definition record 0x{tag:02x}")
            try:
                ident, p = _varint(d, p, end)
                if tag == DEF_FUNCTION:
                    if p >= end:
                        raise _Short(p)
                    flags = d[p]
                    lineno, p = _varint(d, p + 1, end)
                    strs = []
                    for _ in range(4):
                        s, p = _str(d, p, end)
                        strs.append(_text(s))
                elif tag == DEF_THREAD:
                    tident, p = _varint(d, p, end)
                    native, p = _varint(d, p, end)
                elif tag == DEF_HOOK_LOST:
                    tick, p = _varint(d, p, end)
                name, p = (b"", p) if tag == DEF_FUNCTION else _str(d, p, end)
            except _Short:
                raise self._fail(rec, f"truncated definition record 0x{tag:02x}") from None
            if ident == 0 or ident > 0xFFFFFFFF:
                raise self._fail(rec, f"definition record with invalid id {ident}")
            # the errors below name the end of the record
            if tag == DEF_FUNCTION:
                if ident > self._fid_end + MAX_ID_JUMP:
                    raise self._fail(p, f"function id {ident} out of sequence")
                if ident in self.functions:
                    raise self._fail(p, f"function id {ident} defined twice")
                self._fid_end = max(self._fid_end, ident + 1)
                self.function_def_ends[ident] = p
                self.functions[ident] = dict(zip(("name", "qualname", "filename", "module"),
                                                 strs), lineno=lineno, is_c=bool(flags & 1))
            elif tag == DEF_THREAD:
                if ident > len(self.threads) + MAX_ID_JUMP:
                    raise self._fail(p, f"thread id {ident} out of sequence")
                self.threads[ident] = {"ident": tident, "native_id": native,
                                       "name": _text(name) or f"thread-{ident}"}
            elif tag == DEF_HOOK_LOST:
                self._hook_lost.append((ident, tick, _text(name)))
            elif ident in self.threads and name:
                self.threads[ident]["name"] = _text(name)

    def _read_sampling_def(self, tag: int, rec: int, p: int, end: int) -> int:
        d = self._d
        values: List[int] = []
        try:
            if tag == DEF_SAMPLING:
                rate, p = _varint(d, p, end)
                if p >= end:
                    raise _Short(p)
                clock = d[p]
                max_depth, p = _varint(d, p + 1, end)
            else:
                if tag == DEF_STACK:
                    sid, p = _varint(d, p, end)
                    if p >= end:
                        raise _Short(p)
                    flags = d[p]
                    p += 1
                count, p = _varint(d, p, end)
                if count > end - p:
                    raise _Short(p)
                for _ in range(count):
                    v, p = _varint(d, p, end)
                    values.append(v)
        except _Short:
            raise self._fail(rec, f"truncated definition record 0x{tag:02x}") from None
        if tag == DEF_SAMPLING:
            if rate == 0:
                raise self._fail(rec, "sampling definition with rate 0")
            self.sampling = {"rate_hz": rate, "clock": "cpu" if clock == 1 else "wall",
                             "max_depth": max_depth, "stats": None}
        elif tag == DEF_SAMPLER_STATS:
            if self.sampling is None:
                raise self._fail(rec, "sampler statistics before the sampling definition")
            self.sampling["stats"] = dict(zip(SAMPLER_STATS, values))
        else:
            if sid == 0 or sid > 0xFFFFFFFF:
                raise self._fail(rec, f"definition record with invalid id {sid}")
            if sid != len(self.stacks):
                raise self._fail(p, f"stack id {sid} out of sequence")
            if count > MAX_STACK:
                raise self._fail(p, f"stack {sid} is deeper than {MAX_STACK} frames")
            for fid in values:
                if fid not in self.functions:
                    raise self._fail(p, f"stack {sid} uses function id {fid} before its "
                                        f"definition")
            self.stacks.append(((0,) if flags & 1 else ()) + tuple(values))
            self.stack_def_ends.append(p)
        return p

    # ---- samples ---------------------------------------------------------------------------

    def samples(self, thread: Optional[int] = None) -> Iterator[Sample]:
        """As _core.TraceFile.samples(), one record at a time: a malformed record raises
        FormatError after the samples before it."""
        return self._samples(self.stacks, self.threads, self.ns, thread)

    def _samples(self, stacks: List[Tuple[int, ...]], threads: Dict[int, Dict[str, Any]],
                 ns: Callable[[int], int], thread: Optional[int]) -> Iterator[Sample]:
        d = self._d
        for pay, size, tick in self._sample_chunks:
            p, end = pay, pay + size
            while p < end:
                rec, tag = p, d[p]
                if tag != SAMPLE:
                    raise self._fail(rec, f"unknown sample record 0x{tag:02x}")
                try:
                    dt, p = _varint(d, p + 1, end)
                    tid, p = _varint(d, p, end)
                    sid, p = _varint(d, p, end)
                    w, p = _varint(d, p, end)
                except _Short:
                    raise self._fail(rec, "truncated sample record") from None
                if tid == 0 or tid > 0xFFFFFFFF:
                    raise self._fail(rec, f"sample with invalid thread id {tid}")
                tick = (tick + dt) & M64
                if sid >= len(stacks):
                    raise self._fail(p, f"sample uses stack id {sid} before its definition")
                if thread is not None and tid != thread:
                    continue
                threads.setdefault(tid, {"ident": None, "native_id": None,
                                         "name": f"thread-{tid}"})
                # weight_ns saturates at 2**64 - 1 (only a damaged file gets there)
                yield (ns(tick), tid, stacks[sid], w & 7, min(w >> 3, MAX_WEIGHT_US))

    # ---- events ----------------------------------------------------------------------------

    @property
    def hook_lost(self) -> List[Tuple[int, int, str]]:
        return [(tid, self.ns(tick), what) for tid, tick, what in self._hook_lost]

    def events(self, thread: Optional[int] = None, gaps: bool = False) -> Iterator[Event]:
        """(kind, ts_ns, thread, function id, synthetic), as _core.TraceFile.events(): chunk by
        chunk in file order (in order within a thread), frames still open at the end closed by
        synthetic returns.  With `gaps`, ("gap", ts_ns, thread, dropped, start ts_ns) where
        events were lost.  A malformed chunk raises FormatError before any of its events is
        yielded."""
        return _events([self], [False], self.functions, self.ns, self.end_tick, thread, gaps)

    def _decode(self, state: _ThreadState, p: int, end: int, tick: int, tid: int,
                functions: Dict[int, Dict[str, Any]], ns: Callable[[int], int],
                out: List[Event]) -> None:
        d, v2, base = self._d, self.version >= 2, tick
        if state.broken:
            # after a discontinuity: close what was open at the thread's last record, note a
            # gap of unknown size, and decode this chunk as the thread's first
            _close(state.stack, ns(state.last), tid, functions, out)
            out.append(("gap", ns(tick), tid, 0, ns(state.last)))
            state.broken = state.started = False
        first = p
        while p < end:
            rec, tag = p, d[p]
            p += 1
            if tag == 0 or tag > (OPEN if v2 else DROP) or tag == SAMPLE:
                raise self._fail(rec, f"unknown event record 0x{tag:02x}")
            if v2 and rec == first:
                if tag not in (OPEN, DROP):
                    raise self._fail(rec, f"events chunk starts with record 0x{tag:02x}, not an "
                                          "open or drop record")
            elif tag == OPEN:
                raise self._fail(rec, "open record after the start of its chunk")
            if tag == OPEN:  # the frames open when the chunk began: the first chunk opens them
                p = self._frames(state.stack, p, end, rec, "open", ns(base), tid, functions,
                                 out, apply=not state.started)
                continue
            fid = dropped = 0
            if tag == DROP:
                try:
                    dropped, p = _varint(d, p, end)
                except _Short:
                    raise self._fail(rec, "truncated drop record") from None
            try:
                if tag in WITH_FID:
                    fid, p = _varint(d, p, end)
                dt, p = _varint(d, p, end)
            except _Short:
                raise self._fail(rec, f"truncated event record 0x{tag:02x}") from None
            if tag in WITH_FID:
                self._fid(fid, rec, functions)
            prev, tick = tick, (tick + dt) & M64
            if tag in (CALL, C_CALL):
                state.stack.append(fid)
                out.append((KIND[tag], ns(tick), tid, fid, False))
            elif tag in (RETURN, C_RETURN):
                if state.stack:  # else its frame was cut from an over-deep STACK/DROP record
                    out.append((KIND[tag], ns(tick), tid, state.stack.pop(), False))
            elif tag in (ORPHAN_RETURN, ORPHAN_C_RETURN):
                out.append((KIND[tag], ns(tick), tid, fid, False))
            else:
                if tag == STACK and state.stack:
                    raise self._fail(rec, "stack record while frames are open")
                if tag == DROP:  # close what was open when the gap began, at its start
                    _close(state.stack, ns(prev), tid, functions, out)
                    out.append(("gap", ns(tick), tid, dropped, ns(prev)))
                p = self._frames(state.stack, p, end, rec, "stack", ns(tick), tid, functions,
                                 out, apply=True)
        if end > first:
            state.started = True
        state.last = tick

    def _fid(self, fid: int, rec: int, functions: Dict[int, Dict[str, Any]]) -> int:
        if fid not in functions:
            raise self._fail(rec, f"function id {fid} is used before its definition")
        return fid

    def _frames(self, stack: List[int], p: int, end: int, rec: int, what: str, ts: int,
                tid: int, functions: Dict[int, Dict[str, Any]], out: List[Event],
                apply: bool) -> int:
        """`varint depth, depth x varint fid`: pushed onto `stack` (with synthetic calls at
        ts) if `apply`, else only checked."""
        d = self._d
        try:
            depth, p = _varint(d, p, end)
            if depth > end - p:
                raise _Short(p)
            for _ in range(depth):
                fid, p = _varint(d, p, end)
                self._fid(fid, rec, functions)
                if apply:
                    stack.append(fid)
                    kind = "c_call" if functions[fid]["is_c"] else "call"
                    out.append((kind, ts, tid, fid, True))
        except _Short:
            raise self._fail(rec, f"malformed {what} record") from None
        return p


def _close(stack: List[int], ts: int, tid: int, functions: Dict[int, Dict[str, Any]],
           out: List[Event]) -> List[Event]:
    """Synthetic returns for the open frames, innermost first, at ts."""
    while stack:
        fid = stack.pop()
        out.append(("c_return" if functions[fid]["is_c"] else "return", ts, tid, fid, True))
    return out


def _events(files: "List[PyTrace]", breaks: List[bool], functions: Dict[int, Dict[str, Any]],
            ns: Callable[[int], int], end_tick: int, thread: Optional[int],
            gaps: bool = False) -> Iterator[Event]:
    """The events of `files` decoded one after the other with one state per thread; breaks[i]:
    a discontinuity before files[i]."""
    states: Dict[int, _ThreadState] = {}
    for f, brk in zip(files, breaks):
        if brk:
            for state in states.values():
                state.broken = state.started
        for pay, size, tid, base in f._chunks:
            if thread is None or tid == thread:
                out: List[Event] = []
                f._decode(states.setdefault(tid, _ThreadState()), pay, pay + size, base, tid,
                          functions, ns, out)
                yield from (e for e in out if gaps or e[0] != "gap")
    for tid in sorted(states):
        state = states[tid]
        yield from _close(state.stack, ns(max(end_tick, state.last)), tid, functions, [])


def read(source: Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]) -> PyTrace:
    """Decodes a .ftrace file (a path, or its bytes).  Raises FormatError if it is malformed;
    a damaged tail or a missing trailer loads what is intact and sets `truncated`."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return PyTrace(bytes(source), "<bytes>")
    path = os.fspath(source)
    fd, _size = open_trace(path)
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    return PyTrace(data, path)


def read_header(source: Union[str, "os.PathLike[str]"]) -> Dict[str, Any]:
    """The header of a .ftrace file (as PyTrace.header), reading nothing else."""
    path = os.fspath(source)
    fd, size = open_trace(path)
    with os.fdopen(fd, "rb") as f:
        data = f.read(PREAMBLE)
        if len(data) == PREAMBLE and data[:len(MAGIC)] == MAGIC:
            # the declared header, or as much of the file as there is
            body = struct.unpack_from("<I", data, 12)[0]
            want = min(body, size - PREAMBLE)
            while len(data) < PREAMBLE + want:
                more = f.read(PREAMBLE + want - len(data))
                if not more:
                    break
                data += more
    return _Header(data, path).header


class PySeries(_Timeline):
    """A trace read from a source as fasttrace.load() reads it (FORMAT.md section 9): one
    file, or the files of a rotated series as one trace.  The attributes of PyTrace, with
    the definitions of all files, plus `paths`, `series_problems`, `events_total`,
    `dropped_total` and `lost_threads`."""

    def __init__(self, source: Any) -> None:
        from fasttrace._series import resolve

        loaded, self._breaks, self.series_problems = resolve(source, read_header, read)
        self.paths = [p for p, _, _ in loaded]
        self.files: List[PyTrace] = [f for _, _, f in loaded]
        first, last = self.files[0], self.files[-1]
        self.path, self.header = first.path, first.header
        self.complete, self.truncated = last.complete, last.truncated
        self.damage = last.damage
        if len(self.files) > 1 and last.damage is not None:
            self.damage = f"{last.path}: {last.damage}"
        # one clock for the series: the first file's start, every file's pairs in file order
        self.start_tick, self.ns_per_tick = first.start_tick, 1e9 / first.tick_hz
        for f in self.files:
            for tick, mono in f.clock_pairs:
                self.ns_per_tick = _rate(self.ns_per_tick, first.start_tick, first.start_mono,
                                         first.tick_hz, tick, mono)
        self.end_tick = last.end_tick
        self.events_total = sum((f.trailer_events or 0) if f.complete else f.chunk_events
                                for f in self.files)
        self.dropped_total = sum((f.trailer_dropped or 0) if f.complete else 0
                                 for f in self.files)
        self.lost_threads = max(f.lost_threads for f in self.files)
        self.thread_records: Dict[int, int] = {}
        for f in self.files:
            for tid, n in f.thread_records.items():
                self.thread_records[tid] = self.thread_records.get(tid, 0) + n
        self._merge()

    def _merge(self) -> None:
        """Definitions of the files as one table: a function or stack id defined again must be
        defined the same (else FormatError at the later definition's end); THREAD defs
        replace; the first SAMPLING counts, with the last file's SAMPLER_STATS."""
        self.functions: Dict[int, Dict[str, Any]] = {}
        self.stacks: List[Tuple[int, ...]] = [()]
        self.threads: Dict[int, Dict[str, Any]] = {}
        self.sampling: Optional[Dict[str, Any]] = None
        first_in: Dict[int, str] = {}
        stack_first_in: List[str] = [""]
        for f in self.files:
            for fid in sorted(f.functions):
                if fid in self.functions:
                    if self.functions[fid] != f.functions[fid]:
                        raise f._fail(f.function_def_ends[fid], f"function id {fid} is defined "
                                                                f"differently in {first_in[fid]}")
                    continue
                self.functions[fid], first_in[fid] = f.functions[fid], f.path
            for sid in range(1, len(f.stacks)):
                if sid < len(self.stacks):
                    if self.stacks[sid] != f.stacks[sid]:
                        raise f._fail(f.stack_def_ends[sid], f"stack id {sid} is defined "
                                      f"differently in {stack_first_in[sid]}")
                    continue
                self.stacks.append(f.stacks[sid])
                stack_first_in.append(f.path)
            for tid, th in f.threads.items():
                if th["ident"] is not None or tid not in self.threads:
                    self.threads[tid] = th
            if self.sampling is None and f.sampling is not None:
                self.sampling = dict(f.sampling)
        last = self.files[-1]
        if self.sampling is not None:
            self.sampling["stats"] = last.sampling["stats"] if last.sampling else None

    @property
    def hook_lost(self) -> List[Tuple[int, int, str]]:
        seen: List[Tuple[int, int, str]] = []
        for f in self.files:
            for h in f._hook_lost:
                if h not in seen:
                    seen.append(h)
        return [(tid, self.ns(tick), what) for tid, tick, what in seen]

    def events(self, thread: Optional[int] = None, gaps: bool = False) -> Iterator[Event]:
        """As PyTrace.events(), the files one after the other with one state per thread; where
        the series does not join up (a file missing or cut), each thread's next chunk closes
        its frames at its last tick, notes a gap of unknown size (dropped 0) to its base_tick
        and opens as a first chunk."""
        return _events(self.files, self._breaks, self.functions, self.ns, self.end_tick, thread,
                       gaps)

    def samples(self, thread: Optional[int] = None) -> Iterator[Sample]:
        for f in self.files:
            yield from f._samples(self.stacks, self.threads, self.ns, thread)


def read_series(source: Any) -> PySeries:
    """Decodes what fasttrace.load(source) loads: a path, a glob pattern or a list of paths
    (FORMAT.md section 9)."""
    return PySeries(source)

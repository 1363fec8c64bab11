"""A pure-Python reference decoder of the .ftrace format (src/FORMAT.md), stdlib only.

Written from the spec, independently of the native reader (src/ft_reader.c, src/_core.pyx),
to cross-check it: on any input both give the same header, definitions and events, or the same
FormatError (offset and reason).  It is slow; fasttrace.load() is for real work.

    t = read("out.ftrace")  # or read(data)
    for kind, ts_ns, thread, fid, synthetic in t.events(): ...
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from fasttrace._errors import FormatError
from fasttrace._files import open_trace

MAGIC = b"\x89FTRACE\n"
FORMAT_VERSION = 1
PREAMBLE = 20
HEADER_FIXED = struct.Struct("<6I4Qd")  # 64 bytes at offset 20
CHUNK_MAGIC = 0x4B435446  # "FTCK"
CHUNK = struct.Struct("<IIIBBHIIQ")  # magic size crc type flags reserved thread records base_tick
TRAILER = struct.Struct("<5Q4I")  # 56 bytes
EVENTS, DEFS, CLOCK, TRAILER_CHUNK, SAMPLES = 1, 2, 3, 4, 5
CALL, RETURN, C_CALL, C_RETURN, ORPHAN_RETURN, ORPHAN_C_RETURN, STACK, DROP = range(1, 9)
WITH_FID = (CALL, C_CALL, ORPHAN_RETURN, ORPHAN_C_RETURN)
KIND = {CALL: "call", RETURN: "return", C_CALL: "c_call", C_RETURN: "c_return",
        ORPHAN_RETURN: "return", ORPHAN_C_RETURN: "c_return"}
HOOKS = {0: "profile", 1: "monitoring", 2: "eval_frame", 3: "sampler"}  # header flags bits 1-2
DEF_FUNCTION, DEF_THREAD, DEF_THREAD_NAME = 0x10, 0x11, 0x12
DEF_HOOK_LOST = 0x16
DEF_STACK, DEF_SAMPLING, DEF_SAMPLER_STATS = 0x13, 0x14, 0x15
SAMPLE = 0x09
SAMPLER_STATS = ("ticks", "samples", "late_ticks", "torn", "truncated", "dropped",
                 "sampler_cpu_ns", "read_failures", "duration_ns", "realtime", "reused",
                 "rate_lowered", "final_rate_mhz", "cpu_budget_ppm", "paused_ns")
MAX_STACK = 1024
# (ts_ns, thread, function ids root first (0 = the truncation marker), state bits, weight_us)
Sample = Tuple[int, int, Tuple[int, ...], int, int]
MAX_ID_JUMP = 64  # ids are dense from 1: one further past those seen so far is damage
M64 = (1 << 64) - 1

Event = Tuple[str, int, int, int, bool]  # (kind, ts_ns, thread, function id, synthetic)


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


class PyTrace:
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
        self._fid_end = 1  # 1 + the largest function id defined
        self._chunks: List[Tuple[int, int, int, int]] = []  # payload offset, size, thread, base
        self._sample_chunks: List[Tuple[int, int, int]] = []  # payload offset, size, base
        self.stacks: List[Tuple[int, ...]] = [()]
        self.sampling: Optional[Dict[str, Any]] = None
        self.lost_threads = 0
        self._hook_lost: List[Tuple[int, int, str]] = []  # thread, tick, what
        self._read_header()
        self._scan()

    def _fail(self, offset: int, reason: str) -> FormatError:
        return FormatError(self.path, offset, reason)

    # ---- header ----------------------------------------------------------------------------

    def _read_header(self) -> None:
        d, size = self._d, len(self._d)
        if size == 0:
            raise self._fail(0, "empty file")
        if d[:len(MAGIC)] != MAGIC:
            raise self._fail(0, "not a fasttrace file (bad magic)")
        if size < PREAMBLE:
            raise self._fail(size, "file ends inside the header preamble")
        version, body_size, crc = struct.unpack_from("<3I", d, 8)
        if version != FORMAT_VERSION:
            raise self._fail(8, f"format version {version} is not supported (this reader reads "
                                f"version {FORMAT_VERSION})"
                                + ("; upgrade fasttrace" if version > FORMAT_VERSION else ""))
        if body_size > size - PREAMBLE:
            raise self._fail(size, f"file ends inside the header ({body_size} header bytes "
                                   "declared)")
        end = PREAMBLE + body_size
        if zlib.crc32(d[PREAMBLE:end]) != crc:
            raise self._fail(PREAMBLE, "header checksum mismatch")
        if body_size < HEADER_FIXED.size:
            raise self._fail(PREAMBLE, f"header too short ({body_size} bytes)")
        (py_hex, pid, mode, flags, clock_kind, chunk_size, buffer_size, self.start_tick,
         self.start_mono, start_wall, hz) = HEADER_FIXED.unpack_from(d, PREAMBLE)
        try:
            argv, p = _str(d, PREAMBLE + HEADER_FIXED.size, end)
            py, p = _str(d, p, end)
        except _Short as e:
            raise self._fail(e.args[0], "header strings are malformed") from None
        if clock_kind not in (1, 2):
            raise self._fail(PREAMBLE + 16, f"unknown clock kind {clock_kind}")
        if not hz > 0.0:
            raise self._fail(PREAMBLE + 56, "invalid tick rate")
        self.tick_hz, self.ns_per_tick = hz, 1e9 / hz
        self.end_tick = self.start_tick
        self.first_chunk = end
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
        }

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
                elif tag in (STACK, DROP):
                    if tag == DROP:
                        _dropped, p = _varint(d, p, end)
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
        # The rate over the longest span (start .. this pair), once that is over 1 ms of ticks.
        ms = self.tick_hz / 1000  # as uint64: an out-of-range double gives 0 on x86-64
        if tick > (self.start_tick + (int(ms) if ms < 2.0 ** 64 else 0)) & M64:
            self.ns_per_tick = float((mono - self.start_mono) & M64) / float(
                tick - self.start_tick)
        self.end_tick = max(self.end_tick, tick)

    def _read_defs(self, p: int, end: int) -> None:
        d = self._d
        while p < end:
            rec, tag = p, d[p]
            p += 1
            if tag in (DEF_STACK, DEF_SAMPLING, DEF_SAMPLER_STATS):
                p = self._read_sampling_def(tag, rec, p, end)
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
        return p

    # ---- samples ---------------------------------------------------------------------------

    def samples(self, thread: Optional[int] = None) -> Iterator[Sample]:
        """As _core.TraceFile.samples(), one record at a time: a malformed record raises
        FormatError after the samples before it."""
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
                if sid >= len(self.stacks):
                    raise self._fail(p, f"sample uses stack id {sid} before its definition")
                if thread is not None and tid != thread:
                    continue
                self.threads.setdefault(tid, {"ident": None, "native_id": None,
                                              "name": f"thread-{tid}"})
                yield (self.ns(tick), tid, self.stacks[sid], w & 7, w >> 3)

    # ---- events ----------------------------------------------------------------------------

    def ns(self, tick: int) -> int:
        """ns since start: int(double(int64(tick - start_tick)) * ns_per_tick)."""
        delta = (tick - self.start_tick) & M64
        if delta >= 1 << 63:
            delta -= 1 << 64
        ns = float(delta) * self.ns_per_tick
        # Undefined when it does not fit in int64; x86-64 gives INT64_MIN, and so does this.
        return int(ns) if -2.0 ** 63 <= ns < 2.0 ** 63 else -(1 << 63)

    @property
    def duration_ns(self) -> int:
        return self.ns(self.end_tick)

    @property
    def hook_lost(self) -> List[Tuple[int, int, str]]:
        return [(tid, self.ns(tick), what) for tid, tick, what in self._hook_lost]

    def events(self, thread: Optional[int] = None) -> Iterator[Event]:
        """(kind, ts_ns, thread, function id, synthetic), as _core.TraceFile.events(): chunk by
        chunk in file order (in order within a thread), gaps not yielded, frames still open at
        the end closed by synthetic returns.  A malformed chunk raises FormatError before any of
        its events is yielded."""
        stacks: Dict[int, List[int]] = {}
        last: Dict[int, int] = {}
        for pay, size, tid, base in self._chunks:
            if thread is None or tid == thread:
                out: List[Event] = []
                last[tid] = self._decode(stacks.setdefault(tid, []), pay, pay + size, base, tid,
                                         out)
                yield from out
        for tid in sorted(stacks):
            yield from self._close(stacks[tid], max(self.end_tick, last[tid]), tid, [])

    def _close(self, stack: List[int], tick: int, tid: int, out: List[Event]) -> List[Event]:
        ts = self.ns(tick)
        while stack:
            fid = stack.pop()
            out.append(("c_return" if self.functions[fid]["is_c"] else "return", ts, tid, fid,
                        True))
        return out

    def _fid(self, fid: int, rec: int) -> int:
        if fid not in self.functions:
            raise self._fail(rec, f"function id {fid} is used before its definition")
        return fid

    def _decode(self, stack: List[int], p: int, end: int, tick: int, tid: int,
                out: List[Event]) -> int:
        d = self._d
        while p < end:
            rec, tag = p, d[p]
            p += 1
            if tag == 0 or tag > DROP:
                raise self._fail(rec, f"unknown event record 0x{tag:02x}")
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
                self._fid(fid, rec)
            prev, tick = tick, (tick + dt) & M64
            if tag in (CALL, C_CALL):
                stack.append(fid)
                out.append((KIND[tag], self.ns(tick), tid, fid, False))
            elif tag in (RETURN, C_RETURN):
                if stack:  # else its frame was cut from an over-deep STACK/DROP record
                    out.append((KIND[tag], self.ns(tick), tid, stack.pop(), False))
            elif tag in (ORPHAN_RETURN, ORPHAN_C_RETURN):
                out.append((KIND[tag], self.ns(tick), tid, fid, False))
            else:
                if tag == STACK and stack:
                    raise self._fail(rec, "stack record while frames are open")
                if tag == DROP:  # close what was open when the gap began, at its start
                    self._close(stack, prev, tid, out)
                try:
                    depth, p = _varint(d, p, end)
                    if depth > end - p:
                        raise _Short(p)
                    ts = self.ns(tick)
                    for _ in range(depth):
                        fid, p = _varint(d, p, end)
                        stack.append(self._fid(fid, rec))
                        kind = "c_call" if self.functions[fid]["is_c"] else "call"
                        out.append((kind, ts, tid, fid, True))
                except _Short:
                    raise self._fail(rec, "malformed stack record") from None
        return tick


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

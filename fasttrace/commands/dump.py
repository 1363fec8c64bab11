"""`fasttrace dump TRACE [TRACE ...]`: one line per chunk and per record, for debugging the
format.  Several files (or a quoted glob, such as the files of a rotated series) are dumped one
after the other, each under a `== FILE` line: every file of a series is a whole file.

Every line starts with the byte offset of what it shows.  Damage is a DAMAGE line: in a
record, the dump goes on with the next chunk; in the framing (header, chunk headers, sizes), it
stops there.  The first damage is also the command's error line on stderr (exit code 1).

The file is read chunk by chunk: memory holds one chunk's payload at a time (an events chunk is
at most 64 KiB; a definitions chunk is as large as it says, and never larger than the file).
See src/FORMAT.md."""

from __future__ import annotations

import argparse
import os
import struct
import zlib

from fasttrace import _pyreader as R
from fasttrace.commands import error, not_regular, os_error_text, unreadable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO, Dict, List, Optional, Tuple

CHUNK_NAMES = {R.EVENTS: "EVENTS", R.DEFS: "DEFS", R.CLOCK: "CLOCK", R.TRAILER_CHUNK: "TRAILER",
               R.SAMPLES: "SAMPLES"}
RECORD_NAMES = {R.CALL: "CALL", R.RETURN: "RETURN", R.C_CALL: "C_CALL", R.C_RETURN: "C_RETURN",
                R.ORPHAN_RETURN: "ORPHAN_RETURN", R.ORPHAN_C_RETURN: "ORPHAN_C_RETURN",
                R.STACK: "STACK", R.DROP: "DROP", R.OPEN: "OPEN"}
PIECE = 1 << 20  # bytes read at a time where a payload is only checksummed or skipped
_ZEROS = bytes(PIECE)


def _limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or more, got {n}")
    return n


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("dump", help="print every chunk and record of a trace file")
    p.add_argument("trace", nargs="+", help="a .ftrace file, several, or a quoted glob")
    p.add_argument("--thread", type=int, help="only the events chunks of this thread id")
    p.add_argument("--chunks-only", action="store_true", help="chunk headers, no records")
    p.add_argument("--limit", type=_limit, default=0, metavar="N",
                   help="stop after N lines (0: no limit)")


class _Stop(Exception):
    pass


class Dumper:
    def __init__(self, f: "BinaryIO", size: int, args: argparse.Namespace) -> None:
        self.f = f
        self.size = size  # the file's size when it was opened: nothing past it is read
        self.args = args
        self.lines = 0
        self.names: Dict[int, str] = {}
        self.quiet = False  # reading definitions for names only
        self.base = 0  # file offset of the payload being decoded
        self.damage: Optional[Tuple[int, str]] = None  # the first: (offset, what)
        self.version = 0

    def out(self, offset: int, depth: int, text: str) -> None:
        if self.quiet:
            return
        print(f"@{offset:<10} {'  ' * depth}{text}")
        self.lines += 1
        if self.args.limit and self.lines >= self.args.limit:
            raise _Stop

    def bad(self, offset: int, depth: int, what: str) -> None:
        """A DAMAGE line; the first damage is also what the command's error line says."""
        if self.damage is None:
            self.damage = (offset, what)
        self.out(offset, depth, f"DAMAGE {what}")

    def read(self, n: int) -> bytes:
        """Up to n bytes (fewer only if the file shrank since it was opened)."""
        parts: List[bytes] = []
        while n > 0:
            b = self.f.read(min(n, PIECE))
            if not b:
                break
            parts.append(b)
            n -= len(b)
        return b"".join(parts)

    def crc_of(self, n: int, crc: int) -> "tuple[int, int]":
        """The crc32 of the next n bytes, continuing `crc`, read piece by piece; and how
        many bytes there were."""
        got = 0
        while got < n:
            b = self.f.read(min(n - got, PIECE))
            if not b:
                break
            crc = zlib.crc32(b, crc)
            got += len(b)
        return crc, got

    def run(self) -> int:
        pre = self.read(R.PREAMBLE)
        if len(pre) < len(R.MAGIC) or pre[:8] != R.MAGIC:
            self.bad(0, 0, "not a fasttrace file (bad magic or too short)")
            return 1
        if len(pre) < R.PREAMBLE:
            self.bad(0, 0, f"file ends inside the preamble ({len(pre)} of "
                           f"{R.PREAMBLE} bytes)")
            return 1
        version, body_size, crc = struct.unpack_from("<3I", pre, 8)
        self.out(0, 0, f"PREAMBLE version={version} header_size={body_size}")
        if not R.VERSION_MIN <= version <= R.VERSION_MAX:
            self.bad(8, 0, f"unsupported format version {version}")
            return 1
        self.version = version
        if body_size > self.size - R.PREAMBLE:
            self.bad(12, 0, f"header of {body_size} bytes runs past the end of the "
                            f"file ({self.size} bytes)")
            return 1
        body = self.read(body_size)
        if len(body) < body_size:
            self.bad(R.PREAMBLE, 0, "file ends inside the header")
            return 1
        if body_size < R.HEADER_FIXED.size:
            self.bad(12, 0, f"header too short ({body_size} bytes; its fixed part "
                            f"is {R.HEADER_FIXED.size})")
            return 1
        self.header(body, zlib.crc32(body) == crc)
        if zlib.crc32(body) != crc and self.damage is None:
            self.damage = (R.PREAMBLE, "header checksum mismatch")
        return self.chunks(R.PREAMBLE + body_size)

    def header(self, body: bytes, crc_ok: bool) -> None:
        (pyhex, pid, mode, flags, clock, chunk, buf, tick, mono, wall,
         hz) = R.HEADER_FIXED.unpack_from(body, 0)
        self.out(R.PREAMBLE, 0, f"HEADER crc={'ok' if crc_ok else 'BAD'} python=0x{pyhex:08x} "
                                f"pid={pid} mode={mode} flags=0x{flags:x} clock={clock} "
                                f"chunk_size={chunk} buffer_size={buf} start_tick={tick} "
                                f"start_mono_ns={mono} start_wall_ns={wall} tick_hz={hz:.0f}")
        p = R.HEADER_FIXED.size
        try:
            argv, q = R._str(body, p, len(body))
            version, r = R._str(body, q, len(body))
        except R._Short as e:
            self.bad(R.PREAMBLE + e.args[0], 1, "header strings are malformed")
            return
        args = [R._text(a) for a in argv[:-1].split(b"\0")] if argv else []
        self.out(R.PREAMBLE + p, 1, f"argv={args!r}")
        self.out(R.PREAMBLE + q, 1, f"python_version={R._text(version)!r}")
        if self.version >= 2:
            try:
                index, q = R._varint(body, r, len(body))
                if len(body) - q < 9:
                    raise R._Short(q)
            except R._Short as e:
                self.bad(R.PREAMBLE + e.args[0], 1, "header series fields are malformed")
                return
            sid, origin = struct.unpack_from("<QB", body, q)
            self.out(R.PREAMBLE + r, 1, f"series_index={index} series_id=0x{sid:016x} "
                                        f"origin={R.ORIGINS.get(origin, origin)}")

    def chunks(self, off: int) -> int:
        size = self.size
        while off < size:
            head = self.read(R.CHUNK.size)
            if len(head) < R.CHUNK.size:
                if head.strip(b"\0"):
                    self.bad(off, 0, f"file ends inside a chunk header "
                                     f"({len(head)} of {R.CHUNK.size} bytes)")
                    return 1
                self.out(off, 0, f"END {len(head)} bytes of zero padding")
                return 0
            magic, psize, crc, ctype, cflags, _r, thread, records, base = R.CHUNK.unpack_from(
                head, 0)
            if magic != R.CHUNK_MAGIC:
                return self.padding_or_damage(off, head, magic)
            pay = off + R.CHUNK.size
            if psize > size - pay:
                self.bad(off, 0, f"chunk of {psize} bytes runs past the end of the file "
                                 f"({size - pay} bytes left)")
                return 1
            name = CHUNK_NAMES.get(ctype, f"TYPE{ctype}")
            wanted = self.args.thread
            shown = wanted is None or (ctype == R.EVENTS and thread == wanted)
            decode = ctype == R.DEFS or (shown and not self.args.chunks_only)
            if decode:  # the payload is needed whole
                payload = self.read(psize)
                got, ok = len(payload), zlib.crc32(payload, zlib.crc32(head[12:])) == crc
            else:
                value, got = self.crc_of(psize, zlib.crc32(head[12:]))
                ok = value == crc
            if got < psize:
                self.bad(off, 0, "the file ended while it was read (it shrank)")
                return 1
            if not ok and self.damage is None:
                self.damage = (off, f"chunk checksum mismatch ({psize}-byte chunk of type "
                                    f"{ctype})")
            if shown:
                self.out(off, 0, f"CHUNK {name} size={psize} crc={'ok' if ok else 'BAD'} "
                                 f"flags=0x{cflags:x} thread={thread} records={records} "
                                 f"base_tick={base}")
            if decode:
                # definitions are read, quietly if need be, for the function names events show
                self.quiet = not shown or self.args.chunks_only
                self.base = pay
                self.records(ctype, payload)
                self.quiet = False
            off = pay + psize
        return 1 if self.damage else 0

    def padding_or_damage(self, off: int, head: bytes, magic: int) -> int:
        """Zeros to the end of the file are padding; anything else is a bad chunk magic."""
        zeros = not head.strip(b"\0")
        n = len(head)
        while zeros:
            b = self.f.read(PIECE)
            if not b:
                break
            zeros = b == _ZEROS[:len(b)]
            n += len(b)
        if zeros:
            self.out(off, 0, f"END {n} bytes of zero padding")
            return 0
        self.bad(off, 0, f"bad chunk magic 0x{magic:08x}")
        return 1

    def records(self, ctype: int, d: bytes) -> None:
        p, end, b = 0, len(d), self.base
        try:
            if ctype == R.EVENTS:
                while p < end:
                    start, tag = p, d[p]
                    p += 1
                    fields = []
                    if tag not in RECORD_NAMES or (tag == R.OPEN and self.version < 2):
                        self.bad(b + start, 1, f"unknown record tag 0x{tag:02x}")
                        return
                    if tag == R.DROP:
                        n, p = R._varint(d, p, end)
                        fields.append(f"dropped={n}")
                    if tag in R.WITH_FID:
                        fid, p = R._varint(d, p, end)
                        fields.append(f"fid={fid} ({self.names.get(fid, '?')})")
                    if tag != R.OPEN:
                        dt, p = R._varint(d, p, end)
                        fields.append(f"dt={dt}")
                    if tag in (R.STACK, R.DROP, R.OPEN):
                        fids, p = _varints(d, p, end)
                        fields.append(f"stack=[{' '.join(map(str, fids))}]")
                    if tag not in RECORD_NAMES:
                        self.bad(b + start, 1, f"unknown record tag 0x{tag:02x}")
                        return
                    self.out(b + start, 1, f"{RECORD_NAMES[tag]} {' '.join(fields)}")
            elif ctype == R.SAMPLES:
                while p < end:
                    start, tag = p, d[p]
                    if tag != R.SAMPLE:
                        self.bad(b + start, 1, f"unknown sample record 0x{tag:02x}")
                        return
                    dt, p = R._varint(d, p + 1, end)
                    tid, p = R._varint(d, p, end)
                    sid, p = R._varint(d, p, end)
                    w, p = R._varint(d, p, end)
                    state = "".join(c for bit, c in ((1, "i"), (2, "c"), (4, "t")) if w & bit)
                    self.out(b + start, 1, f"SAMPLE dt={dt} thread={tid} stack={sid} "
                                           f"weight_us={w >> 3} state={state or '-'}")
            elif ctype == R.DEFS:
                while p < end:
                    p = self.definition(d, p, end)
            elif ctype == R.CLOCK:
                tick, mono, wall = struct.unpack_from("<3Q", d, p)
                self.out(b + p, 1, f"tick={tick} mono_ns={mono} wall_ns={wall}")
            elif ctype == R.TRAILER_CHUNK:
                ev, dropped, tick, mono, wall, threads, funcs, err, lost = \
                    R.TRAILER.unpack_from(d, p)
                self.out(b + p, 1, f"events={ev} dropped={dropped} stop_tick={tick} "
                                   f"stop_mono_ns={mono} threads={threads} functions={funcs} "
                                   f"error={err} lost_threads={lost}")
        except (R._Short, struct.error, IndexError):
            self.bad(b + p, 1, "record runs past the end of its chunk")

    def definition(self, d: bytes, p: int, end: int) -> int:
        b, start, tag = self.base, p, d[p]
        p += 1
        if tag == R.DEF_FUNCTION:
            fid, p = R._varint(d, p, end)
            flags = d[p]
            line, p = R._varint(d, p + 1, end)
            name, p = R._str(d, p, end)
            qual, p = R._str(d, p, end)
            file, p = R._str(d, p, end)
            mod, p = R._str(d, p, end)
            self.names[fid] = R._text(qual)
            self.out(b + start, 1, f"FUNCTION id={fid} c={flags & 1} line={line} "
                                   f"qualname={R._text(qual)!r} file={R._text(file)!r} "
                                   f"module={R._text(mod)!r}")
        elif tag == R.DEF_THREAD:
            tid, p = R._varint(d, p, end)
            ident, p = R._varint(d, p, end)
            native, p = R._varint(d, p, end)
            name, p = R._str(d, p, end)
            self.out(b + start, 1, f"THREAD id={tid} ident={ident} native_id={native} "
                                   f"name={R._text(name)!r}")
        elif tag == R.DEF_THREAD_NAME:
            tid, p = R._varint(d, p, end)
            name, p = R._str(d, p, end)
            self.out(b + start, 1, f"THREAD_NAME id={tid} name={R._text(name)!r}")
        elif tag == R.DEF_STACK:
            sid, p = R._varint(d, p, end)
            flags = d[p]
            fids, p = _varints(d, p + 1, end)
            cut = " truncated" if flags & 1 else ""
            self.out(b + start, 1, f"STACK id={sid}{cut} fids=[{' '.join(map(str, fids))}]")
        elif tag == R.DEF_SAMPLING:
            rate, p = R._varint(d, p, end)
            clock = d[p]
            depth, p = R._varint(d, p + 1, end)
            self.out(b + start, 1, f"SAMPLING rate_hz={rate} clock={'cpu' if clock else 'wall'} "
                                   f"max_depth={depth}")
        elif tag == R.DEF_SAMPLER_STATS:
            values, p = _varints(d, p, end)
            n = len(values)
            names = list(R.SAMPLER_STATS) + [f"stat{i}" for i in range(len(R.SAMPLER_STATS), n)]
            self.out(b + start, 1, "SAMPLER_STATS " + " ".join(
                f"{k}={v}" for k, v in zip(names, values)))
        elif tag == R.DEF_HOOK_LOST:
            tid, p = R._varint(d, p, end)
            tick, p = R._varint(d, p, end)
            what, p = R._str(d, p, end)
            self.out(b + start, 1, f"HOOK_LOST thread={tid} tick={tick} what={R._text(what)!r}")
        elif tag == R.DEF_SCOPE:
            text, p = R._str(d, p, end)
            self.out(b + start, 1, f"SCOPE {R._text(text)}")
        else:
            self.bad(b + start, 1, f"unknown definition tag 0x{tag:02x}")
            return end
        return p


def _varints(d: bytes, p: int, end: int) -> "tuple[List[int], int]":
    """A varint count, then that many varints: (the values, the offset after them)."""
    n, p = R._varint(d, p, end)
    if n > end - p:  # each value takes at least a byte: the list runs past the chunk
        raise R._Short(p)
    values = []
    for _ in range(n):
        v, p = R._varint(d, p, end)
        values.append(v)
    return values, p


def _open_regular(path: str) -> "tuple[BinaryIO, int]":
    """The file open for reading and its size.  Opened without blocking (a FIFO would wait
    for a writer), then refused unless it is a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        why = not_regular(path, st.st_mode)
        if why is not None:
            raise _NotRegular(why)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0), st.st_size
    except BaseException:
        os.close(fd)
        raise


class _NotRegular(Exception):
    pass


def main(args: argparse.Namespace) -> int:
    from fasttrace._series import is_pattern

    paths: "List[str]" = []
    for t in args.trace:
        if is_pattern(t):
            import glob

            matches = sorted(glob.glob(t))
            if not matches:
                return error(f"{t}: no file matches this pattern")
            paths += matches
        else:
            paths.append(t)
    code = 0
    for i, path in enumerate(paths):
        if len(paths) > 1:
            print(f"{'' if i == 0 else chr(10)}== {path}")
        code = max(code, _dump_one(path, args))
    return code


def _dump_one(path: str, args: argparse.Namespace) -> int:
    why = unreadable(path)  # before opening: says what a device or FIFO is
    if why is not None:
        return error(why)
    try:
        f, size = _open_regular(path)
    except _NotRegular as e:  # replaced between the two checks
        return error(str(e))
    except OSError as e:
        return error(os_error_text(path, e))
    dumper = Dumper(f, size, args)
    with f:
        try:
            dumper.run()
        except _Stop:  # --limit lines printed
            pass
    if dumper.damage is not None:
        return error(f"{path}: byte {dumper.damage[0]}: {dumper.damage[1]}")
    return 0

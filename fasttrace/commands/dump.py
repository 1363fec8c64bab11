"""`fasttrace dump TRACE`: one line per chunk and per record, for debugging the format.

Every line starts with the byte offset of what it shows.  Damage stops the dump with a line
that says what and where; everything before it is printed.  See src/FORMAT.md.
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib

from fasttrace import _pyreader as R

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict

CHUNK_NAMES = {R.EVENTS: "EVENTS", R.DEFS: "DEFS", R.CLOCK: "CLOCK", R.TRAILER_CHUNK: "TRAILER",
               R.SAMPLES: "SAMPLES"}
RECORD_NAMES = {R.CALL: "CALL", R.RETURN: "RETURN", R.C_CALL: "C_CALL", R.C_RETURN: "C_RETURN",
                R.ORPHAN_RETURN: "ORPHAN_RETURN", R.ORPHAN_C_RETURN: "ORPHAN_C_RETURN",
                R.STACK: "STACK", R.DROP: "DROP"}


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("dump", help="print every chunk and record of a trace file")
    p.add_argument("trace", help="a .ftrace file")
    p.add_argument("--thread", type=int, help="only the events chunks of this thread id")
    p.add_argument("--chunks-only", action="store_true", help="chunk headers, no records")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="stop after N lines")


class _Stop(Exception):
    pass


class Dumper:
    def __init__(self, data: bytes, args: argparse.Namespace) -> None:
        self.d = data
        self.args = args
        self.lines = 0
        self.names: Dict[int, str] = {}
        self.quiet = False  # reading definitions for names only

    def out(self, offset: int, depth: int, text: str) -> None:
        if self.quiet:
            return
        print(f"@{offset:<10} {'  ' * depth}{text}")
        self.lines += 1
        if self.args.limit and self.lines >= self.args.limit:
            raise _Stop

    def run(self) -> int:
        d = self.d
        if len(d) < R.PREAMBLE or d[:8] != R.MAGIC:
            self.out(0, 0, "DAMAGE not a fasttrace file (bad magic or too short)")
            return 1
        version, body, _crc = struct.unpack_from("<3I", d, 8)
        self.out(0, 0, f"PREAMBLE version={version} header_size={body}")
        if version != R.FORMAT_VERSION or R.PREAMBLE + body > len(d):
            self.out(8, 0, "DAMAGE unsupported version or header past the end of the file")
            return 1
        (pyhex, pid, mode, flags, clock, chunk, buf, tick, mono, wall,
         hz) = R.HEADER_FIXED.unpack_from(d, R.PREAMBLE)
        self.out(R.PREAMBLE, 0, f"HEADER python=0x{pyhex:08x} pid={pid} mode={mode} "
                                f"flags=0x{flags:x} clock={clock} chunk_size={chunk} "
                                f"buffer_size={buf} start_tick={tick} start_mono_ns={mono} "
                                f"start_wall_ns={wall} tick_hz={hz:.0f}")
        off = R.PREAMBLE + body
        while off < len(d):
            if len(d) - off < R.CHUNK.size:
                if d[off:].strip(b"\0"):
                    self.out(off, 0, f"DAMAGE file ends inside a chunk header "
                                     f"({len(d) - off} of {R.CHUNK.size} bytes)")
                    return 1
                self.out(off, 0, f"END {len(d) - off} bytes of zero padding")
                break
            magic, size, crc, ctype, cflags, _r, thread, records, base = R.CHUNK.unpack_from(
                d, off)
            if magic != R.CHUNK_MAGIC:
                self.out(off, 0, f"DAMAGE bad chunk magic 0x{magic:08x}")
                return 1
            pay = off + R.CHUNK.size
            if pay + size > len(d):
                self.out(off, 0, f"DAMAGE chunk of {size} bytes runs past the end of the file")
                return 1
            ok = zlib.crc32(d[pay:pay + size], zlib.crc32(d[off + 12:pay])) == crc
            name = CHUNK_NAMES.get(ctype, f"TYPE{ctype}")
            wanted = self.args.thread
            skip = wanted is not None and (ctype != R.EVENTS or thread != wanted)
            if not skip:
                self.out(off, 0, f"CHUNK {name} size={size} crc={'ok' if ok else 'BAD'} "
                                 f"flags=0x{cflags:x} thread={thread} records={records} "
                                 f"base_tick={base}")
                if not self.args.chunks_only:
                    self.records(ctype, pay, pay + size)
            elif ctype == R.DEFS:  # still learn the function names the events refer to
                self.quiet = True
                self.records(ctype, pay, pay + size)
                self.quiet = False
            off = pay + size
        return 0

    def records(self, ctype: int, p: int, end: int) -> None:
        d = self.d
        try:
            if ctype == R.EVENTS:
                while p < end:
                    start, tag = p, d[p]
                    p += 1
                    fields = []
                    if tag == R.DROP:
                        n, p = R._varint(d, p, end)
                        fields.append(f"dropped={n}")
                    if tag in R.WITH_FID:
                        fid, p = R._varint(d, p, end)
                        fields.append(f"fid={fid} ({self.names.get(fid, '?')})")
                    dt, p = R._varint(d, p, end)
                    fields.append(f"dt={dt}")
                    if tag in (R.STACK, R.DROP):
                        depth, p = R._varint(d, p, end)
                        fids = []
                        for _ in range(depth):
                            fid, p = R._varint(d, p, end)
                            fids.append(str(fid))
                        fields.append(f"stack=[{' '.join(fids)}]")
                    if tag not in RECORD_NAMES:
                        self.out(start, 1, f"DAMAGE unknown record tag 0x{tag:02x}")
                        return
                    self.out(start, 1, f"{RECORD_NAMES[tag]} {' '.join(fields)}")
            elif ctype == R.SAMPLES:
                while p < end:
                    start, tag = p, d[p]
                    if tag != R.SAMPLE:
                        self.out(start, 1, f"DAMAGE unknown sample record 0x{tag:02x}")
                        return
                    dt, p = R._varint(d, p + 1, end)
                    tid, p = R._varint(d, p, end)
                    sid, p = R._varint(d, p, end)
                    w, p = R._varint(d, p, end)
                    state = "".join(c for bit, c in ((1, "i"), (2, "c"), (4, "t")) if w & bit)
                    self.out(start, 1, f"SAMPLE dt={dt} thread={tid} stack={sid} "
                                       f"weight_us={w >> 3} state={state or '-'}")
            elif ctype == R.DEFS:
                while p < end:
                    p = self.definition(p, end)
            elif ctype == R.CLOCK:
                tick, mono, wall = struct.unpack_from("<3Q", d, p)
                self.out(p, 1, f"tick={tick} mono_ns={mono} wall_ns={wall}")
            elif ctype == R.TRAILER_CHUNK:
                ev, dropped, tick, mono, wall, threads, funcs, err, _r = R.TRAILER.unpack_from(d, p)
                self.out(p, 1, f"events={ev} dropped={dropped} stop_tick={tick} "
                               f"stop_mono_ns={mono} threads={threads} functions={funcs} "
                               f"error={err}")
        except (R._Short, struct.error, IndexError):
            self.out(p, 1, "DAMAGE record runs past the end of its chunk")

    def definition(self, p: int, end: int) -> int:
        d, start, tag = self.d, p, self.d[p]
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
            self.out(start, 1, f"FUNCTION id={fid} c={flags & 1} line={line} "
                               f"qualname={R._text(qual)!r} file={R._text(file)!r} "
                               f"module={R._text(mod)!r}")
        elif tag == R.DEF_THREAD:
            tid, p = R._varint(d, p, end)
            ident, p = R._varint(d, p, end)
            native, p = R._varint(d, p, end)
            name, p = R._str(d, p, end)
            self.out(start, 1, f"THREAD id={tid} ident={ident} native_id={native} "
                               f"name={R._text(name)!r}")
        elif tag == R.DEF_THREAD_NAME:
            tid, p = R._varint(d, p, end)
            name, p = R._str(d, p, end)
            self.out(start, 1, f"THREAD_NAME id={tid} name={R._text(name)!r}")
        elif tag == R.DEF_STACK:
            sid, p = R._varint(d, p, end)
            flags = d[p]
            depth, p = R._varint(d, p + 1, end)
            fids = []
            for _ in range(depth):
                fid, p = R._varint(d, p, end)
                fids.append(str(fid))
            cut = " truncated" if flags & 1 else ""
            self.out(start, 1, f"STACK id={sid}{cut} fids=[{' '.join(fids)}]")
        elif tag == R.DEF_SAMPLING:
            rate, p = R._varint(d, p, end)
            clock = d[p]
            depth, p = R._varint(d, p + 1, end)
            self.out(start, 1, f"SAMPLING rate_hz={rate} clock={'cpu' if clock else 'wall'} "
                               f"max_depth={depth}")
        elif tag == R.DEF_SAMPLER_STATS:
            n, p = R._varint(d, p, end)
            values = []
            for _ in range(n):
                v, p = R._varint(d, p, end)
                values.append(v)
            names = list(R.SAMPLER_STATS) + [f"stat{i}" for i in range(len(R.SAMPLER_STATS), n)]
            self.out(start, 1, "SAMPLER_STATS " + " ".join(
                f"{k}={v}" for k, v in zip(names, values)))
        else:
            self.out(start, 1, f"DAMAGE unknown definition tag 0x{tag:02x}")
            return end
        return p


def main(args: argparse.Namespace) -> int:
    try:
        with open(args.trace, "rb") as f:
            data = f.read()
    except OSError as e:
        print(f"fasttrace: error: cannot read {args.trace!r}: {e.strerror}", file=sys.stderr)
        return 1
    try:
        return Dumper(data, args).run()
    except _Stop:
        return 0
    except BrokenPipeError:  # `fasttrace dump x | head`
        sys.stderr.close()
        return 0

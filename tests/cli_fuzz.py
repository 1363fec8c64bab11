"""Fuzzing every read-only command of the command line (tests/integration/test_cli_fuzz.py).

Cases are real small traces with seeded mutations that get past the checksums (a chunk's crc,
and the header's, recomputed after the mutation) so that they reach the record decoders, plus
truncations, splices and raw byte flips.  A worker process runs many cases in-process through
fasttrace.cli.main and writes one JSON line per command before and after it runs, so a signal
or a hang costs only that process: the test starts another one after the case that killed it.

    python tests/cli_fuzz.py seeds DIR        record the seed traces into DIR
    python tests/cli_fuzz.py case SEED FILE   write case SEED (from the committed seeds) to FILE
    python tests/cli_fuzz.py worker MANIFEST RESULTS CASE COMMAND   (what the test runs)

Property of every command on every case: exit code 0, or 1 with exactly one line
`fasttrace: error: ...` on stderr; no traceback, no signal, no hang, no memory blow-up; and a
convert that fails leaves no output file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import struct
import sys
import threading
import time
import traceback
import zlib

from helpers import chunks_of, fix_header_crc, from_chunks
from helpers import varint as vi

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
COMMITTED = ["cli-fuzz-trace.ftrace", "cli-fuzz-sampled.ftrace"]
FORMATS = ["chrome", "collapsed", "perfetto", "pprof", "speedscope"]
# {trace} and {out} are filled in per case
COMMANDS = ([["info", "{trace}"], ["report", "{trace}"], ["report", "--per-thread", "{trace}"],
             ["report", "--json", "{trace}"], ["dump", "{trace}"],
             ["dump", "--thread", "1", "--chunks-only", "{trace}"]]
            + [["convert", "{trace}", "-f", f, "-o", "{out}." + f] for f in FORMATS])
ALARM_S = 30  # a command that runs longer is a hang: SIGALRM ends the worker
MEMORY_LIMIT = 2 << 30  # address space of a worker: a runaway allocation fails, visibly


# ---- seed traces ------------------------------------------------------------------------

def _fib(n):
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)


def _program():
    def gen():
        yield len("ab")
        yield sorted([2, 1])

    def fails():
        raise KeyError("x")

    t = threading.Thread(target=_fib, args=(8,), name="worker")
    t.start()
    _fib(7)
    list(gen())
    try:
        fails()
    except KeyError:
        pass
    time.sleep(0.001)
    t.join()


def record_seeds(directory):
    """A trace-mode trace with two threads and a sampled one with three, into `directory`;
    returns their paths."""
    import fasttrace

    traced = os.path.join(directory, COMMITTED[0])
    sampled = os.path.join(directory, COMMITTED[1])
    with fasttrace.start(traced):
        _program()

    def spin():
        end = time.perf_counter() + 0.04
        while time.perf_counter() < end:
            _fib(6)

    with fasttrace.start(sampled, rate=2000):
        threads = [threading.Thread(target=spin, name=f"spin-{i}") for i in range(2)]
        for t in threads:
            t.start()
        spin()
        for t in threads:
            t.join()
    for path in (traced, sampled):
        with open(path, "rb") as f:
            data = anonymous(f.read())
        with open(path, "wb") as f:
            f.write(data)
    return [traced, sampled]


def _relative(path):
    """A file name without this machine's directories: from tests/ or lib/ on."""
    for marker in (b"/tests/", b"/lib/"):
        i = path.rfind(marker)
        if i >= 0:
            return path[i + 1:]
    return os.path.basename(path) if path.startswith(b"/") else path


def _anonymous_defs(d):
    """A DEFS payload with FUNCTION file names made relative."""
    from fasttrace._pyreader import _str, _varint

    out, p, end = bytearray(), 0, len(d)
    while p < end:
        start, tag = p, d[p]
        p += 1
        if tag == 0x10:  # FUNCTION
            fid, p = _varint(d, p, end)
            flags = d[p]
            line, p = _varint(d, p + 1, end)
            strings = []
            for _ in range(4):
                s, p = _str(d, p, end)
                strings.append(s)
            strings[2] = _relative(strings[2])
            out += bytes([tag]) + vi(fid) + bytes([flags]) + vi(line) + b"".join(
                vi(len(s)) + s for s in strings)
            continue
        if tag == 0x11:  # THREAD
            for _ in range(3):
                _, p = _varint(d, p, end)
            _, p = _str(d, p, end)
        elif tag == 0x12:  # THREAD_NAME
            _, p = _varint(d, p, end)
            _, p = _str(d, p, end)
        elif tag == 0x13:  # STACK
            _, p = _varint(d, p, end)
            n, p = _varint(d, p + 1, end)
            for _ in range(n):
                _, p = _varint(d, p, end)
        elif tag == 0x14:  # SAMPLING
            _, p = _varint(d, p, end)
            _, p = _varint(d, p + 1, end)
        elif tag == 0x15:  # SAMPLER_STATS
            n, p = _varint(d, p, end)
            for _ in range(n):
                _, p = _varint(d, p, end)
        else:
            raise ValueError(f"unknown definition tag 0x{tag:02x}")
        out += d[start:p]
    return bytes(out)


def anonymous(data):
    """Trace `data` without this machine's paths: a neutral command line, relative file names
    (what the committed seeds are made of)."""
    from fasttrace._pyreader import _str

    header, chunks = chunks_of(data)
    body = header[20:]
    _argv, p = _str(body, 64, len(body))
    version, _ = _str(body, p, len(body))
    argv = b"python\0tests/cli_fuzz.py\0seeds\0"
    body = body[:64] + vi(len(argv)) + argv + vi(len(version)) + version
    header = header[:12] + struct.pack("<II", len(body), zlib.crc32(body)) + body
    for c in chunks:
        if c[0] == 2:
            c[5] = _anonymous_defs(c[5])
    return from_chunks(header, chunks)


def built(seed):
    """The records real traces rarely have (DROP, orphan returns, a STACK opening, a second
    events chunk of a thread), in a file made from a trace-mode seed's header and defs."""
    header, chunks = chunks_of(seed)
    defs = [c for c in chunks if c[0] == 2]
    tail = [c for c in chunks if c[0] in (3, 4)]
    ev = (b"\x07" + vi(0) + vi(2) + vi(1) + vi(2) + b"\x01" + vi(3) + vi(9) + b"\x08" + vi(5)
          + vi(40) + vi(1) + vi(1) + b"\x02" + vi(3) + b"\x05" + vi(2) + vi(1) + b"\x02"
          + vi(1) + b"\x03" + vi(1) + vi(1) + b"\x06" + vi(1) + vi(2))
    base = struct.unpack_from("<Q", seed, 52)[0]
    return from_chunks(header, defs + [[1, 0, 1, 9, base, ev], [1, 1, 7, 0, base + 10, b""]]
                       + tail)


# ---- mutations --------------------------------------------------------------------------

def _edit(rng, data, n):
    """n byte edits of `data`: set, flip a bit, insert, delete, or write a varint."""
    d = bytearray(data)
    for _ in range(n):
        pos = rng.randrange(len(d) + 1)
        op = rng.choice(["set", "xor", "insert", "delete", "varint", "varint"])
        if op == "set" and pos < len(d):
            d[pos] = rng.randrange(256)
        elif op == "xor" and pos < len(d):
            d[pos] ^= 1 << rng.randrange(8)
        elif op == "insert":
            d[pos:pos] = bytes([rng.randrange(256)])
        elif op == "delete":
            del d[pos:pos + rng.randint(1, 4)]
        elif op == "varint":
            big = rng.choice([0, 1, 63, 64, 127, 128, 1023, 1024, 1 << 31, (1 << 32) - 1,
                              1 << 40, (1 << 63), (1 << 64) - 1, rng.getrandbits(64)])
            d[pos:pos + rng.randrange(3)] = vi(big)
    return bytes(d)


def _payload(rng, header, chunks):
    kinds = [c for c in chunks if c[0] in (1, 2, 5)] or chunks
    c = rng.choice(kinds)
    c[5] = _edit(rng, c[5], rng.randint(1, 4))
    return from_chunks(header, chunks)


def _field(rng, header, chunks):
    c = rng.choice(chunks)
    index = rng.choice([0, 1, 2, 2, 3, 3, 4])  # type, flags, thread, records, base_tick
    bits = 64 if index == 4 else 32 if index in (2, 3) else 8
    c[index] = rng.choice([0, 1, 2, 5, 6, 255, (1 << bits) - 1, rng.getrandbits(bits)])
    return from_chunks(header, chunks)


def _header(rng, header, chunks):
    body = bytearray(header[20:])
    if rng.random() < 0.6 and len(body) >= 64:  # a fixed field
        off, size = rng.choice([(0, 4), (4, 4), (8, 4), (12, 4), (16, 4), (20, 4), (24, 8),
                                (32, 8), (40, 8), (48, 8), (56, 8)])
        value = rng.choice([0, 1, 2, 3, rng.getrandbits(8 * size), (1 << (8 * size)) - 1])
        if off == 56 and rng.random() < 0.5:  # tick_hz: a double
            body[56:64] = struct.pack("<d", rng.choice([0.0, -1.0, 1e-300, 1e300,
                                                        float("inf"), float("nan"), 1.0]))
        else:
            body[off:off + size] = value.to_bytes(size, "little")
    else:  # the strings, or the size of the body itself
        body = bytearray(_edit(rng, bytes(body), rng.randint(1, 3)))
    pre = bytearray(header[:20])
    if rng.random() < 0.8:
        struct.pack_into("<I", pre, 12, len(body))
    return fix_header_crc(bytes(pre) + bytes(body) + b"".join(
        from_chunks(b"", [c]) for c in chunks))


def _splice(rng, header, chunks, other):
    choice = rng.random()
    if choice < 0.4 and len(chunks) > 1:  # drop, repeat or swap whole chunks
        i, j = rng.randrange(len(chunks)), rng.randrange(len(chunks))
        op = rng.choice(["drop", "repeat", "swap"])
        if op == "drop":
            del chunks[i]
        elif op == "repeat":
            chunks.insert(j, list(chunks[i]))
        else:
            chunks[i], chunks[j] = chunks[j], chunks[i]
        return from_chunks(header, chunks)
    if choice < 0.7:  # a chunk of another seed
        _, theirs = chunks_of(other)
        chunks.insert(rng.randrange(len(chunks) + 1), list(rng.choice(theirs)))
        return from_chunks(header, chunks)
    # bytes of one payload inserted into another
    src, dst = rng.choice(chunks), rng.choice(chunks)
    a = rng.randrange(len(src[5]) + 1)
    piece = src[5][a:a + rng.randint(1, 64)]
    p = rng.randrange(len(dst[5]) + 1)
    dst[5] = dst[5][:p] + piece + dst[5][p:]
    return from_chunks(header, chunks)


def mutate(rng, seed, other):
    """One case: `seed` mutated (once, or twice) with `rng`."""
    data = seed
    for _ in range(1 if rng.random() < 0.7 else 2):
        header, chunks = chunks_of(data)
        if not chunks:
            break
        r = rng.random()
        if r < 0.40:
            data = _payload(rng, header, chunks)
        elif r < 0.50:
            data = _field(rng, header, chunks)
        elif r < 0.60:
            data = _header(rng, header, chunks)
        elif r < 0.80:
            data = _splice(rng, header, chunks, other)
        elif r < 0.90:  # raw flips: checksums left as they are
            data = _edit(rng, data, rng.randint(1, 3))
        else:  # cut, maybe with zero padding after
            data = data[:rng.randrange(len(data))] + b"\0" * rng.choice([0, 0, 7, 40])
        if len(data) < 20 + 64:
            break
    if rng.random() < 0.15:
        data = data[:rng.randrange(len(data) + 1)]
    return data


def make_case(case_seed, seeds):
    """Case `case_seed` from the seed traces `seeds` (bytes): (which seed, the mutated bytes)."""
    rng = random.Random(case_seed)
    which = rng.randrange(len(seeds))
    return which, mutate(rng, seeds[which], seeds[(which + 1) % len(seeds)])


def committed_seeds():
    seeds = []
    for name in COMMITTED:
        with open(os.path.join(DATA, name), "rb") as f:
            seeds.append(f.read())
    return seeds + [built(seeds[0])]


# ---- the worker -------------------------------------------------------------------------

def run_command(argv):
    """fasttrace.cli.main(argv) with captured output: (code, stdout, stderr, traceback)."""
    from fasttrace.cli import main

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace")
    tb = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: B036 - what the command line would show as a traceback
            code, tb = None, traceback.format_exc()
    out.flush()
    err.flush()
    return (code, out.buffer.getvalue().decode("utf-8", "replace"),
            err.buffer.getvalue().decode("utf-8", "replace"), tb)


def problem_of(argv, code, stderr, tb, out_file):
    """What is wrong with one command's outcome, or None."""
    if tb is not None:
        return "traceback:\n" + tb
    if code not in (0, 1):
        return f"exit code {code}; stderr: {stderr!r}"
    lines = stderr.splitlines()
    if code == 1:
        if len(lines) != 1 or not lines[0].startswith("fasttrace: error: "):
            return f"exit code 1 without exactly one error line; stderr: {stderr!r}"
        if "out of memory" in stderr:
            return f"memory blow-up: {stderr!r}"
        if out_file is not None and os.path.exists(out_file):
            return f"a failed convert left {out_file}"
    elif any(not line.startswith("fasttrace: ") or line.startswith("fasttrace: error")
             for line in lines):
        return f"exit code 0 with stderr {stderr!r}"
    return None


def worker(manifest_path, results_path, first_case, first_command):
    with open(manifest_path) as f:
        manifest = json.load(f)
    if not os.environ.get("FASTTRACE_SANITIZE"):  # ASan needs its huge shadow mappings
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    kill_at = os.environ.get("FASTTRACE_CLI_FUZZ_KILL_AT")  # "case,command": the harness' test
    kill_at = tuple(int(x) for x in kill_at.split(",")) if kill_at else None
    with open(results_path, "a") as results:
        for ci in range(first_case, len(manifest["cases"])):
            path = manifest["cases"][ci]["path"]
            out = os.path.join(manifest["out_dir"], "out")
            for k, template in enumerate(COMMANDS):
                if ci == first_case and k < first_command:
                    continue
                argv = [a.format(trace=path, out=out) for a in template]
                out_file = argv[-1] if argv[0] == "convert" else None
                if out_file is not None and os.path.exists(out_file):
                    os.remove(out_file)
                results.write(json.dumps({"start": [ci, k]}) + "\n")
                results.flush()
                signal.alarm(ALARM_S)
                if (ci, k) == kill_at:
                    os.kill(os.getpid(), signal.SIGSEGV)
                code, _, stderr, tb = run_command(argv)
                signal.alarm(0)
                results.write(json.dumps({"done": [ci, k], "code": code, "problem": problem_of(
                    argv, code, stderr, tb, out_file), "error": stderr[:200] if code else ""})
                              + "\n")
                results.flush()


def main(argv):
    if argv[0] == "seeds":
        print("\n".join(record_seeds(argv[1])))
    elif argv[0] == "case":
        which, data = make_case(int(argv[1]), committed_seeds())
        with open(argv[2], "wb") as f:
            f.write(data)
        print(f"case {argv[1]}: seed {which}, {len(data)} bytes, in {argv[2]}")
    elif argv[0] == "worker":
        worker(argv[1], argv[2], int(argv[3]), int(argv[4]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

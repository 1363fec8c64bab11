"""What the per-chunk stacks of format 2 cost: the bytes of OPEN records per event.

    python bench/chunk_stacks.py [--python 3.12 ...] [--workloads fib,go]

Each workload is traced (bench/runners/fasttrace_run.py, C calls on); the file's EVENTS chunks
are read here with the format's own rules (src/FORMAT.md: 32-byte chunk headers, an OPEN
record first in each events chunk) and the OPEN records' bytes are added up.  Reported per
workload: the file's bytes per event, the OPEN bytes per event, and what the file would be
without them.  Stdlib only.
"""

import argparse
import struct
import subprocess

from run import BENCH, WORKLOADS, PythonEnv, save_report

CHUNK = struct.Struct("<IIIBBHIIQ")


def varint(data, pos):
    v = shift = 0
    while True:
        b = data[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return v, pos


def open_bytes(path):
    """(file bytes, events, OPEN bytes, events chunks) of a format 2 trace."""
    data = open(path, "rb").read()
    body = struct.unpack_from("<I", data, 12)[0]
    off = 20 + body
    events = opens = chunks = 0
    while off + 32 <= len(data):
        _magic, size, _crc, ctype, _f, _r, _thread, records, _base = CHUNK.unpack_from(data, off)
        payload = off + 32
        if ctype == 1:
            chunks += 1
            events += records
            if size and data[payload] == 0x0A:
                depth, pos = varint(data, payload + 1)
                for _ in range(depth):
                    _, pos = varint(data, pos)
                opens += pos - payload
        off = payload + size
    return len(data), events, opens, chunks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", action="append", default=None)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    results, lines = {}, ["# bench/chunk_stacks.py: OPEN records (format 2) per event", ""]
    for ver in args.python or ["3.12"]:
        env = PythonEnv(ver)
        if env.problem:
            results[ver] = {"status": "skipped", "reason": env.problem}
            continue
        rows = results[ver] = {}
        lines += [f"## Python {ver}", "",
                  "| workload | events | B/event | OPEN B/event | OPEN bytes | chunks | "
                  "B/event without OPEN |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for wl in args.workloads.split(","):
            out = str(env.out / f"{wl}.chunk_stacks.ftrace")
            subprocess.run([env.python, str(BENCH / "runners" / "fasttrace_run.py"),
                            str(BENCH / "workloads" / f"{wl}.py"), out], check=True,
                           capture_output=True, cwd=env.out)
            size, events, opens, chunks = open_bytes(out)
            rows[wl] = {"bytes": size, "events": events, "open_bytes": opens, "chunks": chunks}
            lines.append(f"| {wl} | {events:,} | {size / events:.4f} | {opens / events:.5f} | "
                         f"{opens:,} | {chunks:,} | {(size - opens) / events:.4f} |")
        lines.append("")
    save_report(results, args.json, "chunk-stacks", lines)


if __name__ == "__main__":
    main()

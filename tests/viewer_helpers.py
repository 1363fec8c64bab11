"""Shared by the viewer's tests: small traces made by a child interpreter, a `fasttrace view`
server in a subprocess, and a PNG decoder (zlib + struct: no Pillow)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import zlib

PROGRAM = """
import threading, time

def leaf(n):
    return sum(range(n))

def napper():
    time.sleep(0.05)

def work():
    for i in range(300):
        leaf(200)
    napper()

def other():
    for i in range(100):
        leaf(2000)
    time.sleep(0.03)

t = threading.Thread(target=other, name="worker")
t.start()
work()
t.join()
"""

SAMPLED = """
import threading, time

def spin(sec):
    end = time.perf_counter() + sec
    while time.perf_counter() < end:
        pass

def napper():
    time.sleep(0.25)

def work():
    spin(0.2)
    napper()

t = threading.Thread(target=spin, args=(0.3,), name="worker")
t.start()
work()
t.join()
"""


def make_trace(tmp_path, sampled=False):
    """A trace of two threads (trace mode with C calls, or sampled at 500 Hz)."""
    script = tmp_path / ("sprog.py" if sampled else "prog.py")
    script.write_text(textwrap.dedent(SAMPLED if sampled else PROGRAM))
    out = tmp_path / ("s.ftrace" if sampled else "t.ftrace")
    rate = ["--rate", "500"] if sampled else []
    r = subprocess.run([sys.executable, "-m", "fasttrace", "run", *rate, "-o", str(out),
                        str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


def report_json(tmp_path, trace):
    r = subprocess.run([sys.executable, "-m", "fasttrace", "report", "--json", "--limit", "0",
                        str(trace)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


class ViewServer:
    """`fasttrace view TRACE --no-browser` on a free port; .url, .stderr; stop()."""

    def __init__(self, cwd, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "fasttrace", "view", *map(str, args),
                                      "--no-browser"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=cwd)
        line = self.proc.stdout.readline()
        if "serving the viewer on " not in line:
            self.proc.kill()
            raise AssertionError(f"no URL: {line!r} {self.proc.stderr.read()}")
        self.url = line.split("serving the viewer on ")[1].split()[0]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        err = self.proc.stderr.read()
        self.proc.stdout.close()  # now, not when collected (other tests count descriptors)
        self.proc.stderr.close()
        return err


def png_pixels(data):
    """(width, height, rows): rows[y] is a bytes of RGB(A) per pixel; 8-bit RGB/RGBA PNGs."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows

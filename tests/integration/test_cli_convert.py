"""`fasttrace convert`: every format from the command line, notes on damage, clean errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import fasttrace_cli as cli

import fasttrace
from fasttrace import export



def work(n):
    return n if n < 2 else work(n - 1) + work(n - 2)


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.ftrace"
    with fasttrace.start(path):
        work(10)
    return path


@pytest.mark.parametrize("fmt", sorted(export.FORMATS))
def test_every_format_converts_with_a_default_name(tmp_path, good, fmt):
    r = cli(tmp_path, "convert", str(good), "--format", fmt)
    assert r.returncode == 0, r.stderr
    out = tmp_path / ("good" + export.suffix(fmt))
    assert out.exists() and out.stat().st_size > 0
    assert f"wrote {fmt} to {out}" in r.stderr
    assert "note:" not in r.stderr


def test_truncated_trace_converts_with_a_note(tmp_path, good):
    cut = tmp_path / "cut.ftrace"
    cut.write_bytes(good.read_bytes()[:-60])  # into the trailer: every event chunk stays
    r = cli(tmp_path, "convert", str(cut), "-f", "collapsed", "-o", "cut.folded")
    assert r.returncode == 0, r.stderr
    assert "note: the trace is truncated" in r.stderr
    assert (tmp_path / "cut.folded").read_text().strip()


def test_errors_are_one_line(tmp_path, good):
    bad = tmp_path / "bad.ftrace"
    bad.write_bytes(b"\x00" * 100)
    r = cli(tmp_path, "convert", str(bad), "-f", "chrome")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "bad magic" in r.stderr
    r = cli(tmp_path, "convert", str(good), "-f", "chrome", "-o", "/sys/x.json")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "cannot write '/sys/x.json'" in r.stderr
    r = cli(tmp_path, "convert", str(good), "-f", "svg")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def _stderr_of(tmp_path, args, tty):
    """Runs fasttrace with stderr on a pseudo-terminal (tty=True) or a pipe."""
    import os
    import pty

    if not tty:
        return cli(tmp_path, *args).stderr
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "fasttrace", *args], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        proc.wait(timeout=60)
    finally:
        os.close(master)
    return out.decode(errors="replace")


@pytest.mark.parametrize("tty", [True, False])
def test_progress_only_on_a_terminal(tmp_path, tty):
    path = tmp_path / "big.ftrace"
    with fasttrace.start(path):
        work(22)  # ~57k calls: more events than the exporters' progress step
    err = _stderr_of(tmp_path, ["convert", str(path), "-f", "collapsed"], tty)
    assert "wrote collapsed" in err
    assert ("converting" in err) is tty

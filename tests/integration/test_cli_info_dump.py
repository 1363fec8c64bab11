"""`fasttrace info` and `fasttrace dump` on good, truncated and broken files."""

from __future__ import annotations

import re

import pytest

from helpers import chunks_of, from_chunks, with_bad_record
from helpers import fasttrace_cli as cli

import fasttrace



def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.ftrace"
    with fasttrace.start(path):
        fib(12)
    return path


def test_info(tmp_path, good):
    r = cli(tmp_path, "info", str(good))
    assert r.returncode == 0, r.stderr
    trace = fasttrace.load(good)
    assert re.search(rf"^events\s+{trace.stats.events:,}$", r.stdout, re.M)
    assert re.search(r"^complete\s+yes$", r.stdout, re.M)
    assert "MainThread" in r.stdout and "hook:" in r.stdout


def test_info_truncated(tmp_path, good):
    cut = tmp_path / "cut.ftrace"
    cut.write_bytes(good.read_bytes()[:-100])
    r = cli(tmp_path, "info", str(cut))
    assert r.returncode == 0, r.stderr
    assert re.search(r"^complete\s+no: truncated$", r.stdout, re.M)
    assert re.search(r"^damage\s+damaged tail at byte \d+", r.stdout, re.M)


def test_info_rejects_garbage_in_one_line(tmp_path):
    bad = tmp_path / "bad.ftrace"
    bad.write_bytes(b"hello, not a trace")
    r = cli(tmp_path, "info", str(bad))
    assert r.returncode == 1
    assert r.stderr.strip() == f"fasttrace: error: {bad}: byte 0: not a fasttrace file (bad magic)"


def test_dump_shows_every_record(tmp_path, good):
    r = cli(tmp_path, "dump", str(good))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("@0 ") and "PREAMBLE version=2" in lines[0]
    # each EVENTS chunk is followed by its OPEN record (format 2: not counted in `records`)
    # and exactly `records` record lines
    for i, line in enumerate(lines):
        m = re.search(r"CHUNK EVENTS .*crc=ok .*records=(\d+)", line)
        if m:
            assert re.match(r"@\d+ +OPEN ", lines[i + 1]), lines[i + 1]
            body = lines[i + 2:i + 2 + int(m[1])]
            assert all(re.match(r"@\d+ +(CALL|RETURN|C_CALL|C_RETURN|ORPHAN_\w+|STACK|DROP) ", b)
                       for b in body)
    trace = fasttrace.load(good)
    assert sum(1 for x in lines if " FUNCTION id=" in x) == len(trace.functions)
    assert any("CALL fid=" in x and "(fib)" in x for x in lines)
    assert "TRAILER" in lines[-2]


def test_dump_stops_at_damage(tmp_path, good):
    data = good.read_bytes()
    cut = tmp_path / "cut.ftrace"
    cut.write_bytes(data[: len(data) // 2])
    r = cli(tmp_path, "dump", str(cut))
    assert r.returncode == 1
    assert "DAMAGE" in r.stdout.splitlines()[-1]
    # and the first damage is the command's one error line
    assert r.stderr.startswith(f"fasttrace: error: {cut}: byte ") and r.stderr.count("\n") == 1


def test_dump_goes_on_after_damage_in_a_record(tmp_path, good):
    bad = tmp_path / "bad.ftrace"
    bad.write_bytes(with_bad_record(good.read_bytes(), 1))
    r = cli(tmp_path, "dump", str(bad))
    # dump shows records as they are: a call of an undefined function is not a framing error
    assert r.returncode == 0 and re.search(r"CALL fid=100000 \(\?\)", r.stdout)
    header, chunks = chunks_of(good.read_bytes())
    events = next(c for c in chunks if c[0] == 1)
    events[5] = b"\x42" + events[5]  # an unknown tag: the rest of this chunk is not decoded
    bad.write_bytes(from_chunks(header, chunks))
    r = cli(tmp_path, "dump", str(bad))
    assert r.returncode == 1 and "DAMAGE unknown record tag 0x42" in r.stdout
    assert r.stdout.count("CHUNK ") == len(chunks) and "TRAILER" in r.stdout
    assert r.stderr.endswith(": unknown record tag 0x42\n") and r.stderr.count("\n") == 1


def test_dump_missing_file_is_one_line(tmp_path):
    r = cli(tmp_path, "dump", "nope.ftrace")
    assert r.returncode == 1 and r.stderr == "fasttrace: error: nope.ftrace: no such file\n"


def test_dump_and_info_show_the_scope(tmp_path):
    path = tmp_path / "s.ftrace"
    with fasttrace.start(str(path), include=["builtins"], max_depth=3):
        len("x")
    r = cli(tmp_path, "dump", "s.ftrace")
    assert r.returncode == 0, r.stderr
    assert "DAMAGE" not in r.stdout
    line = [x for x in r.stdout.splitlines() if " SCOPE " in x]
    assert len(line) == 1 and '"include":["builtins"]' in line[0] and '"max_depth":3' in line[0]
    r = cli(tmp_path, "info", "s.ftrace")
    assert re.search(r"^scope +include builtins; max depth 3 ", r.stdout, re.M), r.stdout

"""Bad input on the command line: one line `fasttrace: error: ...` and exit code 1, never a
traceback; a closed output pipe ends the read-only commands quietly (issue 8)."""

from __future__ import annotations

import errno
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib

import pytest
from helpers import (MAGIC, chunks_of, cli_in_process, fasttrace_cli, from_chunks, varint,
                     with_bad_record)

import fasttrace
from fasttrace import export

FORMATS = sorted(export.FORMATS)


def work(n):
    return n if n < 2 else work(n - 1) + work(n - 2)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and damaged traces, both modes: {name: path}."""
    d = tmp_path_factory.mktemp("cli-errors")
    traced, sampled = d / "traced.ftrace", d / "sampled.ftrace"
    with fasttrace.start(traced):
        t = threading.Thread(target=work, args=(12,))
        t.start()
        work(12)
        t.join()
    with fasttrace.start(sampled, rate=1000):
        end = time.perf_counter() + 0.05
        while time.perf_counter() < end:
            work(10)
    # a sampled process killed by SIGKILL: no trailer, no sampler stats, so `info` counts the
    # samples itself
    killed = d / "killed.ftrace"
    code = ("import os, signal, time, fasttrace\n"
            f"fasttrace.start({str(killed)!r}, rate=1000)\n"
            "end = time.perf_counter() + 0.3\n"
            "while time.perf_counter() < end: pass\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=d, timeout=60)
    assert r.returncode == -signal.SIGKILL
    assert fasttrace.load(killed).sampling is not None
    out = {"traced": traced, "sampled": sampled, "killed": killed}
    for name, ctype in (("traced", 1), ("sampled", 5), ("killed", 5)):
        bad = d / f"bad-{name}.ftrace"
        bad.write_bytes(with_bad_record(out[name].read_bytes(), ctype))
        fasttrace.load(bad)  # the damage is only found while iterating
        out[f"bad-{name}"] = bad
    return out


def assert_one_error_line(r, *parts):
    """r: a CompletedProcess, or cli_in_process()'s (code, stdout, stderr)."""
    code, err = (r[0], r[2]) if isinstance(r, tuple) else (r.returncode, r.stderr)
    assert code == 1, (code, err)
    assert err.startswith("fasttrace: error: ") and err.count("\n") == 1, err
    for part in parts:
        assert part in err, err


# ---- item 1: damage found while iterating -----------------------------------------------

READERS = [["report"], ["report", "--per-thread"], ["report", "--json"], ["info"]]


@pytest.mark.parametrize("name", ["bad-traced", "bad-sampled", "bad-killed"])
def test_damage_while_iterating_is_one_line(files, name):
    path = files[name]
    reason = "is used before its definition" if name == "bad-traced" else "unknown sample record"
    for args in READERS:
        if args == ["info"] and name == "bad-traced":
            continue  # info does not decode events (it counts records from the chunk headers)
        r = cli_in_process(*args, path)
        assert_one_error_line(r, f"{path}: byte ", reason)
        assert r[1] == "", "nothing half printed"
    # and as the command line shows it
    assert_one_error_line(fasttrace_cli(path.parent, "report", str(path)), reason)


@pytest.mark.parametrize("name", ["bad-traced", "bad-sampled"])
def test_convert_of_damage_leaves_no_half_file(files, tmp_path, name):
    for fmt in FORMATS:
        out = tmp_path / f"out.{fmt}"
        out.write_text("an older conversion")
        r = cli_in_process("convert", files[name], "-f", fmt, "-o", out)
        assert_one_error_line(r, f"nothing written to {out}")
        assert not out.exists()


# ---- item 2: dump of a short header -----------------------------------------------------

def test_dump_of_a_header_shorter_than_its_fixed_part(tmp_path):
    body = b"\0" * 10
    path = tmp_path / "short.ftrace"
    path.write_bytes(MAGIC + struct.pack("<3I", 1, len(body), zlib.crc32(body)) + body)
    r = fasttrace_cli(tmp_path, "dump", str(path))
    assert_one_error_line(r, f"{path}: byte 12: header too short (10 bytes; its fixed part "
                             "is 64)")
    assert r.stdout.splitlines()[-1].endswith("DAMAGE header too short (10 bytes; its fixed "
                                              "part is 64)")
    r = fasttrace_cli(tmp_path, "info", str(path))
    assert_one_error_line(r, "header too short")


# ---- item 3: a closed output pipe -------------------------------------------------------

def _with_closed_stdout(cwd, *args):
    """Runs fasttrace with stdout a pipe whose reading end is already closed."""
    proc = subprocess.Popen([sys.executable, "-m", "fasttrace", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return proc.wait(timeout=60), err


@pytest.mark.parametrize("name, args", [
    ("traced", ["info"]), ("traced", ["report", "--per-thread"]), ("traced", ["dump"]),
    ("traced", ["convert", "-f", "chrome", "-o", "-"]), ("sampled", ["info"]),
    ("sampled", ["report", "--json"]), ("traced", ["dump", "--help"]),
], ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_closed_pipe_ends_quietly(files, name, args):
    code, err = _with_closed_stdout(files[name].parent, *args, str(files[name]))
    assert err == ""
    if "--help" in args:  # newer argparse ignores a failed write of the help itself
        assert code in (0, 128 + signal.SIGPIPE)
    else:
        assert code == 128 + signal.SIGPIPE  # as a shell shows a command killed by SIGPIPE


def test_run_leaves_sigpipe_to_the_program(tmp_path):
    (tmp_path / "p.py").write_text(
        "import sys\n"
        "try:\n"
        "    for _ in range(1000):\n"
        "        print('x' * 100, flush=True)\n"
        "except BrokenPipeError:\n"
        "    sys.stderr.write('EPIPE seen\\n')\n"
        "    sys.stderr.flush()\n"
        "    import os; os._exit(7)\n")
    plain = subprocess.Popen([sys.executable, "p.py"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    plain.stdout.close()
    assert plain.stderr.read().decode() == "EPIPE seen\n" and plain.wait(timeout=60) == 7
    code, err = _with_closed_stdout(tmp_path, "run", "-o", "t.ftrace", "p.py")
    assert code == 7 and err.startswith("EPIPE seen\n"), err


# ---- items 5 and 6: dump's options, and files that are not traces -----------------------

def test_dump_rejects_a_negative_limit(files):
    r = fasttrace_cli(files["traced"].parent, "dump", "--limit", "-5", str(files["traced"]))
    assert r.returncode == 2 and r.stdout == ""
    assert "argument --limit: must be 0 (no limit) or more, got -5" in r.stderr


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


NOT_REGULAR = [("/dev/zero", "a character device"), ("fifo", "a FIFO (named pipe)"),
               (".", "a directory")]


def test_dump_names_what_is_not_a_regular_file(tmp_path, fifo):
    for path, kind in NOT_REGULAR:  # a FIFO is not opened: no waiting for a writer
        r = fasttrace_cli(tmp_path, "dump", path, timeout=20)
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr == f"fasttrace: error: {path}: byte 0: not a regular file ({kind})\n"
    r = fasttrace_cli(tmp_path, "dump", "missing.ftrace")
    assert r.stderr == "fasttrace: error: missing.ftrace: no such file\n" and r.returncode == 1


@pytest.mark.parametrize("command", [["info"], ["report"],
                                     ["convert", "-f", "chrome", "-o", "x.json"]], ids=" ".join)
def test_every_command_names_what_is_not_a_regular_file(tmp_path, fifo, command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path, kind in NOT_REGULAR:
        code, out, err = cli_in_process(*command, path)
        assert code == 1 and out == ""
        if kind == "a directory":  # read as a directory of per-process traces: it has none
            assert err == (f"fasttrace: error: {path}: no trace files (*.ftrace) in this "
                           "directory (1 other entry)\n")
            continue
        assert err == f"fasttrace: error: {path}: byte 0: not a regular file ({kind})\n"
    assert cli_in_process(*command, "missing.ftrace") == (
        1, "", "fasttrace: error: missing.ftrace: no such file\n")
    assert not (tmp_path / "x.json").exists()


def _dump_in_limited_memory(cwd, *args):
    """`fasttrace dump ARGS` with its address space limited to 256 MiB."""
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1 << 28, 1 << 28))\n"
            "from fasttrace.cli import main\n"
            "sys.exit(main(['dump', *sys.argv[1:]]))\n")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(bool(os.environ.get("FASTTRACE_SANITIZE")),
                    reason="ASan needs its huge shadow mappings: no address-space limit")
def test_dump_streams_in_bounded_memory(files, tmp_path):
    big = tmp_path / "big.ftrace"
    data = files["traced"].read_bytes()
    with open(big, "wb") as f:  # a trace, then 320 MiB of zeros (sparse: no disk used)
        f.write(data)
        f.truncate(len(data) + (5 << 26))
    r = _dump_in_limited_memory(tmp_path, "--limit", "3", str(big))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert len(r.stdout.splitlines()) == 3
    r = _dump_in_limited_memory(tmp_path, "--chunks-only", str(big))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.splitlines()[-1].endswith(f"END {5 << 26} bytes of zero padding")
    # a chunk that declares more bytes than the file has: nothing is allocated for it
    header, chunks = chunks_of(data)
    huge = bytearray(from_chunks(header, chunks[:1]))
    struct.pack_into("<I", huge, len(header) + 4, 0xFFFFFFF0)
    big.write_bytes(bytes(huge))
    r = _dump_in_limited_memory(tmp_path, str(big))
    assert_one_error_line(r, "chunk of 4294967280 bytes runs past the end of the file")
    assert "DAMAGE chunk of 4294967280 bytes runs past the end of the file" in r.stdout


# ---- item 12: convert -o - --------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["collapsed", "chrome", "speedscope"])
def test_convert_to_stdout(files, tmp_path, fmt):
    r = fasttrace_cli(tmp_path, "convert", str(files["traced"]), "-f", fmt, "-o", "-")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "-").exists()
    assert len(r.stdout) > 100 and "work" in r.stdout
    assert r.stderr.startswith(f"fasttrace: wrote {fmt} to stdout (")


# ---- found by the fuzzer (tests/integration/test_cli_fuzz.py) ---------------------------

def _with_header_strings(data, argv, version):
    header, chunks = chunks_of(data)
    # version 2: the series fields follow the strings (varint 0, u64 0, u8 origin 0 here)
    rest = b"\x00" + bytes(8) + b"\x00" if header[8] == 2 else b""
    body = header[20:84] + varint(len(argv)) + argv + varint(len(version)) + version + rest
    pre = header[:12] + struct.pack("<II", len(body), zlib.crc32(body))
    return from_chunks(pre + body, chunks)


def test_info_with_an_empty_python_version(files, tmp_path):
    path = tmp_path / "empty-version.ftrace"
    path.write_bytes(_with_header_strings(files["traced"].read_bytes(), b"", b""))
    code, out, err = cli_in_process("info", path)
    assert code == 0, err
    assert re.search(r"^python +\? \(hook: ", out, re.M) and re.search(r"^command +$", out, re.M)


# ---- item 1: errors from reading, and ^C ------------------------------------------------

@pytest.mark.parametrize("raised, message", [
    (OSError(errno.EIO, "Input/output error"), "input/output error"),
    (MemoryError(), "out of memory while reading it"),
])
@pytest.mark.parametrize("command", ["report", "info", "convert"])
def test_errors_while_reading_are_one_line(files, tmp_path, monkeypatch, raised, message,
                                           command):
    def fail(*args, **kwargs):
        raise raised

    # the trace loads, then reading its events or samples fails (fold_source: where the
    # native fold that report uses starts reading)
    monkeypatch.setattr(fasttrace.Trace, "events", fail)
    monkeypatch.setattr(fasttrace.Trace, "samples", fail)
    monkeypatch.setattr(fasttrace.Trace, "fold_source", fail)
    args = ["-f", "chrome", "-o", tmp_path / "x.json"] if command == "convert" else []
    for name in ("traced", "killed"):
        if command == "info" and name == "traced":
            continue  # info reads no events
        r = cli_in_process(command, files[name], *args)
        lost = f"; nothing written to {tmp_path / 'x.json'}" if command == "convert" else ""
        assert r[0] == 1 and r[2] == f"fasttrace: error: {files[name]}: {message}{lost}\n", r
        assert not (tmp_path / "x.json").exists()


def test_interrupted_read_ends_quietly(files, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fasttrace.Trace, "events", interrupt)
    monkeypatch.setattr(fasttrace.Trace, "fold_source", interrupt)
    try:
        r = cli_in_process("report", files["traced"])
    except KeyboardInterrupt:  # not out of this test: it would stop the whole session
        pytest.fail("KeyboardInterrupt escaped fasttrace.cli.main (a traceback)")
    assert r == (130, "", "")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(files, tmp_path):
    path = tmp_path / "secret.ftrace"
    path.write_bytes(files["traced"].read_bytes())
    path.chmod(0)
    for command in (["info"], ["dump"], ["report"]):
        r = cli_in_process(*command, path)
        assert r == (1, "", f"fasttrace: error: {path}: permission denied\n")


def test_binary_format_is_not_written_to_a_terminal(files, tmp_path):
    import pty

    master, slave = pty.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "fasttrace", "convert", str(files["traced"]),
                            "-f", "pprof", "-o", "-"], stdout=slave, stderr=subprocess.PIPE,
                           text=True, timeout=60, cwd=tmp_path)
    finally:
        os.close(slave)
        os.close(master)
    assert r.returncode == 1
    assert r.stderr == ("fasttrace: error: pprof is binary: not written to a terminal (use -o "
                        "FILE, or redirect stdout)\n")


def test_convert_to_a_full_device(files, tmp_path):
    r = cli_in_process("convert", files["traced"], "-f", "chrome", "-o", "/dev/full")
    assert r == (1, "", "fasttrace: error: cannot write '/dev/full': No space left on device; "
                        "the output to /dev/full is incomplete\n")

"""pprof export: decoded here by a small independent protobuf reader, and read by
`go tool pprof` (the independent consumer; skipped when Go is not installed: apt-get install
golang-go)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from collections import defaultdict

import pytest

import export_programs
from export_programs import little, outer, slow, two_threads
from helpers import load_cut, trace_with_drops, traced

from fasttrace.export import collapsed, pprof


# qualname `<lambda>`: go tool pprof must show it as it is
run_two_threads = lambda: two_threads()  # noqa: E731




# ---- a minimal protobuf reader (wire format only) ----------------------------------------

def read_varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return n, i


def fields(buf):
    """{field number: [values]}: ints for varints, bytes for length-delimited."""
    out = defaultdict(list)
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(buf, i)
        elif wire == 2:
            size, i = read_varint(buf, i)
            value, i = bytes(buf[i:i + size]), i + size
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        out[number].append(value)
    return out


def packed(data):
    values, i = [], 0
    while i < len(data):
        v, i = read_varint(data, i)
        values.append(v)
    return values


def decode(path):
    with open(path, "rb") as f:
        assert f.read(2) == b"\x1f\x8b", "gzip-compressed"
    p = fields(gzip.open(path).read())
    strings = [s.decode("utf-8") for s in p[6]]
    one = lambda msg, n: fields(msg)[n][0] if fields(msg)[n] else 0  # noqa: E731
    functions = {one(m, 1): {"name": strings[one(m, 2)], "system_name": strings[one(m, 3)],
                             "file": strings[one(m, 4)], "line": one(m, 5)} for m in p[5]}
    locations = {}
    for m in p[4]:
        lines = [fields(line) for line in fields(m)[4]]
        assert len(lines) == 1
        locations[one(m, 1)] = functions[lines[0][1][0]]
    samples = []
    for m in p[2]:
        s = fields(m)
        labels = {strings[one(lab, 1)]: strings[one(lab, 2)] for lab in s[3]}
        samples.append(([locations[i]["name"] for i in packed(s[1][0])],
                        packed(s[2][0]), labels))
    return {
        "strings": strings,
        "sample_type": [(strings[one(m, 1)], strings[one(m, 2)]) for m in p[1]],
        "period_type": (strings[one(p[11][0], 1)], strings[one(p[11][0], 2)]),
        "default_sample_type": strings[p[14][0]],
        "time_nanos": p[9][0], "duration_nanos": p[10][0] if p[10] else 0,
        "functions": functions, "samples": samples,
    }


def folded_totals(trace, tmp_path):
    """Self ns per thread, from the collapsed exporter."""
    out = tmp_path / "t.folded"
    collapsed.write(trace, out)
    threads = defaultdict(int)
    for line in open(out, encoding="utf-8").read().splitlines():
        stack, weight = line.rsplit(" ", 1)
        threads[stack.split(";")[0]] += int(weight)
    return threads


def check_profile(trace, path, tmp_path):
    p = decode(path)
    assert p["strings"][0] == ""
    assert p["sample_type"] == [("wall", "nanoseconds"), ("calls", "count")]
    assert p["period_type"] == ("wall", "nanoseconds") and p["default_sample_type"] == "wall"
    assert p["time_nanos"] == trace.header["start_wall_ns"]
    last = max(e.ts for e in trace.events())
    assert p["duration_nanos"] == max(trace.stats.duration_ns, last)
    wall = defaultdict(int)
    for stack, values, labels in p["samples"]:
        assert stack and len(values) == 2 and values != [0, 0]
        wall[labels["thread"]] += values[0]
    assert dict(wall) == dict(folded_totals(trace, tmp_path))
    return p


def go_pprof(*args):
    if shutil.which("go") is None:
        pytest.skip("`go` is not installed (apt-get install golang-go): go tool pprof is the "
                    "independent reader of the profile")
    env = dict(os.environ, PPROF_TMPDIR=os.environ.get("TMPDIR", "/tmp"))
    r = subprocess.run(["go", "tool", "pprof", *args], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def top(path, *options):
    """[(flat ns, function name)] from go tool pprof -top, heaviest first."""
    out = go_pprof("-top", "-unit=ns", "-nodefraction=0", "-nodecount=100000", *options,
                   str(path))
    rows = []
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["flat", "flat%"])
    for line in lines[start + 1:]:
        parts = line.split(None, 5)
        rows.append((int(float(parts[0].rstrip("ns"))), parts[5]))
    return rows


@pytest.mark.parametrize("c_calls", [True, False], ids=["c_calls", "no_c_calls"])
def test_profile_structure_and_self_time(tmp_path, c_calls):
    trace = traced(tmp_path / "t.ftrace", two_threads, c_calls=c_calls)
    out = tmp_path / "t.pb.gz"
    result = pprof.write(trace, out)
    p = check_profile(trace, out, tmp_path)
    assert result["samples"] == len(p["samples"]) and result["threads"] == 2
    heaviest = max(p["samples"], key=lambda s: s[1][0])
    assert heaviest[2] == {"thread": "MainThread"} and heaviest[1][0] >= 45_000_000
    # leaf first
    assert heaviest[0][:2] == (["time.sleep", "slow"] if c_calls else ["slow", "two_threads"])
    calls = defaultdict(int)
    for stack, values, _ in p["samples"]:
        calls[stack[0]] += values[1]
    assert calls["little"] == 200 and calls["slow"] == 1 and calls["worker_sleep"] == 1
    fn = next(f for f in p["functions"].values() if f["name"] == "slow")
    assert fn["file"] == os.path.abspath(export_programs.__file__)
    assert fn["line"] == slow.__code__.co_firstlineno


def test_go_tool_pprof_top(tmp_path):
    trace = traced(tmp_path / "t.ftrace", run_two_threads, c_calls=False)
    out = tmp_path / "t.pb.gz"
    pprof.write(trace, out)
    rows = top(out)
    assert rows[0][1] == "slow" and rows[0][0] >= 45_000_000
    flat = dict((name, ns) for ns, name in rows)
    assert flat["worker_sleep"] >= 25_000_000
    assert 0 < flat["little"] < rows[0][0] / 5
    # `<lambda>` is not taken for a C++ template and cut to nothing (shown as `[python]`)
    assert "<lambda>" in flat and not any(name.startswith("[") for name in flat)
    worker = top(out, "-tagfocus=thread=worker")
    assert worker[0][1] == "worker_sleep" and "slow" not in dict((n, v) for v, n in worker)
    calls = dict((name, n) for n, name in top(out, "-sample_index=calls"))
    assert calls["little"] == 200


def test_drops_are_not_attributed(tmp_path):
    trace = trace_with_drops(tmp_path, outer)[0]
    out = tmp_path / "t.pb.gz"
    result = pprof.write(trace, out)
    assert result["dropped"] == trace.stats.dropped and result["gaps"] > 0
    p = check_profile(trace, out, tmp_path)
    main = next(t for t in trace.threads if t.name == "MainThread")
    ts = [e.ts for e in trace.events(thread=main.id)]
    main_wall = sum(v[0] for _, v, labels in p["samples"] if labels["thread"] == "MainThread")
    assert main_wall == ts[-1] - ts[0] - result["gap_ns"]
    if shutil.which("go"):
        assert any(name == "leaf" for _, name in top(out))


def test_truncated_trace(tmp_path):
    full = traced(tmp_path / "t.ftrace", lambda: [little() for _ in range(20_000)])
    trace = load_cut(full.path, tmp_path / "cut.ftrace", 2 / 3)
    assert trace.stats.truncated
    out = tmp_path / "t.pb.gz"
    pprof.write(trace, out)
    p = check_profile(trace, out, tmp_path)
    assert any(stack[0] == "little" for stack, _, _ in p["samples"])
    if shutil.which("go"):
        assert any(name == "little" for _, name in top(out))

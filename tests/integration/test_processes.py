"""A directory of per-process traces read as one multi-process trace (issue 11): the loader
(fasttrace.load_processes), and report, info and convert of a directory, from real programs
that fork and start subprocesses, each process tracing itself into `prog.<pid>.ftrace`, in
trace and in sampling mode."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from collections import defaultdict

import pytest

import fasttrace
from fasttrace.export import write
from helpers import cli_in_process, fix_header_crc

pb2 = pytest.importorskip("perfetto.protos.perfetto.trace.perfetto_trace_pb2")

# The parent traces itself, forks a child that traces itself, runs a subprocess that traces
# itself (and a thread of its own, and rotates its file: a series), and goes on.  argv:
# the directory, the mode; stdout: the pids, and the parent's clock around each child.
PARENT = textwrap.dedent("""
    import json, os, subprocess, sys, time
    import fasttrace

    d, mode = sys.argv[1], sys.argv[2]
    options = {"rate": 500} if mode == "sample" else {"c_calls": False}

    def step():
        pass

    def spin(seconds):
        end = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < end:
            n += 1
            if n % 100 == 0:
                step()
        return n

    def parent_work():
        spin(0.06)

    def forked_work():
        spin(0.06)

    def before_fork():
        return time.monotonic_ns()

    def after_wait():
        return time.monotonic_ns()

    fasttrace.start(f"{d}/prog.{os.getpid()}.ftrace", **options)
    parent_work()
    before_fork()
    pid = os.fork()
    if pid == 0:
        fasttrace.start(f"{d}/prog.{os.getpid()}.ftrace", **options)
        forked_work()
        fasttrace.stop()
        os._exit(0)
    os.waitpid(pid, 0)
    after_wait()
    child = subprocess.Popen([sys.executable, "child.py", d, mode])
    child.wait()
    after_wait()
    parent_work()
    fasttrace.stop()
    print(json.dumps({"parent": os.getpid(), "forked": pid, "child": child.pid}))
""")

CHILD = textwrap.dedent("""
    import os, sys, threading, time
    import fasttrace

    d, mode = sys.argv[1], sys.argv[2]
    options = {"rate": 500} if mode == "sample" else {"c_calls": False}

    def step():
        pass

    def child_work():
        end = time.perf_counter() + 0.08
        n = 0
        while time.perf_counter() < end:
            n += 1
            if n % 100 == 0:
                step()

    # a rotated series: one process's trace in several files
    fasttrace.start(f"{d}/child.{os.getpid()}.ftrace", max_seconds=0.03, **options)
    t = threading.Thread(target=child_work, name="child-worker")
    t.start()
    t.join()
    child_work()
    fasttrace.stop()
""")

MODES = ["trace", "sample"]


def run_family(where, mode):
    """Runs the parent (in `where`, cwd) writing into where/procs; returns (directory, pids)."""
    (where / "parent.py").write_text(PARENT)
    (where / "child.py").write_text(CHILD)
    (where / "procs").mkdir()
    r = subprocess.run([sys.executable, "parent.py", "procs", mode], cwd=where,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return where / "procs", json.loads(r.stdout.splitlines()[-1])


@pytest.fixture(scope="module", params=MODES)
def family(request, tmp_path_factory):
    """(mode, directory, pids) of one run of the family of processes, per mode."""
    where = tmp_path_factory.mktemp(f"family-{request.param}")
    directory, pids = run_family(where, request.param)
    return request.param, directory, pids


@pytest.fixture
def copy(family, tmp_path):
    """A copy of the family's directory to damage: (mode, directory, pids)."""
    mode, directory, pids = family
    dest = tmp_path / "procs"
    shutil.copytree(directory, dest)
    return mode, dest, pids


def file_of(directory, pid):
    (path,) = [p for p in directory.iterdir() if p.name == f"prog.{pid}.ftrace"]
    return path


# ---- the loader ---------------------------------------------------------------------------

def test_processes_pids_labels_and_order(family):
    mode, directory, pids = family
    ps = fasttrace.load_processes(directory)
    assert isinstance(ps, fasttrace.ProcessSet) and ps.problems == []
    assert [p.pid for p in ps] == [pids["parent"], pids["forked"], pids["child"]]
    parent, forked, child = ps
    assert parent.label == forked.label == f"parent.py procs {mode}"  # a fork keeps argv
    assert child.label == f"child.py procs {mode}"
    assert child.name == f"child.py procs {mode} (pid {pids['child']})"
    assert parent.argv[1:] == ["parent.py", "procs", mode]
    assert ps.mode == mode and all(p.mode == mode for p in ps)
    assert parent.start_ns == 0 < forked.start_ns < child.start_ns
    # the subprocess rotated its file: its trace is the series, one process
    assert len(child.paths) >= 2 and all(os.path.basename(p).startswith(f"child.{child.pid}.")
                                         for p in child.paths)
    assert child.trace.header["series_index"] == 1
    assert {t.name for t in child.trace.threads} >= {"MainThread", "child-worker"}
    assert sorted(ps.paths) == sorted(str(p) for p in directory.iterdir())
    assert ps.by_pid(pids["forked"]) == [forked]
    assert ps.stats.events == sum(p.trace.stats.events for p in ps)
    assert ps.duration_ns == parent.end_ns  # the parent outlives its children
    assert ps.start_wall_ns == parent.trace.header["start_wall_ns"]
    ps.close()


def test_glob_and_list_load_the_same(family):
    _, directory, pids = family
    by_glob = fasttrace.load_processes(str(directory / "*.ftrace"))
    by_list = fasttrace.load_processes(sorted(directory.iterdir()))
    for ps in (by_glob, by_list):
        assert [p.pid for p in ps] == [pids["parent"], pids["forked"], pids["child"]]
        assert ps.problems == []
    # the commands: files of more than one process are a multi-process trace
    for args in ([str(directory / "*.ftrace")], sorted(directory.iterdir())):
        code, out, err = cli_in_process("report", "--json", *args)
        assert code == 0, err
        assert [p["pid"] for p in json.loads(out)["processes"]] == list(pids.values())
    # ... and one process's files (its series) a trace, as before
    child = sorted(p for p in directory.iterdir() if p.name.startswith("child."))
    code, out, err = cli_in_process("report", "--json", *child)
    assert code == 0 and "processes" not in json.loads(out)


def test_children_lie_inside_the_parents_span(family):
    """One clock: the files' CLOCK_MONOTONIC starts put every process on one time axis."""
    mode, directory, _ = family
    parent, forked, child = fasttrace.load_processes(directory)
    for p in (forked, child):
        assert parent.start_ns < p.start_ns and p.end_ns < parent.end_ns
        times = [p.start_ns + s.ts for s in p.trace.samples()] if mode == "sample" else \
            [p.start_ns + e.ts for e in p.trace.events()]
        assert times and parent.start_ns < min(times) and max(times) < parent.end_ns
    if mode == "trace":
        # tighter: between the parent's own marks around each child (its calls and returns)
        marks = {}
        for e in parent.trace.events():
            if e.function.qualname in ("before_fork", "after_wait"):
                marks.setdefault((e.function.qualname, e.kind), []).append(e.ts)
        fork_at = marks["before_fork", "return"][0]
        waited, child_done = marks["after_wait", "call"]
        forked_times = [forked.start_ns + e.ts for e in forked.trace.events()]
        assert fork_at < min(forked_times) and max(forked_times) < waited
        child_times = [child.start_ns + e.ts for e in child.trace.events()]
        assert waited < min(child_times) and max(child_times) < child_done
        # and the forked child worked for its 60 ms inside that window
        work = [e.ts for e in forked.trace.events() if e.function.qualname == "forked_work"]
        assert work[-1] - work[0] >= 55_000_000


def test_truncated_file_loads_with_the_rest_and_is_named(copy):
    mode, directory, pids = copy
    path = file_of(directory, pids["forked"])
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 2 // 3])
    ps = fasttrace.load_processes(directory)
    assert [p.pid for p in ps] == [pids["parent"], pids["forked"], pids["child"]]
    forked = ps.by_pid(pids["forked"])[0]
    assert forked.trace.stats.truncated and forked.trace.damage
    assert ps.stats.truncated and not ps[0].trace.stats.truncated
    code, out, err = cli_in_process("report", directory)
    assert code == 0, err
    assert f"note: process {pids['forked']} (parent.py procs {mode}): " in out
    assert f"{pids['forked']}" in out and "(truncated)" in out
    code, out, err = cli_in_process("info", directory)
    assert code == 0, err
    assert f"complete   no: 1 of 3 truncated (pid {pids['forked']})" in out
    code, out, err = cli_in_process("convert", directory, "-f", "chrome", "-o",
                                    directory.parent / "o.json")
    assert code == 0, err
    assert f"the trace of process {pids['forked']} is truncated" in err


def test_damaged_and_stray_files(copy):
    mode, directory, pids = copy
    (directory / "notes.txt").write_text("not a trace, and not named like one")
    (directory / "junk.ftrace").write_bytes(b"named like a trace, but it is not one")
    header_damaged = file_of(directory, pids["forked"])
    data = bytearray(header_damaged.read_bytes())
    data[40] ^= 0xFF  # in the header body: its checksum no longer matches
    header_damaged.write_bytes(bytes(data))
    ps = fasttrace.load_processes(directory)
    assert [p.pid for p in ps] == [pids["parent"], pids["child"]]
    assert len(ps.problems) == 2  # in name order
    assert ps.problems[0] == (f"{directory / 'junk.ftrace'}: skipped: byte 0: not a fasttrace "
                              "file (bad magic)")
    assert ps.problems[1].startswith(f"{header_damaged}: skipped: byte ")
    assert not any("notes.txt" in p for p in ps.problems)  # not a trace file: ignored
    code, out, err = cli_in_process("report", directory)
    assert code == 0
    assert err == "".join(f"fasttrace: note: {p}\n" for p in ps.problems)
    code, out, err = cli_in_process("info", directory)
    assert code == 0 and err == ""
    assert f"problem    {ps.problems[0]}\n" in out


def test_empty_directory_and_no_trace_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(fasttrace.FormatError) as e:
        fasttrace.load_processes(empty)
    assert str(e.value) == f"{empty}: no trace files (*.ftrace) in this directory"
    (empty / "README.txt").write_text("hello")
    (empty / ".hidden.ftrace").write_text("hello")
    with pytest.raises(fasttrace.FormatError) as e:
        fasttrace.load_processes(empty)
    assert str(e.value) == (f"{empty}: no trace files (*.ftrace) in this directory "
                            "(2 other entries)")
    for command in (["report"], ["info"], ["convert", "-f", "perfetto"]):
        code, out, err = cli_in_process(*command, empty)
        assert (code, out) == (1, "")
        assert err == (f"fasttrace: error: {empty}: no trace files (*.ftrace) in this "
                       "directory (2 other entries)\n")
    assert not (tmp_path / "empty.pftrace").exists()
    # trace files, none of which loads
    (empty / "a.ftrace").write_bytes(b"nonsense")
    (empty / "b.ftrace").write_bytes(b"")
    with pytest.raises(fasttrace.FormatError) as e:
        fasttrace.load_processes(empty)
    assert str(e.value).startswith(f"{empty}: none of its 2 trace files loads (the first: "
                                   f"{empty / 'a.ftrace'}: byte ")
    # a plain fasttrace.load() of a directory is unchanged
    with pytest.raises(fasttrace.FormatError, match="not a regular file"):
        fasttrace.load(empty)


def _set_start_wall(path, delta_ns):
    """Moves the wall-clock start in the header of `path` by delta_ns (checksum fixed)."""
    data = bytearray(path.read_bytes())
    (wall,) = struct.unpack_from("<Q", data, 68)
    struct.pack_into("<Q", data, 68, wall + delta_ns)
    path.write_bytes(fix_header_crc(bytes(data)))


def test_clocks_that_disagree_fall_back_to_the_wall_clock(copy):
    _, directory, pids = copy
    ps = fasttrace.load_processes(directory)
    assert ps.aligned_by == "monotonic"
    before = {p.pid: p.start_ns for p in ps}
    _set_start_wall(file_of(directory, pids["forked"]), 3600 * 10**9)  # another machine
    ps = fasttrace.load_processes(directory)
    assert ps.aligned_by == "wall"
    assert "monotonic clocks disagree by 3600.0 s" in ps.problems[-1]
    forked = ps.by_pid(pids["forked"])[0]
    assert ps[-1] is forked  # an hour later, by its wall clock
    assert abs(forked.start_ns - before[pids["forked"]] - 3600 * 10**9) < 5_000_000
    code, out, err = cli_in_process("info", directory)
    assert code == 0 and "time axis  wall clock (the monotonic clocks disagree)" in out


# ---- the commands -------------------------------------------------------------------------

def test_report(family):
    mode, directory, pids = family
    code, out, err = cli_in_process("report", directory, "--limit", "0")
    assert code == 0 and err == "", err
    lines = out.splitlines()
    head = next(i for i, x in enumerate(lines) if x.startswith(f"3 processes ({mode} mode), "))
    rows = lines[head + 2:head + 5]
    assert [int(r.split()[0]) for r in rows] == [pids["parent"], pids["forked"], pids["child"]]
    assert rows[2].endswith(f"child.py procs {mode}")
    assert any(x.startswith("all processes: ") for x in lines)
    for pid, label in ((pids["parent"], "parent.py"), (pids["child"], "child.py")):
        assert any(x.startswith(f"process {pid} {label} procs {mode}: ") for x in lines)
    all_table = lines[next(i for i, x in enumerate(lines) if x.startswith("all processes")):]
    assert "procs" in all_table[1]
    # spin runs in the parent and in its forked child: the same function, in 2 processes
    spin = next(x for x in all_table if " spin parent.py:" in x)
    assert spin.split()[5] == "2"

    code, out, err = cli_in_process("report", directory, "--json", "--limit", "0")
    assert code == 0, err
    data = json.loads(out)
    assert [p["pid"] for p in data["processes"]] == [pids["parent"], pids["forked"],
                                                     pids["child"]]
    assert data["processes"][2]["label"] == f"child.py procs {mode}"
    assert data["processes"][1]["start_ns"] > 0 and data["mode"] == mode
    tables = data["tables"]
    assert tables[0]["title"] == "all processes" and tables[0]["process"] is None
    assert [t["process"] for t in tables[1:]] == [pids["parent"], pids["forked"], pids["child"]]
    rows = {f["qualname"]: f for f in tables[0]["functions"]}
    by_pid = {b["pid"]: b for b in rows["spin"]["processes"]}
    assert set(by_pid) == {pids["parent"], pids["forked"]}
    assert sum(b["self_ns"] for b in by_pid.values()) == rows["spin"]["self_ns"]
    assert {b["pid"] for b in rows["child_work"]["processes"]} == {pids["child"]}
    assert rows["child_work"]["total_ns"] >= 120_000_000  # 2 x 80 ms, sampled or traced

    # --thread: a name (in every process that has it), or PID:ID
    code, out, err = cli_in_process("report", directory, "--json", "--thread", "child-worker")
    assert code == 0, err
    (table,) = json.loads(out)["tables"]
    assert table["process"] == pids["child"] and "child-worker" in table["title"]
    code, out, err = cli_in_process("report", directory, "--json", "--thread",
                                    f"{pids['forked']}:1")
    assert code == 0, err
    (table,) = json.loads(out)["tables"]
    assert (table["process"], table["thread"]) == (pids["forked"], 1)
    code, out, err = cli_in_process("report", directory, "--thread", "nope")
    ps = fasttrace.load_processes(directory)
    main = next(t.id for t in ps[2].trace.threads if t.name == "MainThread")
    assert code == 1 and out == ""
    assert f"; threads (PID:ID): {pids['parent']}:1 (MainThread), " in err
    assert f"{pids['child']}:{main} (MainThread)" in err


def test_info(family):
    mode, directory, pids = family
    code, out, err = cli_in_process("info", directory)
    assert code == 0 and err == "", err
    assert f"processes  3, {mode} mode\n" in out
    assert "complete   yes\n" in out
    for pid in pids.values():
        assert f"\nprocess {pid} (" in out
        assert f"  pid        {pid}\n" in out
    assert out.count("  threads (") == 3
    assert "  child-worker " in out
    if mode == "trace":
        total = fasttrace.load_processes(directory).stats.events
        assert f"events     {total:,}\n" in out


def _replay(data):
    """Perfetto packets as a consumer sees them: tracks, and per track its events (type, ts,
    name), with names resolved on their sequence (interning is per sequence)."""
    trace = pb2.Trace()
    trace.ParseFromString(data)
    names = {}  # sequence -> iid -> name
    default = {}  # sequence -> its track
    tracks = {}
    events = defaultdict(list)
    on = defaultdict(set)  # sequence -> the tracks of its events
    for p in trace.packet:
        seq = p.trusted_packet_sequence_id
        if p.sequence_flags & 1:
            names[seq] = {}
        if p.HasField("trace_packet_defaults"):
            default[seq] = p.trace_packet_defaults.track_event_defaults.track_uuid
        for item in p.interned_data.event_names:
            names[seq][item.iid] = item.name
        if p.HasField("track_descriptor"):
            assert p.track_descriptor.uuid not in tracks
            tracks[p.track_descriptor.uuid] = p.track_descriptor
        if p.HasField("track_event"):
            te = p.track_event
            track = te.track_uuid if te.HasField("track_uuid") else default[seq]
            name = names[seq][te.name_iid] if te.type == 1 else te.name
            events[track].append((te.type, p.timestamp, name))
            on[seq].add(track)
    return tracks, events, on


def test_perfetto_has_a_process_track_per_process(family, tmp_path):
    mode, directory, pids = family
    ps = fasttrace.load_processes(directory)
    out = tmp_path / "procs.pftrace"
    result = write(ps, out, "perfetto")
    assert result["processes"] == 3
    tracks, events, on = _replay(out.read_bytes())
    procs = {d.process.pid: (uuid, d) for uuid, d in tracks.items() if d.HasField("process")}
    assert set(procs) == set(pids.values())
    for p in ps:
        uuid, d = procs[p.pid]
        assert d.process.process_name == p.label and list(d.process.cmdline) == p.argv
        threads = {t.thread.thread_name: t for t in tracks.values()
                   if t.HasField("thread") and t.parent_uuid == uuid}
        assert set(threads) == {t.name for t in p.trace.threads}
        for t in p.trace.threads:
            assert threads[t.name].thread.pid == p.pid
            assert threads[t.name].thread.tid == (t.native_id or t.id)  # unknown: its id
    # one time axis: the children's slices lie inside the parent's
    span = {}
    for p in ps:
        uuid = procs[p.pid][0]
        ts = [ts for track, evs in events.items() if tracks[track].parent_uuid == uuid
              for _, ts, _ in evs]
        span[p.pid] = (min(ts), max(ts))
        for track, evs in events.items():  # nesting holds on every track
            depth = 0
            for kind, _, _ in evs:
                depth += {1: 1, 2: -1}.get(kind, 0)
                assert depth >= 0
            assert depth == 0
    parent = span[pids["parent"]]
    for child in ("forked", "child"):
        assert parent[0] < span[pids[child]][0] and span[pids[child]][1] < parent[1]
    assert span[pids["forked"]][1] < span[pids["child"]][0]
    assert span[pids["forked"]][0] - parent[0] >= 50_000_000  # after the parent's 60 ms spin
    # every sequence is one thread's of one process: interning never crosses processes
    for seq, used in on.items():
        assert len(used) == 1 or {tracks[t].parent_uuid for t in used} <= {0}, seq
    names = {name for track, evs in events.items()
             if tracks[track].parent_uuid == procs[pids["child"]][0] for _, _, name in evs}
    assert "child_work" in names and "spin" not in names


def test_chrome_has_a_pid_per_process(family, tmp_path):
    mode, directory, pids = family
    ps = fasttrace.load_processes(directory)
    out = tmp_path / "procs.json"
    code, _, err = cli_in_process("convert", directory, "-f", "chrome", "-o", out)
    assert code == 0, err
    data = json.loads(out.read_text())
    events = data["traceEvents"]
    meta = {e["pid"]: e["args"]["name"] for e in events
            if e["ph"] == "M" and e["name"] == "process_name"}
    assert meta == {p.pid: p.label for p in ps}
    thread_names = {(e["pid"], e["args"]["name"]) for e in events
                    if e["ph"] == "M" and e["name"] == "thread_name"}
    assert (pids["child"], "child-worker") in thread_names
    assert (pids["forked"], "MainThread") in thread_names
    spans = {}
    for e in events:
        if e["ph"] in "BE":
            lo, hi = spans.get(e["pid"], (e["ts"], e["ts"]))
            spans[e["pid"]] = (min(lo, e["ts"]), max(hi, e["ts"]))
    assert set(spans) == set(pids.values())
    parent = spans[pids["parent"]]
    for child in ("forked", "child"):
        assert parent[0] < spans[pids[child]][0] and spans[pids[child]][1] < parent[1]
    assert spans[pids["forked"]][0] - parent[0] >= 50_000  # us: after the parent's 60 ms spin
    # each (pid, tid) nests
    depth = defaultdict(int)
    for e in events:
        if e["ph"] in "BE":
            depth[e["pid"], e["tid"]] += 1 if e["ph"] == "B" else -1
            assert depth[e["pid"], e["tid"]] >= 0
    assert set(depth.values()) == {0}
    other = data["otherData"]
    assert [p["pid"] for p in other["processes"]] == [p.pid for p in ps]
    assert other["processes"][2]["start_ns"] == ps[2].start_ns


def _go_pprof(*args):
    if shutil.which("go") is None:
        pytest.skip("`go` is not installed: go tool pprof is the reader of the profile")
    env = dict(os.environ, PPROF_TMPDIR=os.environ.get("TMPDIR", "/tmp"))
    r = subprocess.run(["go", "tool", "pprof", *args], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_pprof_labels_every_sample_with_its_process(family, tmp_path):
    mode, directory, pids = family
    ps = fasttrace.load_processes(directory)
    out = tmp_path / "procs.pb.gz"
    code, _, err = cli_in_process("convert", directory, "-f", "pprof", "-o", out)
    assert code == 0, err
    traces = _go_pprof("-traces", str(out))
    blocks = [b for b in traces.split("-----------+") if "thread:" in b]
    assert blocks
    seen = set()
    for block in blocks:
        labels = dict(line.strip().split(":  ", 1) for line in block.splitlines()
                      if ":  " in line and line.strip().split(":", 1)[0] in
                      ("thread", "process", "pid", "state"))
        assert "process" in labels and "pid" in labels, block
        seen.add((int(labels["pid"]), labels["process"]))
    assert seen == {(p.pid, p.name) for p in ps}
    # picking a process by its label
    focus = _go_pprof("-top", "-nodefraction=0", "-tagfocus=process=child\\.py", str(out))
    assert "child_work" in focus and "forked_work" not in focus and "parent_work" not in focus
    with gzip.open(out) as f:
        raw = f.read()
    for p in ps:
        assert f"fasttrace: pid {p.pid}: ".encode() in raw  # a comment per process


def test_collapsed_has_a_root_frame_per_process(family, tmp_path):
    mode, directory, pids = family
    ps = fasttrace.load_processes(directory)
    code, out, err = cli_in_process("convert", directory, "-f", "collapsed", "-o", "-")
    assert code == 0, err
    roots = defaultdict(int)
    threads = set()
    for line in out.splitlines():
        stack, weight = line.rsplit(" ", 1)
        frames = stack.split(";")
        roots[frames[0]] += int(weight)
        threads.add((frames[0], frames[1]))
    assert set(roots) == {p.name for p in ps}
    child = ps.by_pid(pids["child"])[0]
    assert (child.name, "child-worker") in threads and (child.name, "MainThread") in threads
    # the forked child spun for 60 ms; its lines hold that time
    assert roots[ps.by_pid(pids["forked"])[0].name] >= 50_000_000


def test_speedscope_names_profiles_with_their_process(family, tmp_path):
    mode, directory, pids = family
    ps = fasttrace.load_processes(directory)
    out = tmp_path / "procs.speedscope.json"
    result = write(ps, out, "speedscope")
    data = json.loads(out.read_text())
    names = [p["name"] for p in data["profiles"]]
    assert result["profiles"] == len(names) == sum(len(p.trace.threads) for p in ps)
    child = ps.by_pid(pids["child"])[0]
    assert f"{child.name}: child-worker" in names
    assert names[0] == f"{ps[0].name}: MainThread"
    frames = data["shared"]["frames"]
    for profile in data["profiles"]:
        if profile["type"] == "evented":
            used = {e["frame"] for e in profile["events"]}
        else:
            used = {i for stack in profile["samples"] for i in stack}
        assert used and max(used) < len(frames)
        if profile["name"].startswith(child.name):
            assert "child_work" in {frames[i]["name"] for i in used}
            assert not {"spin", "forked_work"} & {frames[i]["name"] for i in used}
        if mode == "trace":  # evented: on the first process's time axis
            proc = next(p for p in ps if profile["name"].startswith(p.name + ": "))
            assert profile["startValue"] >= proc.start_ns
            assert profile["endValue"] <= proc.end_ns
            if proc.pid == pids["forked"]:  # after the parent's 60 ms spin
                assert profile["startValue"] >= 50_000_000


def test_mixed_modes(tmp_path):
    """A trace-mode parent with a sampled child: the timelines take both; one table or one
    pprof profile cannot, and say so."""
    (tmp_path / "procs").mkdir()
    program = textwrap.dedent("""
        import os, subprocess, sys, time, fasttrace
        def spin():
            end = time.perf_counter() + 0.05
            while time.perf_counter() < end:
                pass
        fasttrace.start(f"procs/a.{os.getpid()}.ftrace")
        spin()
        subprocess.run([sys.executable, "-c", "import os, time, fasttrace\\n"
                        "fasttrace.start(f'procs/b.{os.getpid()}.ftrace', rate=500)\\n"
                        "time.sleep(0.05)\\nfasttrace.stop()"], check=True)
        fasttrace.stop()
    """)
    (tmp_path / "mixed.py").write_text(program)
    r = subprocess.run([sys.executable, "mixed.py"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    directory = tmp_path / "procs"
    ps = fasttrace.load_processes(directory)
    assert ps.mode == "mixed" and [p.mode for p in ps] == ["trace", "sample"]
    code, out, err = cli_in_process("report", directory)
    assert code == 1 and out == ""
    assert err.startswith(f"fasttrace: error: {directory}: the processes were recorded in "
                          f"different modes (pid {ps[0].pid}: trace, pid {ps[1].pid}: sample "
                          "(wall clock))")
    code, out, err = cli_in_process("convert", directory, "-f", "pprof", "-o", tmp_path / "p")
    assert code == 1 and "different modes" in err and not (tmp_path / "p").exists()
    with pytest.raises(ValueError, match="different modes"):
        write(ps, tmp_path / "p", "pprof")
    for fmt in ("perfetto", "chrome", "speedscope", "collapsed"):
        code, out, err = cli_in_process("convert", directory, "-f", fmt, "-o", tmp_path / fmt)
        assert code == 0, err
    code, out, err = cli_in_process("info", directory)
    assert code == 0 and "processes  2, mixed mode" in out


def test_convert_default_output_is_named_after_the_directory(family, tmp_path):
    _, directory, _ = family
    local = tmp_path / "procs"
    shutil.copytree(directory, local)
    code, _, err = cli_in_process("convert", f"{local}/", "-f", "collapsed")
    assert code == 0, err
    assert (tmp_path / "procs.folded").exists()

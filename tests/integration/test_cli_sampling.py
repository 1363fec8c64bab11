"""The command line on sampled traces: run --rate, report, info, dump, convert."""

from __future__ import annotations

import json

import pytest
from helpers import fasttrace_cli

import fasttrace

PROGRAM = """
import threading, time

def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass

def busy():
    spin(0.3)

def lazy():
    time.sleep(0.3)

t = threading.Thread(target=lazy, name="lazy")
t.start()
busy()
t.join()
"""


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-sampling")
    (d / "prog.py").write_text(PROGRAM)
    r = fasttrace_cli(d, "run", "--rate", "1000", "-o", "prog.ftrace", "prog.py")
    assert r.returncode == 0, r.stderr
    assert " samples from " in r.stderr and "prog.ftrace" in r.stderr
    return d, d / "prog.ftrace"


def test_run_rate_cuts_the_runner_frames(sampled):
    _, path = sampled
    trace = fasttrace.load(path)
    assert trace.mode == "sample" and trace.sampling.rate == 1000
    main = next(t.id for t in trace.threads if t.name == "MainThread")
    roots = {s.stack[0].qualname for s in trace.samples(main)}
    # the program's module is the root, as under plain python: no runpy, no fasttrace frames
    assert roots == {"<module>"}
    names = {f.name for s in trace.samples(main) for f in s.stack}
    assert {"busy", "spin"} <= names
    assert not any("fasttrace" in f.filename or "runpy" in f.filename
                   for s in trace.samples() for f in s.stack)


def test_run_module_with_rate(tmp_path):
    (tmp_path / "mod.py").write_text(PROGRAM)
    r = fasttrace_cli(tmp_path, "run", "--rate", "500", "--clock", "cpu", "-o", "m.ftrace",
                      "-m", "mod")
    assert r.returncode == 0, r.stderr
    trace = fasttrace.load(tmp_path / "m.ftrace")
    assert trace.sampling.clock == "cpu"
    main = next(t.id for t in trace.threads if t.name == "MainThread")
    assert {s.stack[0].qualname for s in trace.samples(main)} == {"<module>"}
    assert not any("runpy" in f.filename for s in trace.samples() for f in s.stack)


@pytest.mark.parametrize("args, message", [
    (["--rate", "0"], "rate must be between 1 and 10000"),
    (["--rate", "20000"], "rate must be between 1 and 10000"),
    (["--rate", "fast"], "invalid float value"),
    (["--clock", "cpu"], "--clock needs --rate"),
    (["--rate", "10", "--clock", "gpu"], "invalid choice"),
])
def test_run_rejects_bad_sampling_options(tmp_path, args, message):
    (tmp_path / "p.py").write_text("print('ran')\n")
    r = fasttrace_cli(tmp_path, "run", *args, "p.py")
    assert r.returncode == 2
    assert message in r.stderr
    assert "ran" not in r.stdout


def test_report(sampled):
    d, path = sampled
    r = fasttrace_cli(d, "report", str(path))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "sampled wall clock at 1000 Hz" in out
    lines = out.splitlines()
    lazy = next(line for line in lines if line.endswith(" lazy"))
    main = next(line for line in lines if line.endswith(" MainThread"))
    # samples running% waiting% in-call% thread
    assert float(lazy.split()[2].rstrip("%")) > 90  # waiting in time.sleep
    assert float(main.split()[1].rstrip("%")) > 50  # running busy()
    assert "samples  function" in out
    r = fasttrace_cli(d, "report", str(path), "--json")
    data = json.loads(r.stdout)
    assert data["mode"] == "sample" and data["sampling"]["rate"] == 1000
    funcs = {f["qualname"]: f for f in data["tables"][0]["functions"]}
    assert funcs["spin"]["self_ns"] > 0.5 * funcs["busy"]["total_ns"]
    assert funcs["lazy"]["self_ns"] > 0.1e9


def test_info_and_dump(sampled):
    d, path = sampled
    r = fasttrace_cli(d, "info", str(path))
    assert r.returncode == 0, r.stderr
    assert "sample mode" in r.stdout and "sampling   wall clock, 1000 Hz requested" in r.stdout
    assert "samples" in r.stdout and "lazy" in r.stdout
    r = fasttrace_cli(d, "dump", str(path))
    assert r.returncode == 0, r.stderr
    for word in ("SAMPLING rate_hz=1000", "CHUNK SAMPLES", "SAMPLE dt=", "STACK id=1",
                 "SAMPLER_STATS ticks="):
        assert word in r.stdout
    assert "DAMAGE" not in r.stdout


@pytest.mark.parametrize("fmt", ["pprof", "speedscope", "collapsed", "perfetto", "chrome"])
def test_convert(sampled, fmt):
    d, path = sampled
    r = fasttrace_cli(d, "convert", str(path), "-f", fmt, "-o", f"out.{fmt}")
    assert r.returncode == 0, r.stderr
    assert "samples)" in r.stderr
    assert (d / f"out.{fmt}").stat().st_size > 100

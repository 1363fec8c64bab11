"""What fasttrace costs a real service (issue 11).

    python bench/http_service.py throughput [--python 3.12] [--service starlette|flask]
                                            [--rounds 6] [--seconds 5]
    python bench/http_service.py latency [--python 3.12] [--service starlette|flask]
                                         [--rounds 3]

throughput: the service (tests/services: Starlette under uvicorn, or Flask under gunicorn with
  one worker of 4 threads) under wrk's load (1 thread, 8 connections, each one request at a
  time: a bounded load), run plain and under `fasttrace run --rate 100` (gunicorn: with
  --follow-children, so the worker samples too), alternating (off, on, on, off, ...).  The
  ratio is the median of the pairwise on/off requests per second.
latency: the service runs plain with the endpoints mounted; 4 client threads send requests
  back to back and note when each started and how long it took.  Each round has 2 s
  without a capture, then GET /debug/fasttrace/trace?seconds=2 (trace mode, every call), then
  2 s more.  Requests that started inside the capture are compared with the rest: p50, p99.
Needs wrk (Debian) and the services' packages in the bench venv (bench/setup.sh installs them).
Results: bench/out/http-*.json and .md.
"""

import argparse
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from run import BENCH, PythonEnv, save_report

SERVICES = BENCH.parent / "tests" / "services"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_argv(env, service, port, sampling, outdir):
    if service == "starlette":
        app = ["-m", "uvicorn", "--app-dir", str(SERVICES), "--port", str(port),
               "--log-level", "warning", "starlette_app:app"]
    else:
        app = ["-m", "gunicorn", "-w", "1", "-k", "gthread", "--threads", "4",
               "--pythonpath", str(SERVICES), "-b", f"127.0.0.1:{port}", "flask_app:app"]
    if not sampling:
        return [env.python, *app]
    extra = ["--follow-children"] if service == "flask" else []
    return [env.python, "-m", "fasttrace", "run", "--rate", "100", *extra,
            "-o", str(outdir if extra else Path(outdir) / "service.ftrace"), *app]


def wait_up(url, proc, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited: {proc.communicate()[1][-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


class Running:
    def __init__(self, env, service, sampling):
        self.port = free_port()
        self.outdir = tempfile.mkdtemp(prefix="ft-http-bench-")
        argv = service_argv(env, service, self.port, sampling, self.outdir)
        self.proc = subprocess.Popen(argv, cwd=self.outdir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_up(self.url + "/", self.proc)

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        files = sorted(p.name for p in Path(self.outdir).iterdir())
        shutil.rmtree(self.outdir, ignore_errors=True)
        return err, files


def wrk(url, seconds):
    out = subprocess.run(["wrk", "-t1", "-c8", f"-d{seconds}s", url], capture_output=True,
                         text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return rps, int(bad.group(1)) if bad else 0, errors.group(1) if errors else ""


def throughput(args, env):
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    runs = {"off": [], "on": []}
    problems = []
    order = ["off", "on", "on", "off"]
    # A first run, not counted: it writes the .pyc files and fills the page cache, which made
    # the first counted run ~30 % slower than the rest.
    svc = Running(env, args.service, True)
    wrk(svc.url + "/", 2)
    svc.close()
    for i in range(args.rounds * 2):
        which = order[i % 4]
        svc = Running(env, args.service, which == "on")
        wrk(svc.url + "/", 1)  # warm up: imports, first requests
        rps, bad, errors = wrk(svc.url + "/", args.seconds)
        err, files = svc.close()
        runs[which].append(rps)
        if bad or errors:
            problems.append(f"{which}: {bad} non-2xx, socket errors {errors}")
        if which == "on" and not any(f.endswith(".ftrace") for f in files):
            problems.append(f"on: no trace was written ({files}): {err[-500:]}")
        print(f"  {which}: {rps:.0f} requests/s", flush=True)
    pairs = [on / off for on, off in zip(runs["on"], runs["off"])]
    ratio = statistics.median(pairs)
    return {"service": args.service, "python": env.full_version, "runs": runs,
            "pair_ratios": pairs, "ratio": ratio, "problems": problems}


def latency(args, env):
    rows = []
    for r in range(args.rounds):
        svc = Running(env, args.service, False)
        samples = []  # (start, seconds)
        stop = threading.Event()

        def client():
            while not stop.is_set():
                t0 = time.monotonic()
                with urllib.request.urlopen(svc.url + "/", timeout=30) as resp:
                    resp.read()
                samples.append((t0, time.monotonic() - t0))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(2)
        c0 = time.monotonic()
        with urllib.request.urlopen(svc.url + "/debug/fasttrace/trace?seconds=2",
                                    timeout=60) as resp:
            size = len(resp.read())
        c1 = c0 + 2.0
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join()
        svc.close()
        inside = sorted(d for t, d in samples if c0 <= t < c1)
        outside = sorted(d for t, d in samples if t < c0 - 0.1 or t >= c1 + 0.5)
        row = {"round": r, "trace_bytes": size, "requests_inside": len(inside),
               "requests_outside": len(outside)}
        for name, xs in (("inside", inside), ("outside", outside)):
            row[f"{name}_p50_ms"] = 1000 * xs[len(xs) // 2]
            row[f"{name}_p99_ms"] = 1000 * xs[min(len(xs) - 1, int(len(xs) * 0.99))]
        rows.append(row)
        print(f"  round {r}: p50 {row['outside_p50_ms']:.2f} -> {row['inside_p50_ms']:.2f} ms, "
              f"p99 {row['outside_p99_ms']:.2f} -> {row['inside_p99_ms']:.2f} ms "
              f"({len(inside)} requests in the capture, trace {size / 1e6:.1f} MB)", flush=True)
    return {"service": args.service, "python": env.full_version, "rounds": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["throughput", "latency"])
    ap.add_argument("--python", default="3.12")
    ap.add_argument("--service", choices=["starlette", "flask"], default="starlette")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    env = PythonEnv(args.python)
    if env.problem:
        raise SystemExit(env.problem)
    print(f"{args.what}: {args.service} on CPython {env.full_version} ({env.label})")
    if args.what == "throughput":
        args.rounds = args.rounds or 6
        res = throughput(args, env)
        lines = [f"# Service throughput, 100 Hz sampling on/off ({args.service}, CPython "
                 f"{env.full_version})", "",
                 f"wrk -t1 -c8 -d{args.seconds}s, {args.rounds} pairs alternating",
                 "", f"- off: {', '.join(f'{x:.0f}' for x in res['runs']['off'])} requests/s",
                 f"- on: {', '.join(f'{x:.0f}' for x in res['runs']['on'])} requests/s",
                 f"- on/off, median of pairs: **{res['ratio']:.3f}** "
                 f"({100 * (1 - res['ratio']):.1f} % lost)"]
        lines += [f"- problem: {p}" for p in res["problems"]]
    else:
        args.rounds = args.rounds or 3
        res = latency(args, env)
        lines = [f"# Request latency while a 2 s trace-mode capture runs ({args.service}, "
                 f"CPython {env.full_version})", "",
                 "| round | p50 outside | p50 inside | p99 outside | p99 inside | requests inside "
                 "| trace |", "|---|---|---|---|---|---|---|"]
        for r in res["rounds"]:
            lines.append(f"| {r['round']} | {r['outside_p50_ms']:.2f} ms | "
                         f"{r['inside_p50_ms']:.2f} ms | {r['outside_p99_ms']:.2f} ms | "
                         f"{r['inside_p99_ms']:.2f} ms | {r['requests_inside']} | "
                         f"{r['trace_bytes'] / 1e6:.1f} MB |")
    save_report(res, args.json, f"http-{args.what}-{args.service}", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

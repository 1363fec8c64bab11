"""The flight recorder's costs (issue 10, section 6).

    python bench/flight.py overhead [--python 3.12 ...] [--workloads fib,go] [--pairs 5]
    python bench/flight.py rss [--python 3.12] [--minutes 10]
    python bench/flight.py dump [--python 3.12] [--mib 64]

overhead: trace mode into a FlightRecorder (64 MiB, 10 s, no dump) against plain start() into a
  file, on the same workloads, in alternating pairs (flight, plain, ...) timed from outside
  the process; ratio = median of the pairwise flight/plain ratios.  Sampling mode: a
  FlightRecorder at 100 Hz against no tracing at all, the same way.
rss: one process records into a FlightRecorder (10 s, 64 MiB) for --minutes while a thread
  runs call-dense bursts (about a third of the time); its RSS is read every second.
dump: fills a window of --mib MiB, then dumps it while a traced thread runs a loop of small
  calls: the dump's wall time, and the longest gap between two iterations of that loop
  during the dump against the longest one in as long a stretch without a dump.
Stdlib only; the results go to bench/out/flight-*.json and .md (bench/run.py's save_report).
"""

import argparse
import subprocess
import textwrap

from run import BENCH, CALL_DENSE, PythonEnv, measure, save_report

RUNNER = str(BENCH / "runners" / "fasttrace_run.py")


def overhead_command(sampling):
    def command(tool, env, workload, out_base, args):
        wl = str(BENCH / "workloads" / f"{workload}.py")
        out = out_base + ".ftrace"
        if tool == "bare":  # the baseline of the pair
            if sampling:
                return [env.python, wl], None
            return [env.python, RUNNER, wl, out], out
        argv = [env.python, RUNNER, wl, out, "--flight", "10"]
        return argv + (["--rate", "100"] if sampling else []), None
    return command


def no_notes(tool, log_path, out):
    return {}


def overhead(args, env):
    rows = []
    for sampling in (False, True):
        for wl in args.workloads:
            res = measure("flight-sample" if sampling else "flight", env, wl, args,
                          command=overhead_command(sampling), notes_of=no_notes)
            rows.append({"workload": wl, "mode": "sample 100 Hz" if sampling else "trace",
                         "baseline": "no tracing" if sampling else "plain start()", **res})
    return rows


RSS_PROGRAM = textwrap.dedent("""
    import sys, threading, time, fasttrace
    minutes = float(sys.argv[1])

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / (1 << 20)

    stop = False
    def worker():
        while not stop:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.1:
                fib(15)
            time.sleep(0.2)

    base = rss_mib()
    rec = fasttrace.FlightRecorder(seconds=10, max_bytes=64 << 20).start()
    t = threading.Thread(target=worker)
    t.start()
    end = time.time() + minutes * 60
    while time.time() < end:
        time.sleep(1)
        print(f"{time.time():.0f} {rss_mib():.1f}", flush=True)
    stop = True
    t.join()
    s = rec.stop()
    print(f"BASE {base:.1f} EVENTS {s.events} HELD {s.bytes}")
""")


def rss(args, env):
    r = subprocess.run([env.python, "-c", RSS_PROGRAM, str(args.minutes)], capture_output=True,
                       text=True, cwd=env.out, timeout=args.minutes * 60 + 300)
    if r.returncode != 0:
        return {"status": "failed", "reason": r.stderr[-2000:]}
    lines = r.stdout.split("\n")
    samples = [float(x.split()[1]) for x in lines if x and x[0].isdigit()]
    last = next(x for x in lines if x.startswith("BASE")).split()
    after_fill = samples[60:] if len(samples) > 120 else samples[len(samples) // 2:]
    return {"status": "ok", "minutes": args.minutes, "rss_mib": samples,
            "base_mib": float(last[1]), "events": int(last[3]), "held_bytes": int(last[5]),
            "after_first_minute": {"min": min(after_fill), "max": max(after_fill),
                                   "first": after_fill[0], "last": after_fill[-1]}}


DUMP_PROGRAM = textwrap.dedent("""
    import os, sys, threading, time, fasttrace
    mib = int(sys.argv[1])
    out = sys.argv[2]

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def tiny():
        return 1

    rec = fasttrace.FlightRecorder(seconds=3600, max_bytes=mib << 20).start()
    while True:  # fill the window: the ring holds mib MiB (less one chunk)
        fib(20)
        probe = rec.dump(out)
        if probe.bytes >= (mib << 20) * 0.97:
            break
    gaps = {"during": 0, "without": 0}
    phase = ["without"]
    stop = [False]

    def loop():
        prev = time.perf_counter_ns()
        while not stop[0]:
            tiny()
            now = time.perf_counter_ns()
            key = phase[0]
            if key and now - prev > gaps[key]:
                gaps[key] = now - prev
            prev = now

    t = threading.Thread(target=loop)
    t.start()
    time.sleep(0.2)
    times = []
    for _ in range(3):
        phase[0] = "during"
        t0 = time.perf_counter()
        s = rec.dump(out)
        took = time.perf_counter() - t0
        times.append(took)
        phase[0] = None
        time.sleep(0.05)
        phase[0] = "without"
        time.sleep(took)
        phase[0] = None
    stop[0] = True
    t.join()
    rec.stop()
    print(s.bytes, s.events, *times, gaps["during"], gaps["without"])
""")


def dump(args, env):
    out = env.out / "flight-dump.ftrace"
    r = subprocess.run([env.python, "-c", DUMP_PROGRAM, str(args.mib), str(out)],
                       capture_output=True, text=True, cwd=env.out, timeout=600)
    if r.returncode != 0:
        return {"status": "failed", "reason": r.stderr[-2000:]}
    v = r.stdout.split()
    return {"status": "ok", "mib": args.mib, "bytes": int(v[0]), "events": int(v[1]),
            "dump_s": [float(x) for x in v[2:5]], "max_gap_during_us": int(v[5]) / 1e3,
            "max_gap_without_us": int(v[6]) / 1e3}


def report(kind, results):
    lines = [f"# bench/flight.py {kind}", ""]
    for ver, res in results.items():
        lines.append(f"## Python {ver}")
        if kind == "overhead":
            lines += ["", "| workload | mode | baseline | ratio (median) | min-max |",
                      "|---|---|---|---:|---|"]
            for row in res:
                if row["status"] != "ok":
                    lines.append(f"| {row['workload']} | {row['mode']} | | {row['status']}: "
                                 f"{row.get('reason', '')} | |")
                    continue
                lines.append(f"| {row['workload']} | {row['mode']} | {row['baseline']} | "
                             f"{row['ratio']:.3f} | {row['ratio_min']:.3f}-"
                             f"{row['ratio_max']:.3f} |")
        elif res.get("status") != "ok":
            lines.append(f"{res.get('status')}: {res.get('reason')}")
        elif kind == "rss":
            a = res["after_first_minute"]
            lines.append(f"RSS over {res['minutes']:g} min, 64 MiB window: before start "
                         f"{res['base_mib']:.1f} MiB; after the first minute min "
                         f"{a['min']:.1f}, max {a['max']:.1f}, first {a['first']:.1f}, last "
                         f"{a['last']:.1f} MiB ({res['events']:,} events recorded)")
        else:
            lines.append(f"dump of a {res['bytes'] / (1 << 20):.1f} MiB window "
                         f"({res['events']:,} events): "
                         + ", ".join(f"{x * 1e3:.0f} ms" for x in res["dump_s"])
                         + f"; longest gap of a traced thread's loop during the dump "
                           f"{res['max_gap_during_us']:.0f} us, without one "
                           f"{res['max_gap_without_us']:.0f} us")
        lines.append("")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["overhead", "rss", "dump"])
    ap.add_argument("--python", action="append", default=None)
    ap.add_argument("--workloads", default=",".join(CALL_DENSE))
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    args.workloads = args.workloads.split(",")
    results = {}
    for ver in args.python or ["3.12"]:
        env = PythonEnv(ver)
        if env.problem:
            results[ver] = {"status": "skipped", "reason": env.problem}
            continue
        results[ver] = {"overhead": overhead, "rss": rss, "dump": dump}[args.what](args, env)
    save_report(results, args.json, f"flight-{args.what}", report(args.what, results))


if __name__ == "__main__":
    main()

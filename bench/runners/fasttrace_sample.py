"""Run a workload under fasttrace's sampling mode (used by bench/sampling_overhead.py).

    python bench/runners/fasttrace_sample.py WORKLOAD OUT STATS --rate R [--clock wall|cpu]
    python bench/runners/fasttrace_sample.py WORKLOAD OUT STATS --off

Runs WORKLOAD as __main__ between fasttrace.start(OUT, rate=R, clock=...) and fasttrace.stop(),
then writes the SamplingStats (plus the Summary's events, bytes, duration_ns and dropped) as one
JSON object to STATS, a side file, so the workload's own stdout/stderr cannot get in the way,
with the time taken by `import fasttrace`, start() and stop() (import_ms, start_ms, stop_ms).
--off is the control: fasttrace imported and the workload run the same way, the sampler never
started.

The targets are 1 % of a ~0.7 s process, so this runner imports nothing that a program using
fasttrace would not: no argparse, json or runpy (together ~10-20 ms of start-up here, which
would count as overhead).  The workload runs as `python WORKLOAD` runs it: compiled from its
bytes, executed in a fresh `__main__` module, its directory as sys.path[0].
"""

import sys
import time  # already imported by the interpreter's start-up: free

USAGE = "usage: fasttrace_sample.py WORKLOAD OUT STATS (--rate R [--clock wall|cpu] | --off)"
SUMMARY_FIELDS = ("events", "dropped", "duration_ns", "bytes")


def parse(argv):
    positional, rate, clock, off = [], None, None, False
    it = iter(argv)
    for arg in it:
        if arg in ("--rate", "--clock"):
            value = next(it, None)
            if value is None:
                sys.exit(USAGE)
            if arg == "--rate":
                rate = float(value)
            else:
                clock = value
        elif arg == "--off":
            off = True
        else:
            positional.append(arg)
    if len(positional) != 3 or (rate is None) != off or (off and clock is not None):
        sys.exit(USAGE)
    return positional, rate, clock


def run_as_main(path):
    """What `python PATH` does with a script, without runpy (whose imports cost ~5 ms)."""
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec", dont_inherit=True)
    main = type(sys)("__main__")
    main.__file__ = path
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    sys.argv = [path]
    sys.path[0] = path.rpartition("/")[0] or "."
    exec(code, main.__dict__)


def to_json(fields):
    """Numbers, bools, None and plain strings only: enough for SamplingStats, no json import."""

    def value(v):
        if v is None or isinstance(v, bool):
            return {None: "null", True: "true", False: "false"}[v]
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(v) if v == v and abs(v) != float("inf") else "null"

    return "{" + ", ".join(f'"{k}": {value(v)}' for k, v in fields.items()) + "}"


def main(argv):
    (workload, out, stats_path), rate, clock = parse(argv)

    t0 = time.perf_counter()
    import fasttrace

    t1 = t2 = time.perf_counter()
    if rate is not None:
        fasttrace.start(out, rate=rate, clock=clock or "wall")
        t2 = time.perf_counter()
    try:
        run_as_main(workload)
    finally:
        t3 = time.perf_counter()
        summary = fasttrace.stop() if rate is not None else None
        t4 = time.perf_counter()
    fields = {"off": rate is None, "import_ms": 1000 * (t1 - t0)}
    if rate is not None:
        fields.update(start_ms=1000 * (t2 - t1), stop_ms=1000 * (t4 - t3))
    if summary is not None:
        fields.update({name: getattr(summary, name, None) for name in SUMMARY_FIELDS})
        fields.update(summary.sampling._asdict())
    with open(stats_path, "w") as f:
        f.write(to_json(fields) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

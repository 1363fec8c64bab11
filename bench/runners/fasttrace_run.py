"""Run a workload under fasttrace's trace mode (used by bench/run.py and bench/decode_speed.py).

    python bench/runners/fasttrace_run.py WORKLOAD OUT [--no-c-calls] [--hook HOOK]
                                          [--flight SECONDS] [--rate HZ]
                                          [--include PAT] [--exclude PAT] [--max-depth N]
                                          [--buffer-size BYTES]

Writes the trace to OUT and the stop() summary as one JSON line to OUT.summary.json
(a side file, so the workload's own stdout/stderr cannot get in the way), with the hook that
recorded the trace. `--hook monitoring|eval_frame|profile` sets FASTTRACE_HOOK for the run
(before fasttrace is imported), which forces that hook where the build offers it.
`--flight SECONDS` records into a FlightRecorder (64 MiB) instead of a file, and dumps nothing:
its steady-state cost (bench/flight.py); with `--rate HZ` it samples instead of tracing.
`--include PAT` and `--exclude PAT` (each repeatable) and `--max-depth N` are start()'s scope
(bench/scope.py); without them start() gets no scope arguments, so the runner also drives
builds from before they existed.  `--buffer-size BYTES` is start()'s per-thread ring
(bench/scope.py gives its callgrind runs one that holds the whole trace: under valgrind the
writer thread lags behind and a default ring would drop events).
"""

import json
import os
import runpy
import sys

SUMMARY_FIELDS = ("path", "events", "dropped", "duration_ns", "bytes", "functions")


USAGE = ("usage: fasttrace_run.py WORKLOAD OUT [--no-c-calls] [--hook HOOK] [--flight SECONDS] "
         "[--rate HZ] [--include PAT] [--exclude PAT] [--max-depth N] [--buffer-size BYTES]")


def take(args, flag):
    """The value after `flag` in args (both removed), or None."""
    if flag not in args:
        return None
    i = args.index(flag)
    if i + 1 >= len(args):
        sys.exit(USAGE)
    value = args[i + 1]
    del args[i : i + 2]
    return value


def main(argv):
    c_calls = "--no-c-calls" not in argv
    args = [a for a in argv if a != "--no-c-calls"]
    hook = take(args, "--hook")
    if hook is not None:
        os.environ["FASTTRACE_HOOK"] = hook
    flight = take(args, "--flight")
    rate = take(args, "--rate")
    scope = {}
    for flag in ("--include", "--exclude"):
        while flag in args:
            scope.setdefault(flag[2:], []).append(take(args, flag))
    max_depth = take(args, "--max-depth")
    if max_depth is not None:
        scope["max_depth"] = int(max_depth)
    buffer_size = take(args, "--buffer-size")
    extra = {"buffer_size": int(buffer_size)} if buffer_size else {}
    if len(args) != 2:
        sys.exit(USAGE)
    workload, out = args

    import fasttrace

    if flight is not None:
        session = fasttrace.FlightRecorder(float(flight), 64 << 20, c_calls=c_calls,
                                           rate=float(rate) if rate else None).start()
    else:
        session = fasttrace.start(out, c_calls=c_calls, rate=float(rate) if rate else None,
                                  **scope, **extra)
    try:
        sys.argv = [workload]
        runpy.run_path(workload, run_name="__main__")
    finally:
        summary = fasttrace.stop()
    fields = {name: getattr(summary, name, None) for name in SUMMARY_FIELDS}
    fields["path"] = str(fields["path"]) if fields["path"] is not None else None
    fields["c_calls"] = c_calls
    fields["hook"] = getattr(session, "hook", None)
    fields["hook_requested"] = hook
    if scope:
        fields["scope"] = scope
    with open(out + ".summary.json", "w") as f:
        f.write(json.dumps(fields) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

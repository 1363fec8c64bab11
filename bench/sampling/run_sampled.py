"""run_sampled.py RATE MODE STATS_JSON WORKLOAD: run a workload as __main__ under the sampler.

MODE: off (control: runner without sampler), nogil, nogil-fixed (no jitter), snap (nogil +
chunk snapshot + retry), gil (GIL-taking sampler)."""
import json
import runpy
import sys
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
import sampler  # noqa: E402

rate, mode, stats_path, workload = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
jitter = mode != "nogil-fixed"
if mode != "off":  # "off": same runner, imports and runpy, but no sampler (control)
    sampler.call_opcodes()
    sampler.start(rate, "gil" if mode == "gil" else "nogil", jitter, snapshot=(mode == "snap"))
try:
    sys.argv = [workload]
    runpy.run_path(workload, run_name="__main__")
finally:
    t0 = time.perf_counter()
    if mode == "off":
        stats, samples = dict(ticks=0, duration_s=1, thread_samples=0, reads=0, read_fail=0,
                              torn=0, sampler_cpu_ns=0), []
    else:
        stats, samples = sampler.stop(True)
    stats["resolve_s"] = time.perf_counter() - t0
    # torn-stack heuristic: a main-thread stack whose outermost frame differs from the usual one
    outer = {}
    for _, _, _, st in samples:
        if st:
            outer[st[-1]] = outer.get(st[-1], 0) + 1
    stats["outermost_frames"] = outer
    stats["samples"] = len(samples)
    with open(stats_path, "w") as f:
        json.dump(stats, f)

"""What a capture returns when it stops: Summary, and in sampling mode SamplingStats.

_trace.py builds the same SamplingStats from a file's footer, with sampling_stats().
"""

from __future__ import annotations

from collections import namedtuple

# What stop() returns.  A namedtuple, not a dataclass: importing dataclasses costs ~15 ms,
# which would count as tracing overhead in every short traced process.
Summary = namedtuple(
    "Summary",
    ["path", "events", "dropped", "duration_ns", "bytes", "threads", "functions", "sampling",
     "lost_threads", "hook_lost_threads", "files"],
    defaults=(None, 0, 0, None),
)
Summary.__doc__ = (
    "What stop() returns: path, events, dropped, duration_ns, bytes, threads, functions, in "
    "sampling mode `sampling` (a SamplingStats; None in trace mode), lost_threads (threads "
    "whose ring could not be allocated: their events are counted in dropped) and "
    "hook_lost_threads (threads whose hook another tool replaced: nothing after that was "
    "recorded there); files: a rotated series' files still kept, oldest first (None "
    "otherwise; path is the first of them)."
)

# Sampling mode's account of itself.  rate_met is False when the sampler fell short of the
# requested rate (a loaded machine, stacks too deep or threads too many to read in one interval,
# or a rate it lowered itself, over its CPU budget): see sampling_stats.  The fields after
# `realtime` were added later, with defaults, so that files written before them still load.
SamplingStats = namedtuple(
    "SamplingStats",
    ["rate", "achieved_rate", "rate_met", "clock", "samples", "ticks", "late_ticks", "torn",
     "truncated", "dropped", "sampler_cpu_ns", "realtime", "reused", "rate_lowered",
     "effective_rate", "cpu_budget", "paused_ns", "out_of_scope"],
    defaults=(0, 0, None, None, 0, 0),
)
SamplingStats.__doc__ = (
    "Sampling mode's account of itself: the requested and achieved rate, rate_met, the counts "
    "of ticks and samples, and since issue 8: reused (samples of threads that had not run "
    "since the previous tick, served without reading their stack), rate_lowered (times the "
    "sampler halved its rate, over its CPU budget), effective_rate (the rate in force at the "
    "end), cpu_budget (that budget, a share of one core) and paused_ns (time the sampler was "
    "stopped around fork()); since issue 13, out_of_scope (samples not written because the "
    "capture's scope kept none of their frames); None or 0 for files written before."
)


def rate_shortfall_allowed(expected: float) -> float:
    """How many ticks below `expected` a sampler that keeps its rate may end, by chance.

    Intervals are uniform in [0.5, 1.5] x 1/rate, so the number of ticks in a span where
    `expected` are due varies with a standard deviation of sqrt(expected / 12), and the span's
    end cuts one interval short.  The allowance is the larger of 10 % (the documented
    tolerance, which is what counts on long runs) and 1 + 3 standard deviations: a 30 ms run
    at 100 Hz expects 3 ticks, and 2 is no sign of a problem, whereas 1 s at 1000 Hz with 850
    ticks is."""
    sd: float = (expected / 12) ** 0.5  # no math import: importing fasttrace stays cheap
    return max(0.1 * expected, 1 + 3 * sd)


def sampling_stats(rate: float, clock: str, raw: "dict[str, int]") -> SamplingStats:
    # Time stopped around fork() is not time the sampler was asked to tick in.  (The values
    # come from a file: a damaged one can hold a pause longer than the run.)
    active_ns = max(0, raw.get("duration_ns", 0) - raw.get("paused_ns", 0))
    seconds = active_ns / 1e9
    ticks = raw.get("ticks", 0)
    achieved = ticks / seconds if seconds > 0 else 0.0
    lowered = raw.get("rate_lowered", 0)
    expected = seconds * rate
    final_mhz = raw.get("final_rate_mhz")
    budget_ppm = raw.get("cpu_budget_ppm")
    return SamplingStats(
        rate=rate, achieved_rate=achieved,
        rate_met=not lowered and ticks >= expected - rate_shortfall_allowed(expected),
        clock=clock, samples=raw.get("samples", 0), ticks=ticks,
        late_ticks=raw.get("late_ticks", 0), torn=raw.get("torn", 0),
        truncated=raw.get("truncated", 0), dropped=raw.get("dropped", 0),
        sampler_cpu_ns=raw.get("sampler_cpu_ns", 0), realtime=bool(raw.get("realtime", 0)),
        reused=raw.get("reused", 0), rate_lowered=lowered,
        effective_rate=final_mhz / 1000 if final_mhz else None,
        cpu_budget=budget_ppm / 1e6 if budget_ppm else None,
        paused_ns=raw.get("paused_ns", 0), out_of_scope=raw.get("out_of_scope", 0),
    )

"""Sampling mode: a sampled trace's samples as frames and stacks, shared by every exporter.

A sampled trace (`trace.mode == "sample"`) has no calls and returns, only samples: each is one
thread's Python stack (root first) at one sampler tick, with the time it stands for
(`weight_ns`: wall clock, the interval since the previous tick; cpu clock, the CPU time the
thread used since its previous sample).  Every exporter shows them with the same conventions:

* Frames: one per function, merged by (qualname, filename, first line), since the same function
  can in rare cases get two ids.  Frame ids are 1, 2, ... in the order the samples first use
  them (pprof wants ids > 0, Perfetto iids too: the file's own TRUNCATED marker has id 0).
* Waiting: a sample of a thread that did not hold the GIL (`idle`) gets a synthetic leaf frame
  `<waiting>` under its innermost Python frame.  Samples carry only Python frames, so without
  it a thread blocked in `time.sleep`, `recv` or a lock, or waiting for the GIL, would look
  like it runs the Python function that made the call; with it every flame graph, timeline
  and `pprof -top` shows waiting apart from running, under the function that waits.  (The
  sampler's `in_call` flag is not used to say *what* is awaited: a thread waiting for the GIL
  is often at a call too.)  pprof also labels each sample state=running|waiting.
* A stack cut at the maximum depth starts with a synthetic root frame `<truncated>`.
* Synthetic frames have no file and no line (`synthetic` is True); tools that have categories
  put them in "fasttrace".
* Samples with an empty stack (only in hand-made files: the sampler writes none) are skipped.
* Aggregating formats (pprof, collapsed) sum `weight_ns` and count samples per distinct
  (thread, stack); speedscope keeps each thread's samples in time order, consecutive
  identical stacks merged; the timeline formats (Perfetto, Chrome) turn samples into slices,
  see slices().

Memory grows with the distinct functions, stacks and threads (speedscope: with the runs of
identical stacks, which its file holds anyway), never with the number of samples.
"""

from __future__ import annotations

from fasttrace.export._stacks import frame_name

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

    from fasttrace._core import Function
    from fasttrace._trace import Trace

    ProgressCallback = Callable[[int, int], None]
    #: a frame of either mode, as the exporters use it
    AnyFunction = Union[Function, "Frame"]
    Stack = Tuple["Frame", ...]

WAITING = "<waiting>"
TRUNCATED = "<truncated>"
SYNTHETIC_CATEGORY = "fasttrace"
BATCH = 1 << 14  # samples between two progress reports
#: cpu clock: a sample covers the time up to the next tick, but at most this many periods (the
#: sampler's ticks are 0.5 to 1.5 periods apart)
MAX_SPAN_PERIODS = 2
DEFAULT_PERIOD_NS = 10_000_000  # when the file does not say its rate (damage)


class Frame:
    """A function as the sampled exporters see it: the attributes of fasttrace._core.Function
    (so the trace-mode code paths take it too), an id of its own, and `synthetic`."""

    __slots__ = ("id", "name", "qualname", "filename", "lineno", "module", "is_c", "synthetic")

    def __init__(self, id: int, name: str, qualname: str, filename: str, lineno: int,
                 module: str, is_c: bool, synthetic: bool) -> None:
        self.id = id
        self.name = name
        self.qualname = qualname
        self.filename = filename
        self.lineno = lineno
        self.module = module
        self.is_c = is_c
        self.synthetic = synthetic

    def __repr__(self) -> str:
        return f"<Frame {self.id} {self.qualname}>"


def is_synthetic(f: AnyFunction) -> bool:
    """Whether `f` is a synthetic frame (`<waiting>`, `<truncated>`); a Function never is."""
    return getattr(f, "synthetic", False) is True


def label(f: Frame) -> str:
    """The collapsed exporter's frame name: _stacks.frame_name(), the bare name for synthetic
    frames."""
    return f.qualname if f.synthetic else frame_name(f)


class Frames:
    """The frames and stacks of one sampled trace."""

    def __init__(self) -> None:
        self.frames: List[Frame] = []  # frame id - 1 -> frame
        self.by_key: Dict[Tuple[str, str, int], Frame] = {}
        self.by_function: Dict[int, Frame] = {}  # function id -> frame
        self.stacks: Dict[Tuple[int, bool], Stack] = {}  # (id(sample stack), idle) -> stack
        self.keep: List[Tuple[Any, ...]] = []  # the sample stacks whose id() are keys above
        self.interned: Dict[Stack, Stack] = {}
        self.waiting: Optional[Frame] = None
        self.truncated: Optional[Frame] = None

    def _new(self, name: str, qualname: str, filename: str, lineno: int, module: str,
             is_c: bool, synthetic: bool) -> Frame:
        f = Frame(len(self.frames) + 1, name, qualname, filename, lineno, module, is_c,
                  synthetic)
        self.frames.append(f)
        return f

    def _synthetic(self, name: str) -> Frame:
        return self._new(name, name, "", 0, "", False, True)

    def frame(self, fn: Function) -> Frame:
        f = self.by_function.get(fn.id)
        if f is not None:
            return f
        if fn.id == 0:  # the reader's TRUNCATED marker
            if self.truncated is None:
                self.truncated = self._synthetic(TRUNCATED)
            f = self.truncated
        else:
            key = (fn.qualname, fn.filename, fn.lineno)
            f = self.by_key.get(key)
            if f is None:
                f = self.by_key[key] = self._new(fn.name, fn.qualname, fn.filename, fn.lineno,
                                                 fn.module, fn.is_c, False)
        self.by_function[fn.id] = f
        return f

    def stack(self, stack: Tuple[Function, ...], idle: bool) -> Stack:
        """A sample's stack as frames, root first, with `<waiting>` under it when idle.  The
        reader hands out one tuple per distinct stack, so its id() is the cache key."""
        key = (id(stack), idle)
        out = self.stacks.get(key)
        if out is not None:
            return out
        frames = tuple(self.frame(fn) for fn in stack)
        if idle:
            if self.waiting is None:
                self.waiting = self._synthetic(WAITING)
            frames += (self.waiting,)
        # one tuple per distinct stack of frames (two function ids can make the same): the
        # exporters compare stacks with `is`
        frames = self.interned.setdefault(frames, frames)
        self.keep.append(stack)
        self.stacks[key] = frames
        return frames

    def is_waiting(self, stack: Stack) -> bool:
        return bool(stack) and stack[-1] is self.waiting


class Samples:
    """Iterating gives (ts, thread id, stack, weight_ns) for each sample with a stack, in time
    order, and counts what it read; progress(done, total) is called every BATCH samples and at
    the end (total: trace.stats.events, the sample records)."""

    def __init__(self, trace: Trace, progress: Optional[ProgressCallback] = None) -> None:
        self.trace = trace
        self.progress = progress
        self.frames = Frames()
        self.read = 0      # samples read
        self.idle = 0      # of them: waiting (idle)
        self.torn = 0      # of them: stack read while it moved (frames may be missing)
        self.empty = 0     # of them: no frame at all (skipped)
        self.weight_ns = 0  # sum over the samples yielded
        self.last_ts = 0

    def __iter__(self) -> Iterator[Tuple[int, int, Stack, int]]:
        stack_of = self.frames.stack
        callback = self.progress
        total = max(int(self.trace.stats.events), 1)
        n = idle = torn = empty = weight = 0
        ts = 0
        for s in self.trace.samples():
            n += 1
            if callback is not None and not n % BATCH:
                callback(min(n, total), total)
            if s.torn:
                torn += 1
            if s.idle:
                idle += 1
            if not s.stack:
                empty += 1
                continue
            ts = s.ts
            w = s.weight_ns
            weight += w
            yield ts, s.thread, stack_of(s.stack, s.idle), w
        self.read, self.idle, self.torn, self.empty = n, idle, torn, empty
        self.weight_ns, self.last_ts = weight, ts
        if callback is not None:
            callback(total, total)

    def summary(self, **extra: Any) -> Dict[str, Any]:
        """What every sampled exporter's result dict says about the samples."""
        sampling = self.trace.sampling
        return {
            **extra,
            "mode": "sample",
            "clock": clock(self.trace),
            "samples_read": self.read,
            "idle": self.idle,
            "torn": self.torn,
            "empty": self.empty,
            "weight_ns": self.weight_ns,
            "frames": len(self.frames.frames),
            "dropped": int(sampling.dropped) if sampling is not None else 0,
        }


def clock(trace: Trace) -> str:
    """"wall" or "cpu": what weight_ns measures."""
    sampling = trace.sampling
    return str(sampling.clock) if sampling is not None else "wall"


def rate(trace: Trace) -> float:
    """The requested rate in samples per second (0 if the file does not say)."""
    sampling = trace.sampling
    return float(sampling.rate) if sampling is not None and sampling.rate > 0 else 0.0


def period_ns(trace: Trace) -> int:
    """The nominal time between two ticks, from the requested rate."""
    r = rate(trace)
    return max(1, round(1e9 / r)) if r else DEFAULT_PERIOD_NS


def aggregate(samples: Samples) -> Dict[Tuple[int, Stack], List[int]]:
    """(thread id, stack) -> [samples, summed weight_ns], in the order first seen."""
    out: Dict[Tuple[int, Stack], List[int]] = {}
    for _, tid, stack, weight in samples:
        v = out.get((tid, stack))
        if v is None:
            out[(tid, stack)] = [1, weight]
        else:
            v[0] += 1
            v[1] += weight
    return out


def runs(samples: Samples) -> Dict[int, Tuple[List[Stack], List[int]]]:
    """Thread id -> (stacks, weights) in time order, consecutive identical stacks merged (a
    time-ordered view draws them as one block anyway), threads in the order first seen."""
    out: Dict[int, Tuple[List[Stack], List[int]]] = {}
    for _, tid, stack, weight in samples:
        r = out.get(tid)
        if r is None:
            out[tid] = ([stack], [weight])
        elif r[0][-1] is stack:
            r[1][-1] += weight
        else:
            r[0].append(stack)
            r[1].append(weight)
    return out


class SliceEvent:
    """A call or return made up from samples, with the attributes of fasttrace._core.Event that
    the timeline exporters read."""

    __slots__ = ("kind", "ts", "thread", "function")
    synthetic = False
    dropped = 0
    start_ts = 0

    def __init__(self, kind: str, ts: int, thread: int, function: Frame) -> None:
        self.kind = kind
        self.ts = ts
        self.thread = thread
        self.function = function


def trace_slices(samples: Samples) -> Iterator[SliceEvent]:
    """slices() with the trace's period and clock."""
    return slices(samples, period_ns(samples.trace), clock(samples.trace))


def slices(samples: Iterable[Tuple[int, int, Stack, int]], period: int, clock: str = "wall"
           ) -> Iterator[SliceEvent]:
    """Calls and returns (in time order per thread; threads interleave) that draw the samples
    as nested slices.  A sample covers its thread's stack from its tick to the next tick of the
    trace (ticks are the distinct sample timestamps), and where consecutive samples of a thread
    share a stack prefix its slices go on: the frames below it close and the new ones open at
    the tick.  Where ticks are missing, a sample's slices end earlier and leave a hole:

    * wall clock: a tick's weight is the interval since the tick before it, so a next tick
      whose weight does not reach back to this one (within a quarter period) had ticks before
      it whose samples are missing (dropped): the slices end where the missing ones began.  A
      late tick still follows directly, and the slices go on to it.
    * cpu clock: a tick samples only the threads that used CPU, and the weights are CPU times,
      so the slices end `MAX_SPAN_PERIODS` periods after their tick if the next tick is later.

    The last tick's samples cover one period."""
    wall = clock != "cpu"
    cap = MAX_SPAN_PERIODS * period
    slack = period // 4
    open_: Dict[int, Stack] = {}   # thread id -> frames open, root first
    ends: Dict[int, int] = {}      # thread id -> when its open frames end unless sampled again
    tick = -1
    at_tick: List[int] = []        # threads sampled at `tick`
    for ts, tid, stack, weight in samples:
        if ts != tick:
            if at_tick:
                if wall:
                    previous = ts - weight  # the tick before this one
                    end = ts if previous <= tick + slack else previous
                else:
                    end = min(ts, tick + cap)
                for t in at_tick:
                    ends[t] = end
                at_tick.clear()
            tick = ts
        at_tick.append(tid)
        prev = open_.get(tid)
        keep = 0
        if prev is not None:
            end = ends.pop(tid, ts)  # (none: sampled twice in a tick, only in hand-made files)
            if end == ts:  # sampled at the tick before: its slices may go on
                n = min(len(prev), len(stack))
                while keep < n and prev[keep] is stack[keep]:
                    keep += 1
            for f in reversed(prev[keep:]):
                yield SliceEvent("return", end, tid, f)
        for f in stack[keep:]:
            yield SliceEvent("call", ts, tid, f)
        open_[tid] = stack
    for t in at_tick:
        ends[t] = tick + period
    for tid, prev in open_.items():
        for f in reversed(prev):
            yield SliceEvent("return", ends[tid], tid, f)

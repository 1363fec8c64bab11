# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""fasttrace._core: the native boundary.

Two halves, both thin:
  * session and hook primitives that fasttrace/_recorder.py (and _capture.py, _flight.py,
    _rotation.py) compose into captures: start()/stop(), flight recorders, rotated series;
  * TraceFile, which reads a .ftrace file (with pread) and decodes it with ft_reader.c.
All policy (errors users see, coexistence checks, atexit, fork) lives in Python.
"""
cimport cython
from libc.errno cimport errno
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy
from posix.unistd cimport close as c_close
from cpython.object cimport PyObject

cdef extern from "Python.h":
    int Py_AddPendingCall(int (*func)(void*) noexcept, void* arg)

from ft_hooks cimport *
from ft_reader cimport *
from ft_sampler cimport *
from ft_session cimport *

import os as _os
import _thread
import sys as _sys

USE_MONITORING = bool(FT_USE_MONITORING)
HAS_EVAL_FRAME = bool(FT_USE_EVAL_FRAME)
FORMAT_VERSION = FT_FORMAT_VERSION
# The format versions the readers read.
FORMAT_VERSION_MIN, FORMAT_VERSION_MAX = FT_FORMAT_VERSION_MIN, FT_FORMAT_VERSION_MAX
CHUNK_HEADER_SIZE = FT_CHUNK_HEADER_SIZE
# The hook that recorded a trace (header flags bits 1-2).
HOOK_PROFILE, HOOK_MONITORING, HOOK_EVAL_FRAME = FT_HOOK_PROFILE, FT_HOOK_MONITORING, FT_HOOK_EVAL_FRAME
HOOK_SAMPLER = FT_HOOK_SAMPLER
HOOK_NAMES = {FT_HOOK_PROFILE: "profile", FT_HOOK_MONITORING: "monitoring",
              FT_HOOK_EVAL_FRAME: "eval_frame", FT_HOOK_SAMPLER: "sampler"}


# ---- session and hooks (GIL held unless marked) -------------------------------------------

def hooks_init():
    ft_hooks_init()
    _register_fork_hooks()


def session_start(int fd, bint c_calls, int hook, uint32_t chunk_size, uint32_t n_chunks,
                  bytes command_line, str python_version, uint32_t python_version_hex,
                  bint sample=False, str path="", bint hook_fallback=False,
                  flight_max_bytes=None, double flight_seconds=0, series=None):
    """Writes the header and starts the writer thread.  Raises OSError; the caller keeps fd.
    ENOMEM: a ring of chunk_size * n_chunks bytes cannot be reserved.  With flight_max_bytes
    the writer keeps the last flight_seconds in a ring of that many bytes instead of writing
    to fd (which may be -1); flight_dump() writes it out.  With series=(stem, suffix,
    max_bytes, max_seconds, keep), fd is the series' first file and the writer rotates."""
    cdef ft_config cfg
    cdef bytes stem_b = b""
    cdef bytes suffix_b = b""
    cdef bytes py = python_version.encode("utf-8", "replace")
    cdef bytes path_b = _os.fsencode(path)
    cfg.path = path_b
    cfg.fd = fd
    cfg.sink = FT_SINK_FILE if flight_max_bytes is None else FT_SINK_FLIGHT
    cfg.flight_max_bytes = 0 if flight_max_bytes is None else flight_max_bytes
    cfg.flight_seconds = flight_seconds
    cfg.series_max_bytes = 0
    cfg.series_max_seconds = 0
    cfg.series_keep = 0
    if series is not None:
        stem_b = _os.fsencode(series[0])
        suffix_b = _os.fsencode(series[1])
        cfg.sink = FT_SINK_SERIES
        cfg.series_max_bytes = series[2] or 0
        cfg.series_max_seconds = series[3] or 0
        cfg.series_keep = series[4] or 0
    cfg.series_stem = stem_b
    cfg.series_suffix = suffix_b
    cfg.c_calls = c_calls
    cfg.hook = hook
    cfg.hook_fallback = hook_fallback
    cfg.mode = FT_MODE_SAMPLE if sample else FT_MODE_TRACE
    cfg.chunk_size = chunk_size
    cfg.n_chunks = n_chunks
    cfg.command_line = command_line
    cfg.command_line_size = len(command_line)
    cfg.python_version = py
    cfg.python_version_hex = python_version_hex
    ft_intern_reset()
    cdef int err = ft_session_start(&cfg)
    if err != 0:
        raise OSError(err, _os.strerror(err))


def hooks_retain(threading_active, disable, marker):
    ft_hooks_retain(threading_active, disable, marker)


def hooks_release():
    ft_hooks_release()


def find_profiled_thread():
    """threading.get_ident() of a thread that has a profile function set, or 0."""
    return ft_hooks_find_profiled_thread()


def install_monitoring(object set_events, int tool, int events, bint skip_current=False):
    """Snapshots every thread's stack and enables the events, with no Python code in between
    (so no other thread can run and move its stack).  skip_current: see ft_hooks.h."""
    ft_hooks_snapshot_threads(skip_current)
    set_events(tool, events)


def monitoring_callbacks():
    """(enter, exit, call, c_exit, throw, unwind) C callables for
    sys.monitoring.register_callback: throw and unwind are enter and exit for the events that
    cannot be disabled (PY_THROW, PY_UNWIND)."""
    return ft_hooks_monitoring_callbacks()


def install_legacy(bint skip_current=False):
    """Snapshots every thread's stack and installs the C profile function on each."""
    ft_hooks_snapshot_threads(skip_current)
    ft_hooks_install_legacy()


def remove_legacy():
    ft_hooks_remove_legacy()


def install_eval_frame():
    """3.11: installs the PEP 523 frame evaluator.  False if another tool already has one."""
    return ft_hooks_install_eval_frame() == 0


def remove_eval_frame():
    ft_hooks_remove_eval_frame()


def eval_frame_taken():
    """True if another tool (a debugger, a JIT) replaced the frame evaluator (PEP 523)."""
    return bool(ft_hooks_eval_frame_taken())


def legacy_bootstrap():
    return ft_hooks_legacy_bootstrap()


def set_own_files(tuple files):
    """Code of these files is fasttrace's own: never recorded, nor what it calls."""
    ft_intern_set_own_files(files)


def check_hooks():
    """Marks threads whose hook another tool replaced (3.9-3.11); see ft_hooks.h."""
    ft_hooks_check()


def lose_hooks(str what):
    """Marks every live thread's hook as lost, for `what` reason."""
    cdef bytes b = what.encode("utf-8", "replace")
    ft_hooks_lose_all(b)


def mute_returns(unsigned int returns):
    """Trace mode: the calling thread's next `returns` returns of calls that began before the
    trace are not recorded, nor what runs until then (see ft_hooks.h)."""
    ft_hooks_mute_returns(returns)


#: run_unmuted(code, globals): exec() recorded although the caller's frames are muted
#: (fasttrace run); a C builtin, so no frame of it shows in the program's tracebacks.
run_unmuted = ft_hooks_run_unmuted_function()


def wrap_thread_start(original, thread_class, bint install_hook):
    """A C wrapper of a thread starter; see ft_spawn.h."""
    return ft_spawn_wrap(original, thread_class, install_hook)


def sigterm_guard(int signum):
    """Main thread, right after signal.signal(signum, handler): the process ends even if the
    handler cannot run (see ft_sigterm.h).  OSError where that cannot be had."""
    if ft_sigterm_guard(signum) < 0:
        raise OSError(errno, _os.strerror(errno))


def sigterm_taken():
    """The guarded handler runs: stop reminding the main thread (ft_sigterm.h)."""
    ft_sigterm_taken()


def signal_listen(int signum):
    """Main thread, after signal.signal(signum, handler): deliveries of signum wake
    signal_wait() instead (see ft_siglisten.h).  Returns the generation to wait on; OSError
    where that cannot be had (EBUSY: a signal is listened to already)."""
    cdef long generation = ft_siglisten_open(signum)
    if generation < 0:
        raise OSError(errno, _os.strerror(errno))
    return generation


def signal_wait(long generation):
    """Blocks without the GIL until the listened signal arrives (True; a burst counts once) or
    `generation` is closed (False)."""
    cdef int delivered
    with nogil:
        delivered = ft_siglisten_wait(generation)
    return bool(delivered)


def signal_unlisten():
    """Ends the listening, puts CPython's handler back and returns once the waiter has left."""
    ft_siglisten_close()


def set_thread_name(unsigned long long ident, str name):
    cdef bytes b = name.encode("utf-8", "replace")
    ft_session_set_thread_name(ident, b)


# ---- sampling mode ------------------------------------------------------------------------

MAX_STOP_CODES = FT_SAMPLER_MAX_STOP_CODES
MAX_SAMPLE_DEPTH = FT_SAMPLE_MAX_DEPTH
CLOCK_WALL, CLOCK_CPU = FT_CLOCK_WALL, FT_CLOCK_CPU
# FT_DEF_SAMPLER_STATS / ft_summary.sampler values, in ft_sampler_stat order
SAMPLER_STATS = ("ticks", "samples", "late_ticks", "torn", "truncated", "dropped",
                 "sampler_cpu_ns", "read_failures", "duration_ns", "realtime", "reused",
                 "rate_lowered", "final_rate_mhz", "cpu_budget_ppm", "paused_ns",
                 "out_of_scope")

cdef bytes _call_opcodes = None
cdef tuple _stop_codes = ()


def name_sampled_thread(unsigned long long ident, str name, native_id, bint force=False,
                        uint64_t after_uid=0):
    """Names the sampled thread with this ident, now or when the sampler meets it (GIL held).
    force: rename a thread already named (stop() does, since names can change).  after_uid:
    last_thread_uid() from before the thread was started, if known (idents are reused)."""
    cdef bytes b = name.encode("utf-8", "replace")
    ft_sampler_set_thread_name(ident, b, native_id or 0, force, after_uid + 1 if after_uid else 0)


class LayoutError(Exception):
    """The running interpreter's struct layouts are not the ones this build reads (3.13+)."""


def _layout_fields():
    cdef const char* name
    names = []
    while True:
        name = ft_sampler_layout_field(len(names))
        if name == NULL:
            return tuple(names)
        names.append(name.decode())


# The fields sampler_check_layout compares with the running interpreter's _PyRuntime.debug_offsets
# ("interpreter_frame.instr_ptr", ...); empty before 3.13, which does not describe its layout.
LAYOUT_FIELDS = _layout_fields()


def sampler_check_layout():
    """None when the struct layouts this build reads are the running interpreter's (always
    before 3.13), else the message saying which field differs (GIL held; reads the
    FASTTRACE_DEBUG_OFFSETS_SKEW test hook)."""
    cdef char msg[640]
    if ft_sampler_check_layout(msg, sizeof(msg)) == 0:
        return None
    return msg.decode("utf-8", "replace")


def sampler_start(double rate, int clock, bytes call_opcodes, tuple stop_codes,
                  bint scope_patterns=False, bint trim_stacks=False, max_depth=None):
    """Starts the sampler thread (after session_start).  call_opcodes: 256 bytes, nonzero for
    opcodes that call.  stop_codes: code objects whose frames, and all outer ones, are left out
    of every stack; the caller keeps them alive until session_finish.  The scope:
    scope_patterns (include/exclude given: files are decided by sampler_scope_serve's
    predicate), trim_stacks, max_depth (None: no limit).  Raises OSError, or LayoutError when
    the layout check refuses (see sampler_check_layout)."""
    global _call_opcodes, _stop_codes
    cdef ft_sampler_config cfg
    cdef const void* codes[FT_SAMPLER_MAX_STOP_CODES]
    if len(call_opcodes) != 256 or len(stop_codes) > FT_SAMPLER_MAX_STOP_CODES:
        raise ValueError("bad sampler configuration")
    _call_opcodes = call_opcodes
    _stop_codes = stop_codes
    for i, co in enumerate(stop_codes):
        codes[i] = <const void*><PyObject*>co
    cfg.rate_hz = rate
    cfg.clock = clock
    cfg.call_opcodes = <const uint8_t*><const char*>_call_opcodes
    cfg.stop_codes = codes
    cfg.n_stop_codes = len(stop_codes)
    cfg.scope_patterns = scope_patterns
    cfg.trim_stacks = trim_stacks
    cfg.max_depth = 0xFFFFFFFF if max_depth is None else min(max_depth, 0xFFFFFFFE)
    cdef int err = ft_sampler_start(&cfg)
    if err == FT_SAMPLER_ELAYOUT:
        raise LayoutError(ft_sampler_layout_error().decode("utf-8", "replace"))
    if err != 0:
        raise OSError(err, _os.strerror(err))
    _register_fork_hooks()


cdef bint _fork_hooks = False


def _before_fork():
    global _scope_paused
    ft_writer_fork_defer()
    ft_sampler_fork_defer()
    if _scope_pred is not None and not _scope_paused:
        with nogil:
            ft_sampler_scope_pause()
        _scope_paused = True


cdef int _resume_after_fork(void* arg) noexcept:
    global _scope_paused
    ft_writer_fork_resume()
    ft_sampler_fork_resume()
    if _scope_paused and _scope_pred is not None:  # (None: stopped meanwhile)
        _scope_paused = False
        _start_scope_helper()
    return 0


def _after_fork_in_parent():
    # 3.13 counts the threads after this hook: a fork from the main thread restarts once
    # os.fork() has returned, from a pending call (the main thread runs it at its next
    # bytecode; see ft_compat.h).  A fork from another thread restarts at once: there the
    # warning is due anyway (the main thread is another one), and the main thread may not run
    # bytecode for a long time (blocked in a join), with the rings filling meanwhile.
    if (FT_FORK_COUNTS_AFTER_HOOKS and _thread.get_ident() == _thread_main_ident()
            and Py_AddPendingCall(_resume_after_fork, NULL) == 0):
        return
    _resume_after_fork(NULL)


def _thread_main_ident():
    threading = _sys.modules.get("threading")
    return threading.main_thread().ident if threading is not None else _thread.get_ident()


cdef _register_fork_hooks():
    # The writer and sampler threads are stopped around fork() (ft_fork.h): for os.fork() they
    # are restarted only from these hooks, after CPython has counted the process's threads.
    # Once per process; they do nothing while nothing runs.
    global _fork_hooks
    if not _fork_hooks and hasattr(_os, "register_at_fork"):
        _os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent)
        _fork_hooks = True


def last_thread_uid():
    """Every thread state made from now on has an id (tstate->id) above this."""
    return ft_sampler_last_thread_uid()


# The scope helper (ft_sampler.h): its predicate while a sampler with patterns runs, and
# whether os.fork()'s before hook stopped it (it is started again after the fork, in the parent,
# with the sampler: CPython 3.12+ warns about a fork with more than one thread).
cdef object _scope_pred = None
cdef bint _scope_paused = False


cdef _start_scope_helper():
    ft_sampler_scope_expect()
    try:
        _thread.start_new_thread(sampler_scope_serve, (_scope_pred,))
    except BaseException:
        ft_sampler_scope_exit()  # stop() decides every file name then


def sampler_scope_start(pred):
    """After sampler_start with scope_patterns (GIL held): starts the scope helper, a bare
    thread (not in threading.enumerate()) that decides the file names the sampler meets with
    pred(filename) -> bool.  If it cannot start, samples wait (up to a bound) for stop()."""
    global _scope_pred, _scope_paused
    _scope_pred = pred
    _scope_paused = False
    _start_scope_helper()


cdef _scope_decide(pred, uint32_t first, uint32_t end):
    # Files [first, end) decided by pred(filename), as the hooks decide them in trace mode
    # (ft_intern.c): a predicate that raises leaves the file in scope.
    cdef const char* name
    cdef size_t n
    cdef uint32_t i
    for i in range(first, end):
        name = ft_sampler_scope_file(i, &n)
        try:
            inside = bool(pred(name[:n].decode("utf-8", "surrogatepass")))
        except Exception:
            inside = True
        ft_sampler_scope_decide(i, inside)
    ft_sampler_scope_taken(end)


def sampler_scope_serve(pred):
    """The scope helper thread's body (sampling mode with include/exclude; started with
    _thread.start_new_thread after sampler_scope_expect): decides, with pred(filename) and
    the GIL, each file name the sampler thread meets, until sampler_scope_finish.  The
    sampler never samples this thread."""
    cdef uint32_t first = 0, end = 0
    cdef int r
    try:
        if ft_sampler_scope_enter(_thread.get_ident()) != 0:
            return
        while True:
            with nogil:
                r = ft_sampler_scope_wait(&first, &end)
            if r != 0:
                return
            _scope_decide(pred, first, end)
    finally:
        ft_sampler_scope_exit()


def sampler_scope_finish():
    """stop(), GIL held, after session_quiesce and before session_finish: joins the sampler
    and scope helper threads, then decides the file names left undecided, so that the
    samples still held for them are written by session_finish."""
    global _scope_pred, _scope_paused
    cdef uint32_t first = 0, end = 0
    pred = _scope_pred
    _scope_pred = None  # (no restart after a fork from now on)
    _scope_paused = False
    with nogil:
        ft_sampler_halt()
        ft_sampler_scope_join()
    if pred is not None:
        ft_sampler_scope_pending(&first, &end)
        _scope_decide(pred, first, end)


def sampler_release():
    """Frees the sampler's tables after session_finish (GIL held)."""
    global _stop_codes
    ft_sampler_release()
    _stop_codes = ()


def scope_set(code_pred, dict code_cache, c_pred, dict c_cache, max_depth, min_duration_ns=0):
    """The capture's scope (fasttrace/_scope.py), before session_start: code_pred(filename)
    and c_pred(module, qualname) decide, once per function, what is recorded; their caches
    are read first (a hit runs no Python code in the hook); max_depth (None: no limit) mutes
    the calls deeper than it; calls shorter than min_duration_ns (0: none) are not written.
    code_pred None: no patterns."""
    if code_pred is None:
        ft_intern_set_scope(NULL, NULL, NULL, NULL)
    else:
        ft_intern_set_scope(<PyObject*>code_pred, <PyObject*>code_cache, <PyObject*>c_pred,
                            <PyObject*>c_cache)
    global ft_thread_max_depth, ft_thread_min_ns
    ft_thread_max_depth = 0xFFFFFFFF if max_depth is None else min(max_depth, 0xFFFFFFFE)
    ft_thread_min_ns = min_duration_ns


def scope_clear():
    """No scope: after the session is quiesced (no hook reads it any more)."""
    scope_set(None, None, None, None, None)


def session_put_scope(str text):
    """The SCOPE definition (JSON), after session_start and before any event."""
    cdef bytes b = text.encode("utf-8")
    ft_defs_put_scope(b, len(b))


def session_quiesce():
    ft_session_quiesce()


def session_finish():
    """Flushes and closes the file; returns a dict.  Runs without the GIL."""
    cdef ft_summary s
    cdef ft_sampler_stats sampled
    cdef int i
    with nogil:
        # the sampler first: its last chunk and stats def go out with the rest
        ft_sampler_stop(&sampled)
        ft_session_finish(&s)
    scope_clear()
    for i in range(16):
        s.sampler[i] = sampled.values[i]
    series = {"first_index": s.first_index, "last_index": s.last_index,
              "skipped_error": s.skipped_error, "skipped_error_index": s.skipped_error_index,
              "skipped_error_offset": s.skipped_error_offset,
              "skipped_errors": s.skipped_errors, "lost_chunks": s.lost_chunks}
    return {
        "events": s.events,
        "dropped": s.dropped,
        "bytes": s.bytes,
        "duration_ns": s.duration_ns,
        "threads": s.threads,
        "functions": s.functions,
        "lost_threads": s.lost_threads,
        "hook_lost_threads": s.hook_lost_threads,
        "error": s.error,
        "error_offset": s.error_offset,
        "sampler": {k: s.sampler[i] for i, k in enumerate(SAMPLER_STATS)},
        "series": series,
    }


def session_abandon():
    global _scope_pred, _scope_paused
    ft_session_abandon()
    ft_sampler_abandon()
    _scope_pred = None  # the helper thread is the parent's
    _scope_paused = False
    scope_clear()


def session_flush_threads():
    """Trace mode (GIL held): every thread hands its partly filled chunk to the writer."""
    ft_session_flush_threads()


def flight_dump(int fd):
    """Writes the flight recorder's window to fd, on the writer thread; waits without the GIL.
    Returns a dict; raises OSError (EINVAL: not a flight recorder, ESRCH: none running)."""
    cdef ft_flight_dump_result r
    cdef int err
    with nogil:
        err = ft_writer_dump(fd, &r)
    if err != 0:
        raise OSError(err, _os.strerror(err))
    return {"error": r.error, "error_offset": r.error_offset, "bytes": r.bytes,
            "events": r.events, "chunks": r.chunks, "start_tick": r.start_tick,
            "end_tick": r.end_tick, "duration_ns": r.duration_ns, "threads": r.threads,
            "functions": r.functions}


# ---- reading ------------------------------------------------------------------------------

cdef class Function:
    """A traced function: Python code (is_c False) or a C function (is_c True)."""
    cdef readonly int id
    cdef readonly str name
    cdef readonly str qualname
    cdef readonly str filename
    cdef readonly uint64_t lineno
    cdef readonly str module
    cdef readonly bint is_c

    def __repr__(self):
        where = "C" if self.is_c else f"{self.filename}:{self.lineno}"
        return f"<Function {self.id} {self.qualname} ({where})>"


cdef class Thread:
    """A traced thread.  `id` is the small id events carry; `ident` is threading.get_ident()."""
    cdef readonly int id
    cdef readonly object ident
    cdef readonly object native_id
    cdef readonly str name

    def __repr__(self):
        return f"<Thread {self.id} {self.name!r} ident={self.ident}>"


cdef str K_CALL = "call"
cdef str K_RETURN = "return"
cdef str K_C_CALL = "c_call"
cdef str K_C_RETURN = "c_return"
cdef str K_GAP = "gap"
cdef tuple KINDS = (K_CALL, K_RETURN, K_C_CALL, K_C_RETURN, K_GAP)


@cython.freelist(256)
cdef class Event:
    """One call or return.  `ts` is ns since the trace started.  `synthetic` marks events the
    reader made: frames already running at start, and frames closed and reopened around a gap
    or at the end of the trace."""
    cdef readonly str kind
    cdef readonly int64_t ts
    cdef readonly int thread
    cdef readonly Function function
    cdef readonly bint synthetic
    # gaps only
    cdef readonly uint64_t dropped
    cdef readonly int64_t start_ts

    def __repr__(self):
        if self.kind == K_GAP:
            return f"<Gap thread={self.thread} {self.start_ts}..{self.ts} dropped={self.dropped}>"
        return f"<Event {self.kind} {self.function.qualname} ts={self.ts} thread={self.thread}>"


@cython.freelist(256)
cdef class Sample:
    """One thread's stack at one sampler tick (sampling mode).  `ts` is ns since the trace
    started; `stack` is a tuple of Functions, root first (a stack cut at the maximum depth
    starts with the TRUNCATED marker); `idle` means the thread did not hold the GIL (waiting:
    in a blocking call, or for the GIL); `in_call` means its innermost Python frame was
    executing a call (with idle: blocked in a C call such as sleep or recv); `torn` means the
    stack moved while it was read and frames may be missing; `weight_ns` is the time the sample
    stands for (wall clock: since the previous tick; cpu clock: CPU time since the thread's
    previous sample)."""
    cdef readonly int64_t ts
    cdef readonly int thread
    cdef readonly tuple stack
    cdef readonly bint idle
    cdef readonly bint in_call
    cdef readonly bint torn
    cdef readonly uint64_t weight_ns

    def __repr__(self):
        leaf = self.stack[len(self.stack) - 1].qualname if self.stack else "-"
        return (f"<Sample ts={self.ts} thread={self.thread} {leaf} depth={len(self.stack)}"
                f"{' idle' if self.idle else ''}>")


cdef Function _make_marker():
    cdef Function f = Function.__new__(Function)
    f.id = 0
    f.name = f.qualname = "<truncated>"
    f.filename = f.module = ""
    f.lineno = 0
    f.is_c = False
    return f

#: The root of a sampled stack that was deeper than the maximum depth (its outer frames cut).
TRUNCATED = _make_marker()


# Ids are handed out one by one from 1 and defined in that order (only a failed allocation in the
# writer can skip one), so an id far beyond the definitions seen is damage and must not size an
# allocation.
cdef uint32_t MAX_ID_JUMP = 64


cdef inline str _text(ft_str s):
    return (<const char*>s.s)[:s.n].decode("utf-8", "replace")


cdef inline int64_t _tick_ns(uint64_t tick, uint64_t start_tick, double ns_per_tick):
    """ns since start_tick (negative before it): FORMAT.md section 4, Timestamps."""
    cdef int64_t delta = <int64_t>(tick - start_tick)
    return <int64_t>(<double>delta * ns_per_tick)


cdef inline double _clock_rate(double ns_per_tick, uint64_t start_tick, uint64_t start_mono,
                               double tick_hz, uint64_t tick, uint64_t mono):
    # ns = start_mono + (tick - start_tick) * rate, with the rate taken over the longest span
    # available; under 1 ms the header's calibrated rate is better.
    if tick > start_tick + <uint64_t>(tick_hz / 1000):
        return <double>(mono - start_mono) / <double>(tick - start_tick)
    return ns_per_tick


ORIGINS = {FT_ORIGIN_CAPTURE: "capture", FT_ORIGIN_FLIGHT: "flight", FT_ORIGIN_SERIES: "series"}


cdef dict _header_dict(ft_header* h):
    """The header as TraceFile.header shows it (the strings must still be readable)."""
    argv = (<const char*>h.command_line)[:h.command_line_size]
    return {
        "format_version": h.version,
        "python_version": (<const char*>h.python_version)[
            :h.python_version_size].decode("utf-8", "replace"),
        "python_version_hex": h.python_version_hex,
        "pid": h.pid,
        "mode": {FT_MODE_TRACE: "trace", FT_MODE_SAMPLE: "sample"}.get(h.mode, "unknown"),
        "c_calls": bool(h.flags & FT_HEADER_C_CALLS),
        "hook": HOOK_NAMES.get((h.flags >> FT_HEADER_HOOK_SHIFT) & 3, "unknown"),
        "hook_fallback": bool(h.flags & FT_HEADER_HOOK_FALLBACK),
        "clock": "tsc" if h.clock_kind == 2 else "monotonic",
        "tick_hz": h.tick_hz,
        "chunk_size": h.chunk_size,
        "buffer_size": h.buffer_size,
        "start_wall_ns": h.start_wall_ns,
        "start_monotonic_ns": h.start_mono_ns,
        # argv entries each end with a NUL
        "argv": [a.decode("utf-8", "replace") for a in argv[0:len(argv) - 1].split(b"\0")]
                if argv else [],
        "series_index": h.series_index,
        "series_id": h.series_id,
        "origin": ORIGINS.get(h.origin, "unknown"),
    }


def read_header(path):
    """The header of a trace file as TraceFile.header shows it, reading nothing else.  Raises
    FormatError as TraceFile() does for a bad header."""
    from fasttrace._errors import FormatError
    from fasttrace._files import open_trace
    cdef ft_rfile rf
    cdef ft_header h
    cdef ft_read_error err
    path = _os.fspath(path)
    fd, size = open_trace(path)
    try:
        ft_rfile_init(&rf, fd, size)
        try:
            if ft_rfile_header(&rf, &h, &err) < 0:
                raise FormatError(path, err.offset, err.reason.decode("utf-8", "replace"))
            return _header_dict(&h)
        finally:
            ft_rfile_free(&rf)
    finally:
        _os.close(fd)


def _scope_def(str text):
    """The SCOPE definition's JSON: a dict, or None if it is not a JSON object."""
    import json
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


cdef class TraceFile:
    """An open .ftrace file.  Construction validates every chunk's checksum and loads the
    definitions; events are decoded lazily by events().  The file is read with pread, never
    mapped, so a file that shrinks or is rewritten under its reader gives an error (or what was
    intact), never SIGBUS; every chunk is checked again when it is decoded."""
    cdef int _fd
    cdef uint64_t _size
    cdef ft_header _h
    cdef readonly str path
    cdef readonly dict header
    cdef readonly list functions          # index = function id (0 is None)
    cdef readonly dict threads            # id -> Thread
    cdef readonly bint truncated
    cdef readonly object damage           # str, or None
    cdef readonly bint complete           # a trailer was found
    cdef readonly object trailer_events
    cdef readonly object trailer_dropped
    cdef readonly uint64_t chunk_events   # sum of the chunk headers' record counts
    cdef readonly dict thread_records     # thread id -> records in its chunks
    cdef readonly object writer_error
    cdef readonly object lost_threads     # threads whose ring could not be allocated
    cdef list _hook_lost                  # (thread id, tick, what)
    cdef readonly object scope            # the capture's scope as given (a dict), or None
    cdef readonly list stacks             # sampling: index = stack id, tuples of Functions
    cdef readonly dict sampling           # sampling: rate_hz, clock, max_depth, stats; or None
    cdef list _sample_chunks              # (chunk offset, payload size, base_tick)
    cdef readonly list function_def_ends  # index = function id: file offset of its def's end
    cdef readonly list stack_def_ends     # index = stack id: file offset of its def's end
    cdef list _clock_pairs                # (tick, mono_ns) of CLOCK chunks and the trailer
    cdef readonly bytearray fid_kinds     # index = function id: 0 Python, 1 C, 0xFF undefined
    cdef list _chunks                     # (chunk offset, payload size, thread, base_tick)
    cdef uint32_t _max_thread
    cdef uint64_t _end_tick
    cdef double _ns_per_tick
    cdef uint64_t _clock_tick
    cdef uint64_t _clock_mono
    cdef int _iterating                   # live events() generators: close() must wait

    def __cinit__(self, path):
        self._fd = -1
        self.path = _os.fspath(path)
        self.functions = [None]
        self.function_def_ends = [None]
        self.stack_def_ends = [None]
        self._clock_pairs = []
        self.threads = {}
        self.fid_kinds = bytearray(b"\xff")
        self._chunks = []
        self._sample_chunks = []
        self.stacks = [()]
        self.sampling = None
        self.thread_records = {}
        self.damage = None
        self.lost_threads = 0
        self._hook_lost = []
        self.scope = None

    def __dealloc__(self):
        # C close: this can run during interpreter shutdown, when module globals are gone
        if self._fd >= 0:
            c_close(self._fd)
            self._fd = -1

    def __init__(self, path):
        from fasttrace._errors import FormatError
        cdef ft_read_error err
        cdef ft_rfile rf
        from fasttrace._files import open_trace
        self._fd, self._size = open_trace(self.path)
        ft_rfile_init(&rf, self._fd, self._size)
        try:
            if ft_rfile_header(&rf, &self._h, &err) < 0:
                raise FormatError(self.path, err.offset, err.reason.decode("utf-8", "replace"))
            self.header = _header_dict(&self._h)
            # the strings pointed into the read window
            self._h.command_line = self._h.python_version = NULL
            self._ns_per_tick = 1e9 / self._h.tick_hz
            self._clock_tick = self._h.start_tick
            self._clock_mono = self._h.start_mono_ns
            self._end_tick = self._h.start_tick
            self._scan(&rf, FormatError)
        finally:
            ft_rfile_free(&rf)

    cdef _scan(self, ft_rfile* rf, FormatError):
        cdef ft_read_error err
        cdef ft_chunk_header ch
        cdef const uint8_t* payload
        cdef uint64_t offset = self._h.first_chunk
        cdef int rc
        cdef uint64_t tick, mono
        cdef dict last_chunk = {}  # thread id -> index in _chunks of its last events chunk
        while True:
            rc = ft_rfile_chunk(rf, offset, &ch, &payload, &err)
            if rc == FT_READ_END:
                break
            if rc == FT_READ_TRUNCATED or rc == FT_READ_CHANGED:
                self.truncated = True
                self.damage = (f"damaged tail at byte {err.offset}: "
                               f"{err.reason.decode('utf-8', 'replace')}; "
                               f"the {offset} bytes before it were loaded")
                break
            if rc == FT_READ_CORRUPT:
                raise FormatError(self.path, err.offset, err.reason.decode("utf-8", "replace"))
            if ch.type == FT_CHUNK_EVENTS:
                if ch.thread == 0 or ch.thread > len(self.threads) + MAX_ID_JUMP:
                    raise FormatError(self.path, offset, f"events chunk with invalid thread id "
                                                         f"{ch.thread}")
                last_chunk[ch.thread] = len(self._chunks)
                self._chunks.append((offset, ch.payload_size, ch.thread, ch.base_tick))
                self.chunk_events += ch.records
                self.thread_records[ch.thread] = self.thread_records.get(ch.thread, 0) + ch.records
                if ch.thread > self._max_thread:
                    self._max_thread = ch.thread
                if ch.thread not in self.threads:
                    self._add_thread(ch.thread, None, None, f"thread-{ch.thread}")
            elif ch.type == FT_CHUNK_SAMPLES:
                self._sample_chunks.append((offset, ch.payload_size, ch.base_tick))
                self.chunk_events += ch.records
            elif ch.type == FT_CHUNK_DEFS:
                self._read_defs(payload, ch.payload_size, offset + FT_CHUNK_HEADER_SIZE,
                                FormatError)
            elif ch.type == FT_CHUNK_CLOCK:
                if ch.payload_size < 24:
                    raise FormatError(self.path, offset, "clock chunk too short")
                memcpy(&tick, payload, 8)
                memcpy(&mono, payload + 8, 8)
                self._add_clock(tick, mono)
            elif ch.type == FT_CHUNK_TRAILER:
                self._read_trailer(payload, ch.payload_size, offset, FormatError)
            offset += FT_CHUNK_HEADER_SIZE + ch.payload_size
        if not self.complete and not self.truncated:
            self.truncated = True
            self.damage = (f"no trailer after byte {offset}: the traced process did not stop "
                           f"the trace (killed or crashed); everything before it was loaded")
        if not self.complete:
            self._end_at_last_record(rf, last_chunk)

    cdef _end_at_last_record(self, ft_rfile* rf, dict last_chunk):
        """Without a trailer the trace ends at its last record, whichever thread wrote it: the
        last clock record can be a quarter of a second (or the whole trace) earlier."""
        cdef ft_read_error err
        cdef ft_chunk_header ch
        cdef const uint8_t* payload
        cdef uint64_t tick
        cdef size_t pos
        cdef ft_sample s
        candidates = [self._chunks[i] for i in last_chunk.values()]
        if self._sample_chunks:
            candidates.append(self._sample_chunks[len(self._sample_chunks) - 1])  # no wraparound
        for entry in candidates:
            offset = entry[0]
            if ft_rfile_chunk(rf, offset, &ch, &payload, &err) != FT_READ_OK:
                continue
            if ch.type == FT_CHUNK_EVENTS:
                ft_events_last_tick(payload, ch.payload_size, ch.base_tick, self._h.version,
                                    &tick)
            else:
                tick = ch.base_tick
                pos = 0
                while ft_next_sample(payload, ch.payload_size, &pos, 0, &tick, &s, &err) == 1:
                    pass
            if tick > self._end_tick:
                self._end_tick = tick

    cdef _add_clock(self, uint64_t tick, uint64_t mono):
        self._clock_pairs.append((tick, mono))
        self._ns_per_tick = _clock_rate(self._ns_per_tick, self._h.start_tick,
                                        self._h.start_mono_ns, self._h.tick_hz, tick, mono)
        if tick > self._end_tick:
            self._end_tick = tick

    cdef _read_trailer(self, const uint8_t* payload, uint32_t size, size_t offset, FormatError):
        cdef ft_trailer tr
        if size < sizeof(ft_trailer):
            raise FormatError(self.path, offset, "trailer chunk too short")
        memcpy(&tr, payload, sizeof(ft_trailer))
        self.complete = True
        self.trailer_events = tr.events
        self.trailer_dropped = tr.dropped
        self.writer_error = tr.error or None
        self.lost_threads = tr.lost_threads
        self._add_clock(tr.stop_tick, tr.stop_mono_ns)
        self._end_tick = tr.stop_tick

    cdef _add_thread(self, uint64_t tid, ident, native_id, str name):
        cdef Thread t = Thread.__new__(Thread)
        t.id = <int>tid
        t.ident = ident
        t.native_id = native_id
        t.name = name
        self.threads[t.id] = t
        if tid > self._max_thread:
            self._max_thread = <uint32_t>tid

    cdef _read_defs(self, const uint8_t* payload, uint32_t size, size_t base, FormatError):
        cdef ft_read_error err
        cdef ft_def d
        cdef size_t pos = 0
        cdef int rc
        cdef Function f
        cdef Thread t
        cdef size_t start
        while True:
            start = pos
            rc = ft_next_def(payload, size, &pos, base, &d, &err)
            if rc == 0:
                break
            if rc < 0:
                raise FormatError(self.path, err.offset, err.reason.decode("utf-8", "replace"))
            if d.tag == FT_DEF_FUNCTION:
                f = Function.__new__(Function)
                f.id = <int>d.id
                f.is_c = bool(d.flags & FT_FUNC_IS_C)
                f.lineno = d.lineno
                f.name = _text(d.name)
                f.qualname = _text(d.qualname)
                f.filename = _text(d.filename)
                f.module = _text(d.module)
                if d.id > len(self.functions) + MAX_ID_JUMP:
                    raise FormatError(self.path, base + pos,
                                      f"function id {d.id} out of sequence")
                while len(self.functions) <= d.id:
                    self.functions.append(None)
                    self.function_def_ends.append(None)
                    self.fid_kinds.append(0xFF)
                if self.functions[d.id] is not None:
                    raise FormatError(self.path, base + pos, f"function id {d.id} defined twice")
                self.functions[d.id] = f
                self.function_def_ends[d.id] = base + pos
                self.fid_kinds[d.id] = 1 if f.is_c else 0
            elif d.tag == FT_DEF_THREAD:
                if d.id > len(self.threads) + MAX_ID_JUMP:
                    raise FormatError(self.path, base + pos, f"thread id {d.id} out of sequence")
                self._add_thread(d.id, d.ident, d.native_id, _text(d.name) or f"thread-{d.id}")
            elif d.tag == FT_DEF_THREAD_NAME:
                if d.id in self.threads and d.name.n > 0:
                    t = self.threads[d.id]
                    t.name = _text(d.name)
            elif d.tag == FT_DEF_STACK:
                self._read_stack_def(&d, base + pos, FormatError)
            elif d.tag == FT_DEF_SAMPLING:
                if d.rate == 0:
                    raise FormatError(self.path, base + start, "sampling definition with rate 0")
                self.sampling = {"rate_hz": d.rate,
                                 "clock": "cpu" if d.clock == FT_CLOCK_CPU else "wall",
                                 "max_depth": d.max_depth, "stats": None}
            elif d.tag == FT_DEF_HOOK_LOST:
                self._hook_lost.append((d.id, d.tick, _text(d.name)))
            elif d.tag == FT_DEF_SCOPE:
                self.scope = _scope_def(_text(d.name))
                if self.scope is None:
                    raise FormatError(self.path, base + start,
                                      "scope definition is not a JSON object")
            elif d.tag == FT_DEF_SAMPLER_STATS:
                if self.sampling is None:
                    raise FormatError(self.path, base + start,
                                      "sampler statistics before the sampling definition")
                self._read_sampler_stats(&d)

    cdef _read_stack_def(self, ft_def* d, size_t end_offset, FormatError):
        cdef uint64_t fids[1024]
        cdef size_t n, i
        if d.id != <uint64_t>len(self.stacks):
            raise FormatError(self.path, end_offset, f"stack id {d.id} out of sequence")
        if d.count > 1024:
            raise FormatError(self.path, end_offset, f"stack {d.id} is deeper than 1024 frames")
        n = ft_def_list(d, fids, 1024)
        frames = []
        if d.flags & FT_STACK_TRUNCATED:
            frames.append(TRUNCATED)
        for i in range(n):
            if fids[i] == 0 or fids[i] >= <uint64_t>len(self.functions) or \
                    self.functions[fids[i]] is None:
                raise FormatError(self.path, end_offset,
                                  f"stack {d.id} uses function id {fids[i]} before its definition")
            frames.append(self.functions[fids[i]])
        self.stacks.append(tuple(frames))
        self.stack_def_ends.append(end_offset)

    cdef _read_sampler_stats(self, ft_def* d):
        cdef uint64_t values[32]
        cdef size_t n = ft_def_list(d, values, 32)
        if self.sampling is None:
            self.sampling = {"rate_hz": 0, "clock": "wall", "max_depth": 0, "stats": None}
        self.sampling["stats"] = {SAMPLER_STATS[i]: values[i]
                                  for i in range(min(n, len(SAMPLER_STATS)))}

    cdef inline int64_t _ns(self, uint64_t tick):
        return _tick_ns(tick, self._h.start_tick, self._ns_per_tick)

    @property
    def version(self):
        return self._h.version

    @property
    def series_index(self):
        return self._h.series_index

    @property
    def series_id(self):
        return self._h.series_id

    @property
    def duration_ns(self):
        return self._ns(self._end_tick)

    @property
    def hook_lost(self):
        """(thread id, ts, what) for each thread whose hook another tool replaced: nothing of
        that thread after ts was recorded."""
        return [(tid, self._ns(tick), what) for tid, tick, what in self._hook_lost]

    @property
    def hook_lost_ticks(self):
        """hook_lost with ticks instead of ts: (thread id, tick, what)."""
        return list(self._hook_lost)

    def timeline(self):
        """(start_tick, ns_per_tick, end_tick): what turns the file's ticks into Event.ts."""
        return self._h.start_tick, self._ns_per_tick, self._end_tick

    def events(self, thread=None, bint gaps=False):
        """Events chunk by chunk: in order within each thread; threads interleave by chunk.
        With gaps=True, a gap (kind "gap") is yielded where events were dropped."""
        return _EventIter([self], [False], self.functions, self.fid_kinds, self._h.start_tick,
                          self._ns_per_tick, self._end_tick,
                          -1 if thread is None else int(thread), gaps)

    def samples(self, thread=None):
        """Samples in file order (time order: one sampler writes them all)."""
        return _SampleIter([self], self.stacks, self.threads, self._h.start_tick,
                           self._ns_per_tick, -1 if thread is None else int(thread))

    def close(self):
        if self._iterating:
            raise RuntimeError("cannot close a trace while events() is being iterated")
        if self._fd >= 0:
            c_close(self._fd)
            self._fd = -1

    cdef const uint8_t* _reread(self, ft_rfile* rf, uint64_t offset, uint32_t size,
                                uint8_t type, uint32_t thread, uint64_t base_tick) except NULL:
        """The payload of a chunk the scan validated, read and checked again: the file may have
        been truncated or rewritten since (another trace written to the same path)."""
        cdef ft_read_error err
        cdef ft_chunk_header ch
        cdef const uint8_t* payload = NULL
        cdef int rc = ft_rfile_chunk(rf, offset, &ch, &payload, &err)
        if rc == FT_READ_OK and ch.type == type and ch.payload_size == size and \
                (ch.thread == thread or type == FT_CHUNK_SAMPLES) and ch.base_tick == base_tick:
            return payload
        from fasttrace._errors import FormatError
        why = (err.reason.decode("utf-8", "replace") if rc != FT_READ_OK
               else "it holds a different chunk now")
        raise FormatError(self.path, offset,
                          f"the file changed after it was loaded ({why}); the events before "
                          "this chunk were read")


def series_timeline(list files):
    """(start_tick, ns_per_tick, end_tick) of a series of TraceFiles, in order: ticks count
    from the first file's start; the rate is refined by every CLOCK and TRAILER pair of every
    file in file order (they share the process's tick clock); the series ends where its last
    file does (FORMAT.md section 9)."""
    cdef TraceFile first = files[0]
    cdef TraceFile last = files[len(files) - 1]
    cdef TraceFile f
    cdef double npt = 1e9 / first._h.tick_hz
    cdef uint64_t tick, mono
    for f in files:
        for tick, mono in f._clock_pairs:
            npt = _clock_rate(npt, first._h.start_tick, first._h.start_mono_ns,
                              first._h.tick_hz, tick, mono)
    return first._h.start_tick, npt, last._end_tick


def tick_ns(uint64_t tick, uint64_t start_tick, double ns_per_tick):
    """ns since start_tick, as events get it (negative before it)."""
    return _tick_ns(tick, start_tick, ns_per_tick)


def series_events(list files, list breaks, list functions, bytearray fid_kind,
                  uint64_t start_tick, double ns_per_tick, uint64_t end_tick, thread=None,
                  bint gaps=False):
    """events() of a series of TraceFiles decoded as one trace: each thread's state carries
    from file to file; breaks[i] says a discontinuity comes before files[i].  functions and
    fid_kind: the merged tables (index = function id)."""
    return _EventIter(files, breaks, functions, fid_kind, start_tick, ns_per_tick, end_tick,
                      -1 if thread is None else int(thread), gaps)


def series_samples(list files, list stacks, dict threads, uint64_t start_tick,
                   double ns_per_tick, thread=None):
    """samples() of a series of TraceFiles: stacks is the merged table (index = stack id);
    threads met in samples only are added to `threads`."""
    return _SampleIter(files, stacks, threads, start_tick, ns_per_tick,
                       -1 if thread is None else int(thread))


cdef class _EventIter:
    """The iterator behind TraceFile.events() and series_events(): decodes one chunk at a time
    into a C buffer and hands out Events from it (an iterator type, cheaper per event than a
    generator).  The files are decoded one after the other with one decoder per thread."""
    cdef list files
    cdef list breaks
    cdef TraceFile f          # the file being decoded
    cdef size_t seg           # index of the next file in files
    cdef int want
    cdef bint gaps
    cdef ft_thread_decoder* decs
    cdef size_t n_decs
    cdef ft_event_buf buf
    cdef ft_rfile rf
    cdef bint rf_open
    cdef ft_functions_view fv
    cdef const uint8_t[::1] kinds
    cdef list functions
    cdef uint64_t start_tick
    cdef double ns_per_tick
    cdef uint64_t end_tick
    cdef size_t i             # next event in buf
    cdef size_t chunk         # next chunk of f to decode
    cdef size_t closing       # next thread whose open frames to close, after the chunks
    cdef uint32_t tid         # thread of the events in buf
    cdef bint live

    def __cinit__(self, list files, list breaks, list functions, bytearray fid_kind,
                  uint64_t start_tick, double ns_per_tick, uint64_t end_tick, int want,
                  bint gaps):
        cdef TraceFile f
        cdef uint32_t max_thread = 0
        for f in files:
            if f._fd < 0:
                raise ValueError(f"{f.path}: the trace is closed")
            if f._max_thread > max_thread:
                max_thread = f._max_thread
        self.files = files
        self.breaks = breaks
        self.want = want
        self.gaps = gaps
        self.n_decs = <size_t>max_thread + 1
        self.decs = <ft_thread_decoder*>calloc(self.n_decs, sizeof(ft_thread_decoder))
        if self.decs == NULL:
            raise MemoryError()
        self.kinds = fid_kind
        self.fv.fid_kind = &self.kinds[0]
        self.fv.n_fids = <uint32_t>len(fid_kind)
        self.functions = functions
        self.start_tick = start_tick
        self.ns_per_tick = ns_per_tick
        self.end_tick = end_tick
        self.closing = 1
        for f in files:
            f._iterating += 1
        self.live = True

    def __dealloc__(self):
        self._finish()

    cdef void _finish(self):
        """Frees the decoding state and lets the files be closed; the iterator is done."""
        cdef size_t k
        cdef TraceFile f
        if self.decs != NULL:
            for k in range(self.n_decs):
                ft_thread_decoder_free(&self.decs[k])
            free(self.decs)
            self.decs = NULL
        if self.live:
            self.live = False
            for f in self.files:
                f._iterating -= 1
        ft_event_buf_free(&self.buf)
        if self.rf_open:
            ft_rfile_free(&self.rf)
            self.rf_open = False
        self.i = 0

    def __iter__(self):
        return self

    cdef bint _next_file(self) except -1:
        """Moves to the next file; False after the last.  A discontinuity before it breaks
        every thread's decoding state."""
        cdef size_t k
        if self.rf_open:
            ft_rfile_free(&self.rf)
            self.rf_open = False
        if self.seg >= len(self.files):
            self.f = None
            return False
        self.f = <TraceFile>self.files[self.seg]
        if self.breaks[self.seg]:
            for k in range(self.n_decs):
                ft_thread_decoder_break(&self.decs[k])
        self.seg += 1
        self.chunk = 0
        ft_rfile_init(&self.rf, self.f._fd, self.f._size)
        self.rf_open = True
        return True

    cdef bint _refill(self) except -1:
        """Decodes the next wanted chunk (or, after the last, the end-of-trace closes of the
        next thread) into buf.  Returns False when there is nothing left."""
        cdef ft_read_error err
        cdef size_t off, size
        cdef uint32_t tid
        cdef uint64_t base_tick, end_tick
        cdef const uint8_t* payload
        cdef TraceFile f
        if self.decs == NULL:
            return False
        self.buf.n = 0
        self.i = 0
        while self.f is not None or self._next_file():
            f = self.f
            if self.chunk >= len(f._chunks):
                if not self._next_file():
                    break
                continue
            off, size, tid, base_tick = f._chunks[self.chunk]
            self.chunk += 1
            if self.want >= 0 and <int>tid != self.want:
                continue
            try:
                payload = f._reread(&self.rf, off, <uint32_t>size, FT_CHUNK_EVENTS, tid,
                                    base_tick)
            except BaseException:
                self._finish()
                raise
            if ft_decode_events(&self.decs[tid], &self.fv, payload, size,
                                off + FT_CHUNK_HEADER_SIZE, base_tick, f._h.version, &self.buf,
                                &err) < 0:
                self._finish()
                from fasttrace._errors import FormatError
                raise FormatError(f.path, err.offset, err.reason.decode("utf-8", "replace"))
            self.tid = tid
            return True
        # Frames still open when the trace ended close at its end.
        while self.closing < self.n_decs:
            tid = <uint32_t>self.closing
            self.closing += 1
            if self.want >= 0 and <int>tid != self.want:
                continue
            end_tick = max(self.end_tick, self.decs[tid].last_tick)
            if ft_close_open(&self.decs[tid], &self.fv, end_tick, &self.buf) < 0:
                self._finish()
                raise MemoryError()
            if self.buf.n:
                self.tid = tid
                return True
        self._finish()
        return False

    def __next__(self):
        cdef ft_event* ev
        cdef Event e
        while True:
            if self.i >= self.buf.n and not self._refill():
                raise StopIteration
            if self.i >= self.buf.n:
                continue
            ev = &self.buf.ev[self.i]
            self.i += 1
            if ev.kind == FT_EV_GAP and not self.gaps:
                continue
            e = Event.__new__(Event)
            e.kind = <str>KINDS[ev.kind]
            e.ts = _tick_ns(ev.tick, self.start_tick, self.ns_per_tick)
            e.thread = <int>self.tid
            e.synthetic = ev.synthetic
            if ev.kind == FT_EV_GAP:
                e.dropped = ev.aux
                e.start_ts = _tick_ns(ev.aux2, self.start_tick, self.ns_per_tick)
            else:
                e.function = <Function>self.functions[ev.fid]
            return e


cdef class _SampleIter:
    """The iterator behind TraceFile.samples() and series_samples(): decodes SAMPLES chunks one
    record at a time, file after file."""
    cdef list files
    cdef TraceFile f       # the file being read
    cdef size_t seg        # index of the next file in files
    cdef list stacks
    cdef dict threads
    cdef uint64_t start_tick
    cdef double ns_per_tick
    cdef int want
    cdef size_t chunk      # next chunk of f
    cdef size_t pos        # in the current chunk
    cdef size_t off, size  # current chunk payload
    cdef uint64_t tick
    cdef bint open_chunk
    cdef bint live
    cdef ft_rfile rf
    cdef bint rf_open
    cdef const uint8_t* payload

    def __cinit__(self, list files, list stacks, dict threads, uint64_t start_tick,
                  double ns_per_tick, int want):
        cdef TraceFile f
        for f in files:
            if f._fd < 0:
                raise ValueError(f"{f.path}: the trace is closed")
        self.files = files
        self.stacks = stacks
        self.threads = threads
        self.start_tick = start_tick
        self.ns_per_tick = ns_per_tick
        self.want = want
        for f in files:
            f._iterating += 1
        self.live = True

    def __dealloc__(self):
        self._finish()

    cdef void _finish(self):
        cdef TraceFile f
        if self.live:
            self.live = False
            for f in self.files:
                f._iterating -= 1
        if self.rf_open:
            ft_rfile_free(&self.rf)
            self.rf_open = False

    def __iter__(self):
        return self

    def __next__(self):
        cdef ft_read_error err
        cdef ft_sample s
        cdef Sample out
        cdef TraceFile f
        cdef int rc
        cdef uint64_t us
        cdef Thread t
        while self.live:
            if not self.open_chunk:
                if self.f is None or self.chunk >= len(self.f._sample_chunks):
                    if self.rf_open:
                        ft_rfile_free(&self.rf)
                        self.rf_open = False
                    if self.seg >= len(self.files):
                        self._finish()
                        break
                    self.f = <TraceFile>self.files[self.seg]
                    self.seg += 1
                    self.chunk = 0
                    ft_rfile_init(&self.rf, self.f._fd, self.f._size)
                    self.rf_open = True
                    continue
                f = self.f
                self.off, self.size, self.tick = f._sample_chunks[self.chunk]
                self.chunk += 1
                self.pos = 0
                try:
                    self.payload = f._reread(&self.rf, self.off, <uint32_t>self.size,
                                             FT_CHUNK_SAMPLES, 0, self.tick)
                except BaseException:
                    self._finish()
                    raise
                self.off += FT_CHUNK_HEADER_SIZE
                self.open_chunk = True
            f = self.f
            rc = ft_next_sample(self.payload, self.size, &self.pos, self.off, &self.tick,
                                &s, &err)
            if rc == 0:
                self.open_chunk = False
                continue
            if rc < 0 or s.stack >= <uint64_t>len(self.stacks):
                self._finish()
                from fasttrace._errors import FormatError
                if rc < 0:
                    raise FormatError(f.path, err.offset, err.reason.decode("utf-8", "replace"))
                raise FormatError(f.path, self.off + self.pos,
                                  f"sample uses stack id {s.stack} before its definition")
            if self.want >= 0 and <int>s.thread != self.want:
                continue
            if s.thread not in self.threads:
                t = Thread.__new__(Thread)
                t.id = <int>s.thread
                t.ident = t.native_id = None
                t.name = f"thread-{s.thread}"
                self.threads[t.id] = t
            out = Sample.__new__(Sample)
            out.ts = _tick_ns(s.tick, self.start_tick, self.ns_per_tick)
            out.thread = <int>s.thread
            out.stack = <tuple>self.stacks[s.stack]
            out.idle = (s.state & FT_SAMPLE_IDLE) != 0
            out.in_call = (s.state & FT_SAMPLE_IN_CALL) != 0
            out.torn = (s.state & FT_SAMPLE_TORN) != 0
            us = s.weight_us
            # saturated, as _pyreader does: only a damaged file has a weight that overflows
            out.weight_ns = us * 1000 if us <= 18446744073709551u else 18446744073709551615u
            return out
        raise StopIteration
include "_fold.pxi"

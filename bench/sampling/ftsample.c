/*
 * _ftsample: throw-away prototype of fasttrace's sampling mode (issue 4).
 * Not part of fasttrace. Build with bench/sampling/build.sh (CPython 3.12 / 3.13, GIL builds).
 *
 * A native pthread wakes at a (jittered) interval and walks every thread state of the main
 * interpreter, reading tstates and _PyInterpreterFrame chains with process_vm_readv() on our
 * own pid, so a torn or freed pointer gives EFAULT instead of a crash.  It copies code object
 * pointers into a flat buffer; names are resolved at stop(), under the GIL.
 *
 * mode "nogil": the sampler never takes the GIL (the candidate).
 * mode "gil":   the sampler takes the GIL (PyEval_RestoreThread) around each walk (the
 *               baseline that the research notes say caps at ~200 Hz and is biased).
 */
#define _GNU_SOURCE
#include <Python.h>
#ifndef Py_BUILD_CORE
#define Py_BUILD_CORE 1
#endif
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
#undef _PyGC_FINALIZED
#endif
#include "internal/pycore_frame.h"
#include "internal/pycore_interp.h"
#include "internal/pycore_gil.h"

#ifndef _Py_THREAD_ATTACHED
#define _Py_THREAD_ATTACHED 1 /* internal/pycore_pystate.h (3.13) */
#endif

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#if PY_VERSION_HEX < 0x030C0000 || PY_VERSION_HEX >= 0x030E0000
#error "prototype supports 3.12 and 3.13 only"
#endif
#ifdef Py_GIL_DISABLED
#error "GIL builds only"
#endif

/* ---- per-version access (what would go into src/ft_compat.h) ---------------------------- */
#if PY_VERSION_HEX >= 0x030D0000
#define FT_FRAME_CODE(f) ((f)->f_executable)
#define FT_FRAME_INSTR(f) ((f)->instr_ptr)
#else
#define FT_FRAME_CODE(f) ((PyObject *)(f)->f_code)
#define FT_FRAME_INSTR(f) ((f)->prev_instr)
#endif
/* bytes of a frame we need: up to and including `owner` */
#define FT_FRAME_PREFIX (offsetof(_PyInterpreterFrame, owner) + 1)

/* ---- safe reads --------------------------------------------------------------------------- */
static pid_t g_pid;
static uint64_t g_reads, g_read_fail;

static int safe_read(void *dst, const void *src, size_t n) {
    struct iovec l = {dst, n}, r = {(void *)src, n};
    g_reads++;
    ssize_t got = process_vm_readv(g_pid, &l, 1, &r, 1, 0);
    if (got != (ssize_t)n) {
        g_read_fail++;
        return -1;
    }
    return 0;
}

static inline uint64_t now_ns(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* ---- state ------------------------------------------------------------------------------- */
#define MAX_DEPTH 512
#define FL_HOLDS_GIL 1u      /* thread held the GIL at the sample */
#define FL_TOP_CALL 2u       /* top Python frame's current instruction is a CALL* opcode */
#define FL_TORN 4u           /* walk ended on a failed read / bad owner / non-code object */
#define FL_TRUNC 8u          /* deeper than MAX_DEPTH */
#define FL_ATTACHED 16u      /* 3.13: tstate->state == _Py_THREAD_ATTACHED */
#define FL_HOLDS_GIL_BIT 32u /* 3.13: tstate->_status.holds_gil */

static PyInterpreterState *g_interp;
static struct _gil_runtime_state *g_gil;
static unsigned char g_is_call[256];
static pthread_t g_thread;
static volatile int g_stop, g_running;
static int g_mode_gil, g_jitter, g_snapshot, g_fifo, g_fifo_ok;
#define SNAP_MAX (256 * 1024)
static char g_snap[SNAP_MAX];
static uint64_t g_snap_reads, g_retries, g_retry_ok;
static double g_interval_ns;
static PyThreadState *g_sampler_ts; /* gil mode only */
static PyGILState_STATE g_gilstate;

static uint64_t *g_buf;
static size_t g_cap, g_len;
static uint64_t g_ticks, g_thread_samples, g_torn, g_trunc, g_bad_code, g_bad_owner, g_overflow,
    g_sampler_wall_ns, g_late;
static uint64_t g_gil_disagree; /* 3.13: holds_gil bit vs gil->last_holder disagree */
static uint64_t g_t_start, g_t_stop, g_sampler_cpu_ns;

/* direct-mapped cache of pointers already validated as code objects */
#define CODE_CACHE 4096
static uintptr_t g_code_cache[CODE_CACHE];

static int is_code(PyObject *p) {
    uintptr_t h = ((uintptr_t)p >> 4) & (CODE_CACHE - 1);
    if (g_code_cache[h] == (uintptr_t)p) return 1;
    PyObject hdr;
    if (safe_read(&hdr, p, sizeof hdr) < 0) return 0;
    if (Py_TYPE(&hdr) != &PyCode_Type) return 0;
    g_code_cache[h] = (uintptr_t)p;
    return 1;
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static inline double rnd01(void) { /* xorshift64* */
    g_rng ^= g_rng >> 12; g_rng ^= g_rng << 25; g_rng ^= g_rng >> 27;
    return (double)((g_rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* record: [ts_ns, native_tid, flags | depth<<32, code ptrs (innermost first)...] */
static int sample_thread(PyThreadState *ts_addr, const PyThreadState *ts, PyThreadState *holder,
                          int locked, uint64_t t, int retry) {
    uint64_t flags = 0;
    _PyInterpreterFrame *fp;
#if PY_VERSION_HEX >= 0x030D0000
    fp = ts->current_frame;
    if (ts->state == _Py_THREAD_ATTACHED) flags |= FL_ATTACHED;
    if (ts->_status.holds_gil) flags |= FL_HOLDS_GIL_BIT;
#else
    _PyCFrame cf;
    if (ts->cframe == NULL) return 0;
    if (safe_read(&cf, ts->cframe, sizeof cf) < 0) return 0;
    fp = cf.current_frame;
#endif
    if (locked && holder == ts_addr) flags |= FL_HOLDS_GIL;
#if PY_VERSION_HEX >= 0x030D0000
    if (!!(flags & FL_HOLDS_GIL) != !!(flags & FL_HOLDS_GIL_BIT)) g_gil_disagree++;
#endif
    if (fp == NULL) return 0; /* no Python frames: idle thread */
    /* snapshot mode: copy the live part of the current data-stack chunk in one read, so most
       frames come from one consistent-ish copy instead of one syscall each */
    char *snap_lo = NULL, *snap_hi = NULL;
    if (g_snapshot && ts->datastack_chunk && ts->datastack_top) {
        char *lo = (char *)ts->datastack_chunk, *hi = (char *)ts->datastack_top;
        if (hi > lo && hi - lo <= SNAP_MAX && safe_read(g_snap, lo, hi - lo) == 0) {
            snap_lo = lo; snap_hi = hi; g_snap_reads++;
        }
    }
    if (g_len + 3 + MAX_DEPTH > g_cap) { g_overflow++; return 0; }
    uint64_t *rec = g_buf + g_len;
    uint64_t *codes = rec + 3;
    int depth = 0, top_done = 0;
    while (fp != NULL) {
        if (depth >= MAX_DEPTH) { flags |= FL_TRUNC; g_trunc++; break; }
        union { _PyInterpreterFrame f; char raw[FT_FRAME_PREFIX]; } u;
        if (snap_lo && (char *)fp >= snap_lo && (char *)fp + FT_FRAME_PREFIX <= snap_hi)
            memcpy(&u, g_snap + ((char *)fp - snap_lo), FT_FRAME_PREFIX);
        else if (safe_read(&u, fp, FT_FRAME_PREFIX) < 0) { flags |= FL_TORN; break; }
        char owner = u.f.owner;
        if (owner < 0 || owner > FRAME_OWNED_BY_CSTACK) { flags |= FL_TORN; g_bad_owner++; break; }
        if (owner != FRAME_OWNED_BY_CSTACK) {
            PyObject *code = FT_FRAME_CODE(&u.f);
            if (code != NULL && is_code(code)) {
                if (!top_done) {
                    unsigned char op[2];
                    if (FT_FRAME_INSTR(&u.f) && safe_read(op, FT_FRAME_INSTR(&u.f), 2) == 0 &&
                        g_is_call[op[0]])
                        flags |= FL_TOP_CALL;
                    top_done = 1;
                }
                codes[depth++] = (uint64_t)(uintptr_t)code;
            } else {
#if PY_VERSION_HEX >= 0x030D0000
                if (code != Py_None)
#endif
                { flags |= FL_TORN; g_bad_code++; break; }
            }
        }
        fp = u.f.previous;
    }
    if (flags & FL_TORN) {
        if (retry) return 1; /* caller re-reads the tstate and walks again */
        g_torn++;
    }
    rec[0] = t;
    rec[1] = ts->native_thread_id;
    rec[2] = flags | ((uint64_t)depth << 32);
    g_len += 3 + depth;
    g_thread_samples++;
    return 0;
}

static void sample_all(void) {
    uint64_t t = now_ns(CLOCK_MONOTONIC);
    struct _gil_runtime_state gil;
    PyThreadState *holder = NULL;
    int locked = 0;
    if (safe_read(&gil, g_gil, sizeof gil) == 0) {
#if PY_VERSION_HEX >= 0x030D0000
        holder = gil.last_holder;
        locked = gil.locked;
#else
        holder = (PyThreadState *)gil.last_holder._value;
        locked = gil.locked._value;
#endif
    }
    PyThreadState *tsp;
    if (safe_read(&tsp, &g_interp->threads.head, sizeof tsp) < 0) return;
    int n = 0;
    while (tsp != NULL && n++ < 1024) {
        PyThreadState ts;
        if (safe_read(&ts, tsp, sizeof ts) < 0) { g_torn++; break; }
        if (tsp != g_sampler_ts && sample_thread(tsp, &ts, holder, locked, t, g_snapshot)) {
            g_retries++;
            PyThreadState ts2;
            if (safe_read(&ts2, tsp, sizeof ts2) == 0) {
                uint64_t before = g_torn;
                sample_thread(tsp, &ts2, holder, locked, t, 0);
                if (g_torn == before) g_retry_ok++;
            }
        }
        tsp = ts.next;
    }
    g_ticks++;
}

static void *sampler_main(void *arg) {
    (void)arg;
    if (g_fifo) { /* real-time priority so the sampler preempts a CPU-bound thread on a busy box */
        struct sched_param sp = {.sched_priority = 1};
        g_fifo_ok = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
    }
    if (g_mode_gil) {
        g_gilstate = PyGILState_Ensure();
        g_sampler_ts = PyThreadState_Get();
        PyEval_SaveThread();
    }
    uint64_t next = now_ns(CLOCK_MONOTONIC);
    while (!g_stop) {
        double iv = g_jitter ? g_interval_ns * (0.5 + rnd01()) : g_interval_ns;
        next += (uint64_t)iv;
        struct timespec ts = {(time_t)(next / 1000000000ull), (long)(next % 1000000000ull)};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        if (g_stop) break;
        if (g_mode_gil) PyEval_RestoreThread(g_sampler_ts);
        uint64_t t0 = now_ns(CLOCK_MONOTONIC);
        sample_all();
        uint64_t t1 = now_ns(CLOCK_MONOTONIC);
        if (g_mode_gil) PyEval_SaveThread();
        g_sampler_wall_ns += t1 - t0;
        if (t1 > next + (uint64_t)g_interval_ns) { g_late++; next = t1; } /* no catch-up bursts */
    }
    g_sampler_cpu_ns = now_ns(CLOCK_THREAD_CPUTIME_ID);
    if (g_mode_gil) {
        PyEval_RestoreThread(g_sampler_ts);
        PyGILState_Release(g_gilstate);
    }
    return NULL;
}

/* ---- Python API -------------------------------------------------------------------------- */
static PyObject *py_start(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"rate", "call_opcodes", "mode", "jitter", "buffer_words", "snapshot", "fifo", NULL};
    double rate = 100;
    Py_buffer calls = {0};
    const char *mode = "nogil";
    int jitter = 1;
    Py_ssize_t words = 16 * 1024 * 1024;
    int snapshot = 0, fifo = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "dy*|spnpp", kwlist, &rate, &calls, &mode, &jitter,
                                     &words, &snapshot, &fifo))
        return NULL;
    if (g_running) { PyBuffer_Release(&calls); return PyErr_Format(PyExc_RuntimeError, "running"); }
    memset(g_is_call, 0, sizeof g_is_call);
    memcpy(g_is_call, calls.buf, calls.len < 256 ? calls.len : 256);
    PyBuffer_Release(&calls);
    g_pid = getpid();
    g_interp = PyInterpreterState_Get();
    g_gil = g_interp->ceval.gil;
    g_mode_gil = strcmp(mode, "gil") == 0;
    g_jitter = jitter;
    g_snapshot = snapshot;
    g_fifo = fifo;
    g_fifo_ok = 0;
    g_snap_reads = g_retries = g_retry_ok = 0;
    g_interval_ns = 1e9 / rate;
    free(g_buf);
    g_cap = (size_t)words;
    g_buf = malloc(g_cap * sizeof(uint64_t));
    if (!g_buf) return PyErr_NoMemory();
    g_len = 0;
    g_ticks = g_thread_samples = g_torn = g_trunc = g_bad_code = g_bad_owner = g_overflow = 0;
    g_sampler_wall_ns = g_late = g_reads = g_read_fail = g_gil_disagree = 0;
    g_sampler_ts = NULL;
    memset(g_code_cache, 0, sizeof g_code_cache);
    g_stop = 0;
    g_t_start = now_ns(CLOCK_MONOTONIC);
    if (pthread_create(&g_thread, NULL, sampler_main, NULL) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    g_running = 1;
    Py_RETURN_NONE;
}

static PyObject *resolve(PyObject *cache, uint64_t p) {
    PyObject *key = PyLong_FromUnsignedLongLong(p);
    if (!key) return NULL;
    PyObject *v = PyDict_GetItemWithError(cache, key);
    if (v) { Py_DECREF(key); return Py_NewRef(v); }
    PyCodeObject *co = (PyCodeObject *)(uintptr_t)p;
    PyObject hdr;
    PyObject *q = NULL, *fn = NULL;
    /* the code object may have died since the sample: validate with safe reads first */
    if (safe_read(&hdr, co, sizeof hdr) == 0 && Py_TYPE(&hdr) == &PyCode_Type &&
        safe_read(&q, &co->co_qualname, sizeof q) == 0 && safe_read(&fn, &co->co_filename, sizeof fn) == 0 &&
        safe_read(&hdr, q, sizeof hdr) == 0 && Py_TYPE(&hdr) == &PyUnicode_Type &&
        safe_read(&hdr, fn, sizeof hdr) == 0 && Py_TYPE(&hdr) == &PyUnicode_Type)
        v = PyUnicode_FromFormat("%U (%U:%d)", q, fn, co->co_firstlineno);
    else
        v = PyUnicode_FromString("<dead code object>");
    if (v) PyDict_SetItem(cache, key, v);
    Py_DECREF(key);
    return v;
}

static PyObject *py_stop(PyObject *self, PyObject *args) {
    int want = 1;
    if (!PyArg_ParseTuple(args, "|p", &want)) return NULL;
    if (!g_running) return PyErr_Format(PyExc_RuntimeError, "not running");
    g_stop = 1;
    Py_BEGIN_ALLOW_THREADS
    pthread_join(g_thread, NULL);
    Py_END_ALLOW_THREADS
    g_running = 0;
    g_t_stop = now_ns(CLOCK_MONOTONIC);
    PyObject *samples = NULL, *cache = NULL;
    if (want) {
        samples = PyList_New(0);
        cache = PyDict_New();
        if (!samples || !cache) goto fail;
        size_t i = 0;
        while (i < g_len) {
            uint64_t t = g_buf[i], tid = g_buf[i + 1], fl = g_buf[i + 2];
            int depth = (int)(fl >> 32);
            PyObject *stack = PyTuple_New(depth);
            if (!stack) goto fail;
            for (int d = 0; d < depth; d++) {
                PyObject *name = resolve(cache, g_buf[i + 3 + d]);
                if (!name) { Py_DECREF(stack); goto fail; }
                PyTuple_SET_ITEM(stack, d, name);
            }
            PyObject *rec = Py_BuildValue("KKIN", (unsigned long long)t, (unsigned long long)tid,
                                          (unsigned)(fl & 0xffffffffu), stack);
            if (!rec || PyList_Append(samples, rec) < 0) { Py_XDECREF(rec); goto fail; }
            Py_DECREF(rec);
            i += 3 + depth;
        }
        Py_CLEAR(cache);
    }
    PyObject *stats = Py_BuildValue(
        "{s:d,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:i}",
        "duration_s", (g_t_stop - g_t_start) / 1e9, "ticks", g_ticks, "thread_samples",
        g_thread_samples, "torn", g_torn, "truncated", g_trunc, "bad_code", g_bad_code,
        "bad_owner", g_bad_owner, "overflow", g_overflow, "reads", g_reads, "read_fail",
        g_read_fail, "late", g_late, "sampler_wall_ns", g_sampler_wall_ns, "sampler_cpu_ns",
        g_sampler_cpu_ns, "gil_disagree", g_gil_disagree, "buffer_words", (uint64_t)g_len,
        "snapshot_reads", g_snap_reads, "retries", g_retries, "retry_ok", g_retry_ok, "fifo_ok", g_fifo_ok);
    free(g_buf);
    g_buf = NULL;
    if (!stats) goto fail;
    if (!want) return stats;
    return Py_BuildValue("NN", stats, samples);
fail:
    Py_XDECREF(samples);
    Py_XDECREF(cache);
    return NULL;
}

static PyMethodDef methods[] = {
    {"start", (PyCFunction)(void (*)(void))py_start, METH_VARARGS | METH_KEYWORDS,
     "start(rate, call_opcodes, mode='nogil', jitter=True, buffer_words=16M)"},
    {"stop", py_stop, METH_VARARGS, "stop(return_samples=True) -> stats | (stats, samples)"},
    {NULL}};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_ftsample", NULL, -1, methods};

PyMODINIT_FUNC PyInit__ftsample(void) { return PyModule_Create(&mod); }

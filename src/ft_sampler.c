/* ft_sampler.c: the sampling-mode sampler thread (see ft_sampler.h).
 *
 * Every tick it reads, with process_vm_readv on our own pid (a stale pointer gives EFAULT,
 * never SIGSEGV): the GIL state, the thread list, each thread state, each thread's live
 * data-stack chunk in one copy (3.11+), and any frame outside that copy.  It never calls the
 * C API and never holds the GIL.  Functions, stacks and threads are interned on the sampler
 * thread, and their defs go to the session's defs stream before the first SAMPLE that uses
 * them, so the writer's drain order (heads, then defs) keeps defs ahead of use.
 *
 * This file holds what runs the sampler thread: its schedule, its lifecycle, the layout check
 * that comes before it starts, its pause around fork(), start and stop.  The tick it runs is
 * in ft_sampler_walk.c, the reads in ft_sampler_remote.c, the interning tables in
 * ft_sampler_tables.c; ft_sampler_state.h has the state they share and who owns what.
 */
#define _GNU_SOURCE
#define FT_COMPAT_SAMPLER
#include "ft_compat.h"

#include "ft_sampler.h"
#include "ft_sampler_state.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ft_format.h"
#include "ft_fork.h"
#include "ft_defs.h"
#include "ft_session.h"
#include "ft_thread.h"

#define PUBLISH_NS 100000000ull   /* a partly filled chunk is handed to the writer this often */
/* The sampler's own CPU budget: if over one window it used more than this share of a core, it
 * halves its rate, down to RATE_FLOOR_HZ (or the requested rate if lower).  At 1000 Hz on one
 * thread it uses 2-5 % (bench/README.md), so only a rate the machine cannot serve trips it.
 * FASTTRACE_SAMPLER_BUDGET="share[,window_ms]" overrides both: a test hook (see read_budget). */
#define CPU_BUDGET 0.20
#define BUDGET_WINDOW_NS 1000000000ull
#define RATE_FLOOR_HZ 10.0
/* A forking thread waits at most this long for the joined sampler thread to leave the kernel's
 * thread list (see fork_prepare). */
#define FORK_TASK_WAIT_NS 20000000ull

/* ---- state (ft_sampler_state.h: its fields, and who owns them) ------------------------------ */

ft_smp_state S;

_Static_assert(FT_STAT_COUNT <= sizeof(((ft_sampler_stats*)0)->values) / sizeof(uint64_t),
               "ft_sampler_stats (and ft_summary.sampler) hold every sampler stat");

/* Serializes start, stop and the fork handlers: stop() runs without the GIL and another thread
 * may fork meanwhile.  Static, outside S: S is wiped by ft_sampler_abandon in a child. */
static pthread_mutex_t g_life_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_atfork_registered;

/* ---- scheduler ------------------------------------------------------------------------------ */

static uint64_t
next_random(void)
{
    /* xorshift64*: the jitter only has to be independent of the program's own period */
    S.rng ^= S.rng >> 12;
    S.rng ^= S.rng << 25;
    S.rng ^= S.rng >> 27;
    return S.rng * 2685821657736338717ull;
}

/* Over its CPU budget for a whole window, the sampler halves its rate (down to its floor)
 * rather than take the program's CPU: with thousands of threads or very deep stacks a tick can
 * cost more than an interval at a high rate.  It never raises it again: a rate that went over
 * once would likely go over again, and the stats and stop()'s warning say what happened. */
static void
check_budget(uint64_t now)
{
    if (now - S.window_start_ns < S.window_ns) {
        return;
    }
    uint64_t cpu = mono_ns(CLOCK_THREAD_CPUTIME_ID);
    if ((double)(cpu - S.window_cpu_ns) > S.budget * (double)(now - S.window_start_ns) &&
        S.rate_hz > S.rate_floor) {
        S.rate_hz = S.rate_hz / 2 < S.rate_floor ? S.rate_floor : S.rate_hz / 2;
        S.interval_ns = (uint64_t)(1e9 / S.rate_hz);
        S.stat[FT_STAT_RATE_LOWERED]++;
    }
    S.window_start_ns = now;
    S.window_cpu_ns = cpu;
}

static void*
sampler_main(void* arg)
{
    (void)arg;
    atomic_store(&S.tid, (int)syscall(SYS_gettid)); /* for fork_prepare */
    pthread_setname_np(pthread_self(), "fasttrace-smp"); /* in top -H, /proc/<pid>/task */
    /* A real-time priority lets the sampler preempt a CPU-bound thread on time; without it a
     * saturated CPU makes it run mostly while the app sleeps, under-sampling short bursts
     * (docs/sampling-design.md, table 1b).  Unprivileged processes carry on without. */
    struct sched_param sp = {.sched_priority = 1};
    if (getenv("FASTTRACE_NO_REALTIME") == NULL &&
        pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0) {
        S.stat[FT_STAT_REALTIME] = 1;
    }
    /* A new schedule, also after a pause for fork(): the ticks missed then are not late, and
     * the time from the last tick before it to now is not time the sampler was to tick in. */
    uint64_t start = mono_ns(CLOCK_MONOTONIC);
    if (S.paused_at_ns != 0) {
        S.stat[FT_STAT_PAUSED_NS] += start - S.paused_at_ns;
        S.paused_at_ns = 0;
    }
    S.last_tick_ns = start;
    uint64_t next = start, prev_tick_ns = start;
    S.chunk_started_ns = start;
    S.window_start_ns = start;
    S.window_cpu_ns = mono_ns(CLOCK_THREAD_CPUTIME_ID);
    while (!atomic_load_explicit(&S.stop, memory_order_relaxed)) {
        /* Uniform in [0.5, 1.5] x the interval on an absolute schedule: the mean rate is
         * exact and no program period can alias with it. */
        uint64_t r = next_random() >> 11;
        next += S.interval_ns / 2 + (uint64_t)((double)S.interval_ns * ((double)r / 9007199254740992.0));
        struct timespec ts = {(time_t)(next / 1000000000ull), (long)(next % 1000000000ull)};
        pthread_mutex_lock(&S.wake_lock);
        while (!atomic_load_explicit(&S.stop, memory_order_relaxed) &&
               pthread_cond_timedwait(&S.wake, &S.wake_lock, &ts) != ETIMEDOUT) {
        }
        pthread_mutex_unlock(&S.wake_lock);
        if (atomic_load_explicit(&S.stop, memory_order_relaxed)) {
            break;
        }
        uint64_t now = mono_ns(CLOCK_MONOTONIC);
        ft_smp_tick_once(now - prev_tick_ns);
        prev_tick_ns = now;
        S.last_tick_ns = now;
        uint64_t done = mono_ns(CLOCK_MONOTONIC);
        if (done > next + S.interval_ns) {
            S.stat[FT_STAT_LATE]++;
            next = done; /* no catch-up burst */
        }
        check_budget(done);
        if (S.ring->records > 0 && done - S.chunk_started_ns >= PUBLISH_NS) {
            /* Hand partial chunks over: a killed process loses at most this much. */
            ft_thread_rotate(S.ring, 1);
            S.chunk_started_ns = done;
        }
    }
    S.stat[FT_STAT_SAMPLER_CPU_NS] += mono_ns(CLOCK_THREAD_CPUTIME_ID); /* this run's */
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static void
free_tables(void)
{
    for (uint32_t i = 0; i < S.n_pending; i++) {
        free(S.pending[i].name);
    }
    S.n_pending = 0;
    if (S.known != NULL) {
        ft_smp_forget_known();
    }
    ft_smp_scope_free();
    free(S.codes);
    free(S.stacks);
    free(S.stack_arena);
    free(S.threads);
    free(S.known);
    free(S.cur);
    free(S.cur_ts);
    free(S.spans);
    free(S.order);
    free(S.fresh_at);
    free(S.span_buf);
    free(S.fresh_ok);
    free(S.amap);
    S.codes = NULL;
    S.stacks = NULL;
    S.stack_arena = NULL;
    S.threads = NULL;
    S.known = S.cur = NULL;
    S.cur_ts = NULL;
    S.spans = NULL;
    S.order = NULL;
    S.fresh_at = NULL;
    S.span_buf = NULL;
    S.fresh_ok = NULL;
    S.span_buf_len = 0;
    S.n_spans = S.cap_spans = 0;
    S.amap = NULL;
    S.cap_fresh = S.amap_bits = 0;
}

/* g_life_lock held.  Starts (or restarts) the sampler thread, all signals blocked in it: they
 * belong to the application's threads. */
static int
start_thread(void)
{
    atomic_store(&S.stop, 0);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&S.thread, NULL, sampler_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    S.thread_alive = err == 0;
    return err;
}

/* g_life_lock held.  Wakes the sampler thread from its wait and joins it. */
static void
stop_thread(void)
{
    if (!S.thread_alive) {
        return;
    }
    pthread_mutex_lock(&S.wake_lock);
    atomic_store(&S.stop, 1);
    pthread_cond_signal(&S.wake);
    pthread_mutex_unlock(&S.wake_lock);
    pthread_join(S.thread, NULL);
    S.thread_alive = 0;
}

/* Test hook: FASTTRACE_SAMPLER_BUDGET="share[,window_ms]" sets the CPU budget (a share of one
 * core, e.g. 0.001) and its window, so that a test can force the sampler over budget in a
 * short run.  Not a tuning knob: the defaults are what the project measured and supports. */
static void
read_budget(void)
{
    S.budget = CPU_BUDGET;
    S.window_ns = BUDGET_WINDOW_NS;
    const char* v = getenv("FASTTRACE_SAMPLER_BUDGET");
    if (v == NULL) {
        return;
    }
    char* end;
    double share = strtod(v, &end);
    if (end != v && share > 0 && share <= 64) {
        S.budget = share;
    }
    if (*end == ',') {
        const char* ms_at = end + 1;
        double ms = strtod(ms_at, &end);
        if (end != ms_at && ms >= 1 && ms <= 60000) {
            S.window_ns = (uint64_t)(ms * 1e6);
        }
    }
}

/* ---- the layout check ---------------------------------------------------------------------
 * 3.13+: this build's struct layouts against the running interpreter's own description of
 * them (ft_compat.h says why and which fields).  Runs with the GIL, before anything starts. */

static char g_layout_msg[640]; /* the last refusal, for ft_sampler_layout_error (GIL held) */

const char*
ft_sampler_layout_field(int i)
{
#if FT_HAVE_DEBUG_OFFSETS
    return i >= 0 && (size_t)i < FT_LAYOUT_N_CHECKS ? ft_layout_checks[i].name : NULL;
#else
    (void)i;
    return NULL;
#endif
}

const char*
ft_sampler_layout_error(void)
{
    return g_layout_msg;
}

#if FT_HAVE_DEBUG_OFFSETS
/* PY_VERSION_HEX as Python writes it: 3.14.10, 3.15.0a7, 3.14.0rc1. */
static void
format_version(uint64_t hex, char* out, size_t cap)
{
    unsigned major = (unsigned)(hex >> 24) & 0xFF, minor = (unsigned)(hex >> 16) & 0xFF;
    unsigned micro = (unsigned)(hex >> 8) & 0xFF, level = (unsigned)(hex >> 4) & 0xF;
    unsigned serial = (unsigned)hex & 0xF;
    static const char* const levels[] = {"a", "b", "rc"}; /* PY_RELEASE_LEVEL 0xA, 0xB, 0xC */
    if (level == 0xF) {
        snprintf(out, cap, "%u.%u.%u", major, minor, micro);
    } else if (level >= 0xA && level <= 0xC) {
        snprintf(out, cap, "%u.%u.%u%s%u", major, minor, micro, levels[level - 0xA], serial);
    } else {
        snprintf(out, cap, "0x%llx", (unsigned long long)hex);
    }
}

/* Whether a description the running interpreter versioned `hex` has this build's shape.  Its
 * shape is kept between the final patch releases of a minor version, and nowhere else. */
static int
layout_readable(uint64_t hex)
{
    uint64_t built = PY_VERSION_HEX;
    int both_final = ((hex >> 4) & 0xF) == 0xF && ((built >> 4) & 0xF) == 0xF;
    return (hex >> 16) == (built >> 16) && (hex == built || both_final);
}

/* Test hook (see ft_compat.h): FASTTRACE_DEBUG_OFFSETS_SKEW=NAME skews that field of the copy:
 * an offset or size by 8 (one pointer), a value by 1, the version to the next minor version, the cookie's
 * first byte.  -1 with the message when NAME is none of those: a typo must not pass. */
static int
skew_for_test(ft_debug_offsets* copy, char* msg, size_t cap)
{
    const char* name = getenv("FASTTRACE_DEBUG_OFFSETS_SKEW");
    if (name == NULL || *name == '\0') {
        return 0;
    }
    if (strcmp(name, "cookie") == 0) {
        copy->cookie[0] ^= 0x20;
        return 0;
    }
    if (strcmp(name, "version") == 0) {
        copy->version += 0x00010000;
        return 0;
    }
    for (size_t i = 0; i < FT_LAYOUT_N_CHECKS; i++) {
        if (strcmp(name, ft_layout_checks[i].name) == 0) {
            uint64_t v;
            memcpy(&v, (char*)copy + ft_layout_checks[i].at, sizeof v);
            v += ft_layout_checks[i].kind == FT_LAYOUT_VALUE ? 1 : 8;
            memcpy((char*)copy + ft_layout_checks[i].at, &v, sizeof v);
            return 0;
        }
    }
    snprintf(msg, cap, "cannot sample: FASTTRACE_DEBUG_OFFSETS_SKEW=%.64s names no field that "
             "fasttrace checks", name);
    return -1;
}
#endif

int
ft_sampler_check_layout(char* msg, size_t cap)
{
#if FT_HAVE_DEBUG_OFFSETS
    ft_debug_offsets copy;
    ft_raw_debug_offsets_copy(&copy);
    if (skew_for_test(&copy, msg, cap) < 0) {
        return FT_SAMPLER_ELAYOUT;
    }
    /* The cookie and the version first: nothing after them is read until they say the
     * description has this build's shape. */
    if (memcmp(copy.cookie, _Py_Debug_Cookie, sizeof copy.cookie) != 0) {
        snprintf(msg, cap, "cannot sample: this fasttrace was built for CPython %s, but the "
                 "running interpreter's layout description (_PyRuntime.debug_offsets) does not "
                 "start with the \"%s\" cookie; rebuild fasttrace for this interpreter",
                 PY_VERSION, _Py_Debug_Cookie);
        return FT_SAMPLER_ELAYOUT;
    }
    char running[32];
    format_version(copy.version, running, sizeof running);
    if (!layout_readable(copy.version)) {
        snprintf(msg, cap, "cannot sample: this fasttrace was built for CPython %s, but the "
                 "running interpreter is CPython %s, whose layout description this build cannot "
                 "read; rebuild fasttrace for this interpreter", PY_VERSION, running);
        return FT_SAMPLER_ELAYOUT;
    }
    const ft_layout_check* first = NULL;
    uint64_t first_value = 0;
    int more = 0;
    for (size_t i = 0; i < FT_LAYOUT_N_CHECKS; i++) {
        uint64_t v;
        memcpy(&v, (const char*)&copy + ft_layout_checks[i].at, sizeof v);
        if (v != ft_layout_checks[i].expected) {
            if (first == NULL) {
                first = &ft_layout_checks[i];
                first_value = v;
            } else {
                more++;
            }
        }
    }
    if (first == NULL) {
        return 0;
    }
    char what[160], rest[48] = "";
    unsigned long long got = first_value, want = first->expected;
    if (first->kind == FT_LAYOUT_OFFSET) {
        snprintf(what, sizeof what, "%s at offset %llu, not %llu", first->name, got, want);
    } else if (first->kind == FT_LAYOUT_SIZE) {
        snprintf(what, sizeof what, "a %s of %llu bytes, not %llu", first->name, got, want);
    } else {
        snprintf(what, sizeof what, "%s = %llu, not %llu", first->name, got, want);
    }
    if (more > 0) {
        snprintf(rest, sizeof rest, " (and %d more field%s differ%s)", more, more > 1 ? "s" : "",
                 more > 1 ? "" : "s");
    }
    snprintf(msg, cap, "cannot sample: this fasttrace was built for CPython %s's struct "
             "layouts, but the running interpreter (CPython %s) has %s%s; rebuild fasttrace "
             "for this interpreter", PY_VERSION, running, what, rest);
    return FT_SAMPLER_ELAYOUT;
#else
    (void)msg;
    (void)cap;
    return 0;
#endif
}

/* ---- fork ------------------------------------------------------------------------------------
 * The sampler thread is stopped around fork() (ft_fork.h): its tables, ring and stats stay as
 * they are.  For os.fork() the Python before-fork hook stops it (ft_sampler_fork_defer) and
 * the after-fork hook restarts it in the parent (ft_sampler_fork_resume), on a new schedule;
 * for a fork() from C the pthread_atfork handlers do both.  The child, which abandons the
 * session (ft_sampler_abandon), only lets go of the lock. */

/* g_life_lock held.  The new thread counts the pause as it starts. */
static void
resume(void)
{
    if (start_thread() == 0) { /* else it stays paused: stop() still finishes the file */
        S.paused = 0;
    }
}

/* g_life_lock held. */
static void
pause_thread(void)
{
    if (!S.running || S.paused || S.halted) {
        return;
    }
    stop_thread();
    S.paused = 1;
    /* From the last tick: the interval the stop cut short is lost with the pause. */
    S.paused_at_ns = S.last_tick_ns ? S.last_tick_ns : mono_ns(CLOCK_MONOTONIC);
    ft_fork_wait_task_gone(atomic_load(&S.tid), FORK_TASK_WAIT_NS);
}

static void
fork_prepare(void)
{
    pthread_mutex_lock(&g_life_lock); /* held until the parent or child handler */
    pause_thread(); /* already done by the Python hook for os.fork() */
}

static void
fork_parent(void)
{
    if (S.running && S.paused && !S.fork_defer) {
        resume();
    }
    pthread_mutex_unlock(&g_life_lock);
}

static void
fork_child(void)
{
    /* No sampler thread here, and nothing that could wait on one: the lock was taken by this
     * very thread in fork_prepare.  No scope helper either. */
    S.fork_defer = 0;
    ft_smp_scope_after_fork_child();
    pthread_mutex_unlock(&g_life_lock);
}

void
ft_sampler_fork_defer(void)
{
    pthread_mutex_lock(&g_life_lock);
    S.fork_defer = S.running;
    pause_thread(); /* now: some versions count the threads before fork() itself */
    pthread_mutex_unlock(&g_life_lock);
}

void
ft_sampler_fork_resume(void)
{
    pthread_mutex_lock(&g_life_lock);
    S.fork_defer = 0;
    if (S.running && S.paused) {
        resume();
    }
    pthread_mutex_unlock(&g_life_lock);
}

/* ---- start and stop ------------------------------------------------------------------------- */

int
ft_sampler_start(const ft_sampler_config* cfg)
{
    if (S.running || ft_smp_scope_helper_running()) {
        return EBUSY; /* (a scope helper of a capture never stopped: it could read S) */
    }
    /* Before anything exists: a layout this build would misread must never be sampled. */
    if (ft_sampler_check_layout(g_layout_msg, sizeof g_layout_msg) != 0) {
        return FT_SAMPLER_ELAYOUT;
    }
    if (!g_atfork_registered) {
        /* Once: handlers cannot be removed, and they do nothing while no sampler runs. */
        if (pthread_atfork(fork_prepare, fork_parent, fork_child) != 0) {
            return ENOMEM;
        }
        g_atfork_registered = 1;
    }
    pthread_mutex_lock(&g_life_lock);
    memset(&S, 0, sizeof S);
    S.cfg = *cfg;
    memcpy(S.is_call, cfg->call_opcodes, sizeof S.is_call);
    S.cfg.n_stop_codes = cfg->n_stop_codes < FT_SAMPLER_MAX_STOP_CODES ? cfg->n_stop_codes
                                                                       : FT_SAMPLER_MAX_STOP_CODES;
    for (int i = 0; i < S.cfg.n_stop_codes; i++) {
        S.stop_codes[i] = cfg->stop_codes[i];
    }
    S.interp = PyInterpreterState_Get();
    S.gil = ft_raw_gil_addr(S.interp);
    S.pid = getpid();
    S.rate_hz = cfg->rate_hz;
    S.rate_floor = cfg->rate_hz < RATE_FLOOR_HZ ? cfg->rate_hz : RATE_FLOOR_HZ;
    S.interval_ns = (uint64_t)(1e9 / cfg->rate_hz);
    read_budget();
    S.rng = mono_ns(CLOCK_MONOTONIC) | 1;
    pthread_mutex_init(&S.names_lock, NULL);
    pthread_mutex_init(&S.wake_lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* the schedule's clock */
    pthread_cond_init(&S.wake, &attr);
    pthread_condattr_destroy(&attr);
    S.codes = calloc((size_t)1 << CODE_TABLE_BITS, sizeof *S.codes);
    S.stacks_cap = 1u << STACK_TABLE_BITS;
    S.stacks = calloc(S.stacks_cap, sizeof *S.stacks);
    S.arena_cap = 1u << 16;
    S.stack_arena = malloc(S.arena_cap * sizeof *S.stack_arena);
    S.known = calloc(MAX_THREADS_PER_TICK, sizeof *S.known);
    S.cur = calloc(MAX_THREADS_PER_TICK, sizeof *S.cur);
    S.cur_ts = calloc(MAX_THREADS_PER_TICK, sizeof *S.cur_ts);
    S.ring = ft_session_sample_ring();
    int err = ft_smp_scope_alloc();
    if (S.codes == NULL || S.stacks == NULL || S.stack_arena == NULL || S.known == NULL ||
        S.cur == NULL || S.cur_ts == NULL || S.ring == NULL) {
        err = ENOMEM;
    }
    /* process_vm_readv can be forbidden (seccomp, some containers): find out now, not in the
     * sampler thread. */
    uint64_t probe = 0x5AFE, got = 0;
    if (err == 0 && (safe_read(&got, &probe, sizeof got) < 0 || got != probe)) {
        err = errno ? errno : EPERM;
    }
    if (err != 0) {
        free_tables();
        pthread_mutex_unlock(&g_life_lock);
        return err;
    }
    S.stat[FT_STAT_READ_FAILURES] = 0;
    ft_smp_watch_code_deaths();
    uint8_t* p = ft_defs_begin(1 + 10 + 1 + 10);
    if (p != NULL) {
        *p++ = FT_DEF_SAMPLING;
        p = ft_put_varint(p, (uint64_t)(cfg->rate_hz + 0.5));
        *p++ = (uint8_t)cfg->clock;
        p = ft_put_varint(p, FT_SAMPLE_MAX_DEPTH);
        ft_defs_end(p);
    }
    S.started_ns = mono_ns(CLOCK_MONOTONIC);
    err = start_thread();
    if (err != 0) {
        free_tables();
        pthread_mutex_unlock(&g_life_lock);
        return err;
    }
    S.running = 1;
    pthread_mutex_unlock(&g_life_lock);
    return 0;
}

int
ft_sampler_running(void)
{
    return S.running;
}

/* g_life_lock held, the sampler running: joins its thread; the duration ends here. */
static void
halt_locked(void)
{
    if (S.halted) {
        return;
    }
    stop_thread();
    uint64_t now = mono_ns(CLOCK_MONOTONIC);
    if (S.paused) { /* a fork's restart never came (or failed) */
        S.stat[FT_STAT_PAUSED_NS] += now - S.paused_at_ns;
        S.paused = 0;
        S.paused_at_ns = 0;
    }
    S.halted = 1;
    S.halted_ns = now;
}

void
ft_sampler_halt(void)
{
    pthread_mutex_lock(&g_life_lock);
    if (S.running) {
        halt_locked();
    }
    pthread_mutex_unlock(&g_life_lock);
}

void
ft_sampler_stop(ft_sampler_stats* out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&g_life_lock); /* not while a fork has the sampler stopped */
    if (!S.running) {
        pthread_mutex_unlock(&g_life_lock);
        return;
    }
    halt_locked();
    ft_smp_flush_held(1);
    S.stat[FT_STAT_DURATION_NS] = S.halted_ns - S.started_ns;
    S.stat[FT_STAT_FINAL_RATE_MHZ] = (uint64_t)(S.rate_hz * 1000 + 0.5);
    S.stat[FT_STAT_CPU_BUDGET_PPM] = (uint64_t)(S.budget * 1e6 + 0.5);
    ft_thread_rotate(S.ring, 0);
    uint8_t* p = ft_defs_begin(1 + 10 + FT_STAT_COUNT * 10);
    if (p != NULL) {
        *p++ = FT_DEF_SAMPLER_STATS;
        p = ft_put_varint(p, FT_STAT_COUNT);
        for (int i = 0; i < FT_STAT_COUNT; i++) {
            p = ft_put_varint(p, S.stat[i]);
        }
        ft_defs_end(p);
    }
    memcpy(out->values, S.stat, sizeof S.stat);
    out->rate_hz = S.cfg.rate_hz;
    out->clock = S.cfg.clock;
    ft_session_set_function_count(S.scoped ? S.next_out_fid : S.next_fid);
    pthread_mutex_lock(&S.names_lock);
    S.running = 0;
    pthread_mutex_unlock(&S.names_lock);
    pthread_mutex_unlock(&g_life_lock);
}

uint64_t
ft_sampler_last_thread_uid(void)
{
    return ft_raw_last_thread_uid(PyInterpreterState_Get());
}

void
ft_sampler_release(void)
{
    /* GIL held: the code watcher, which also runs under the GIL, cannot be looking. */
    if (S.ring != NULL && !S.running) {
        free_tables();
        pthread_mutex_destroy(&S.names_lock);
        pthread_mutex_destroy(&S.wake_lock);
        pthread_cond_destroy(&S.wake);
        S.ring = NULL;
    }
}

void
ft_sampler_abandon(void)
{
    /* After fork: the thread does not exist here and the lock may be held.  Leak, as the
     * session does.  The watcher stays registered but sees S.codes == NULL. */
    memset(&S, 0, sizeof S);
}

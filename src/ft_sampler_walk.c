/* ft_sampler_walk.c: one tick of the sampler thread.  It reads the GIL and the thread list,
 * re-reads every known thread state in one batch, and for each thread either reuses the stack
 * its last walk found (when the thread provably did not run since: see stack_unchanged) or
 * walks its frames (the live data-stack chunk in one copy, 3.11+, and any frame outside it,
 * retrying torn walks), then writes one SAMPLE into the sampler's ring.  Sampler thread only,
 * without the GIL; it never calls the C API.
 */
#define _GNU_SOURCE
#define FT_COMPAT_SAMPLER
#include "ft_compat.h"

#include "ft_sampler_state.h"

#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "ft_clock.h"
#include "ft_format.h"
#include "ft_thread.h"

#define WALK_TRIES 4              /* walks of one thread per tick before a sample is torn */

/* ---- one thread's stack --------------------------------------------------------------------- */

typedef struct {
    uint32_t depth;     /* frames in S.fids, innermost first */
    int torn;
    int truncated;
    const void* leaf_instr; /* the innermost frame's current instruction, or NULL */
} walk_result;

static int
is_stop_code(const void* code)
{
    for (int i = 0; i < S.cfg.n_stop_codes; i++) {
        if (S.stop_codes[i] == code) {
            return 1;
        }
    }
    return 0;
}

static void
walk(const ft_raw_tstate* ts, const void* top, walk_result* w)
{
    memset(w, 0, sizeof *w);
    const char *lo, *hi;
    ft_raw_datastack(ts, &lo, &hi);
    size_t snap_len = 0;
    uintptr_t span = (uintptr_t)hi - (uintptr_t)lo; /* a torn copy can hold any values */
    if (lo != NULL && hi != NULL && span > 0 && span <= SNAP_MAX &&
        safe_read(S.snap, lo, span) == 0) {
        snap_len = span;
    }
    const void* fp = top;
    int leaf_is_module = 0; /* the frame last added is a module's top level */
    ft_raw_frame_struct raw; /* only the first FT_RAW_FRAME_SIZE bytes are read */
    while (fp != NULL) {
        if (w->depth == FT_SAMPLE_MAX_DEPTH) {
            w->truncated = 1;
            break;
        }
        /* fp may be garbage (a torn read): compare as integers, where a pointer near the top
         * of the address space cannot wrap past the checks. */
        uintptr_t off = (uintptr_t)fp - (uintptr_t)lo; /* huge when fp < lo */
        if (snap_len >= FT_RAW_FRAME_SIZE && off <= snap_len - FT_RAW_FRAME_SIZE) {
            memcpy(&raw, S.snap + off, FT_RAW_FRAME_SIZE);
        } else if (safe_read(&raw, fp, FT_RAW_FRAME_SIZE) < 0) {
            w->torn = 1;
            break;
        }
        ft_raw_frame fr;
        ft_raw_frame_decode(&raw, &fr);
        /* A frame that returned (3.9-3.10, see ft_raw_frame.done) is on the stack only as its
         * top, and then its caller is: one alone has gone to the free list. */
        if (fr.bad || (fr.done && (fp != top || fr.back == NULL))) {
            w->torn = 1;
            break;
        }
        if (!fr.skip && fr.code != NULL) {
            if (is_stop_code(fr.code)) {
                /* The runner's frame: what it exec'd (a module's top level) is the root.
                 * Anything else it called is the runner's own work, not sampled. */
                if (!leaf_is_module) {
                    w->depth = 0;
                }
                break;
            }
            const void* bytecode = NULL;
            uint32_t fid = function_of(fr.code, &bytecode, &leaf_is_module);
            if (fid == 0) {
                w->torn = 1;
                break;
            }
            if (w->depth == 0) {
                w->leaf_instr = fr.instr;
                if (fr.instr == NULL && bytecode != NULL && fr.lasti >= 0) {
                    w->leaf_instr = (const char*)bytecode + fr.lasti;
                }
            }
            S.fids[w->depth++] = fid;
        }
        fp = fr.back;
    }
}

static void
put_sample(uint64_t tick, uint32_t thread, uint32_t sid, uint64_t weight_ns, unsigned state)
{
    ft_thread* r = S.ring;
    uint8_t* end = ft_chunk_payload(r, atomic_load_explicit(&r->head, memory_order_relaxed)) +
                   (r->chunk_size - FT_CHUNK_HEADER_SIZE);
    if (r->dropping || r->pos + FT_MAX_SAMPLE_SIZE > end) {
        if (!ft_thread_rotate(r, 1)) {
            S.stat[FT_STAT_DROPPED]++;
            return;
        }
        S.chunk_started_ns = mono_ns(CLOCK_MONOTONIC);
    }
    uint8_t* p = r->pos;
    *p++ = FT_REC_SAMPLE;
    p = ft_put_varint(p, tick - r->last_tick);
    p = ft_put_varint(p, thread);
    p = ft_put_varint(p, sid);
    p = ft_put_varint(p, ((weight_ns / 1000) << FT_SAMPLE_STATE_BITS) | state);
    r->pos = p;
    r->last_tick = tick;
    r->records++;
    S.stat[FT_STAT_SAMPLES]++;
}

/* ---- the scope ------------------------------------------------------------------------------
 * With a scope (ft_sampler.h), a walk's stack goes through apply_scope: the frames it keeps
 * are interned as the sample's stack, or the sample is left out (counted as out of scope).
 * A stack with a frame whose file the helper has not decided yet is held, with every sample
 * after it (samples go out in tick order), until it is decided: ft_smp_flush_held, at the
 * next ticks. */

/* The frames the scope keeps of fids[0..depth) (root first), into S.kept: their count; 0 when
 * it keeps none (the sample is left out); -1 while a frame's file is not decided yet.  Kept:
 * every frame when one is in scope, or (trim_stacks) the in-scope ones; then the outermost
 * max_depth of those. */
static int32_t
apply_scope(const uint32_t* fids, uint32_t depth)
{
    uint32_t n = 0;
    if (!S.cfg.scope_patterns) {
        n = depth;
        memcpy(S.kept, fids, depth * sizeof *fids);
    } else {
        int any = 0;
        int trim = S.cfg.trim_stacks;
        for (uint32_t i = 0; i < depth; i++) {
            uint8_t in = fn_scope(fids[i]);
            if (in == SCOPE_PENDING) {
                return -1;
            }
            any |= in == SCOPE_IN;
            if (in == SCOPE_IN || !trim) {
                S.kept[n++] = fids[i];
            }
        }
        if (!any) {
            return 0;
        }
    }
    return (int32_t)(n < S.cfg.max_depth ? n : S.cfg.max_depth);
}

/* The stack of a sample the scope keeps (the n frames in S.kept), counted as torn or
 * truncated; 0 out of memory. */
static uint32_t
kept_stack(uint32_t n, uint8_t flags, unsigned state)
{
    uint32_t sid = stack_of(S.kept, n, flags);
    if (sid != 0) {
        S.stat[FT_STAT_TORN] += (state & FT_SAMPLE_TORN) != 0;
        S.stat[FT_STAT_TRUNCATED] += (flags & FT_STACK_TRUNCATED) != 0;
    }
    return sid;
}

/* Moves the held samples to the front of their arrays. */
static void
compact_held(void)
{
    uint32_t n = S.n_held - S.held_head;
    size_t base = n > 0 ? S.held[S.held_head].at : S.held_len;
    memmove(S.held, S.held + S.held_head, (size_t)n * sizeof *S.held);
    memmove(S.held_fids, S.held_fids + base, (S.held_len - base) * sizeof *S.held_fids);
    for (uint32_t i = 0; i < n; i++) {
        S.held[i].at -= base;
    }
    S.n_held = n;
    S.held_head = 0;
    S.held_len -= base;
}

/* Holds a sample and its `depth` frames (none: sid is set by the caller); NULL when too many
 * wait already, or out of memory. */
static held_sample*
hold(uint64_t tick, uint32_t thread, uint64_t weight_ns, unsigned state, uint8_t flags,
     const uint32_t* fids, uint32_t depth)
{
    if (S.n_held - S.held_head >= HELD_MAX ||
        S.held_len - (S.n_held > S.held_head ? S.held[S.held_head].at : S.held_len) + depth >
            HELD_FIDS_MAX) {
        return NULL;
    }
    if (S.held_head > 0 && (S.n_held == S.cap_held || S.held_len + depth > S.held_cap)) {
        compact_held();
    }
    if (S.n_held == S.cap_held) {
        uint32_t cap = S.cap_held ? S.cap_held * 2 : 256;
        held_sample* grown = realloc(S.held, (size_t)cap * sizeof *grown);
        if (grown == NULL) {
            return NULL;
        }
        S.held = grown;
        S.cap_held = cap;
    }
    if (S.held_len + depth > S.held_cap) {
        size_t cap = S.held_cap ? S.held_cap * 2 : 4096;
        while (cap < S.held_len + depth) {
            cap *= 2;
        }
        uint32_t* grown = realloc(S.held_fids, cap * sizeof *grown);
        if (grown == NULL) {
            return NULL;
        }
        S.held_fids = grown;
        S.held_cap = cap;
    }
    held_sample* h = &S.held[S.n_held++];
    h->tick = tick;
    h->weight_ns = weight_ns;
    h->at = S.held_len;
    h->thread = thread;
    h->sid = 0;
    h->depth = depth;
    h->state = (uint8_t)state;
    h->flags = flags;
    if (depth > 0) {
        memcpy(S.held_fids + S.held_len, fids, depth * sizeof *fids);
        S.held_len += depth;
    }
    return h;
}

/* Writes a sample whose stack is known, or holds it behind the samples waiting for a decision. */
static void
emit_sample(uint64_t tick, uint32_t thread, uint32_t sid, uint64_t weight_ns, unsigned state)
{
    if (FT_LIKELY(S.held_head == S.n_held)) {
        put_sample(tick, thread, sid, weight_ns, state);
        return;
    }
    held_sample* h = hold(tick, thread, weight_ns, state, 0, NULL, 0);
    if (h == NULL) {
        S.stat[FT_STAT_DROPPED]++;
        return;
    }
    h->sid = sid;
}

void
ft_smp_flush_held(int final)
{
    while (S.held_head < S.n_held) {
        held_sample* h = &S.held[S.held_head];
        uint32_t sid = h->sid;
        if (sid == 0) {
            int32_t n = apply_scope(S.held_fids + h->at, h->depth);
            if (n < 0 && !final) {
                break;
            }
            if (n < 0) {
                S.stat[FT_STAT_DROPPED]++; /* nobody decided its files (an exit without stop()) */
            } else if (n == 0) {
                S.stat[FT_STAT_OUT_OF_SCOPE]++;
            } else {
                sid = kept_stack((uint32_t)n, h->flags, h->state);
            }
        }
        S.held_head++;
        if (sid != 0) {
            put_sample(h->tick, h->thread, sid, h->weight_ns, h->state);
        }
    }
    if (S.held_head == S.n_held) {
        S.held_head = S.n_held = 0;
        S.held_len = 0;
    } else if (S.held_head >= 1024 && 2 * S.held_head >= S.n_held) {
        compact_held();
    }
}

/* Reads the thread's innermost frame pointer (NULL: no Python frames).  0, or -1 when the
 * thread state moved under us (see ft_raw_cframe_field). */
/* Whether the frame at `top` is an interpreter-owned entry frame with nothing before it: a
 * thread that runs no Python code yet (seen on 3.15 for a thread just started), to be met
 * only once it does.  fasttrace's scope helper is such a thread until it publishes its
 * ident (ft_sampler_scope_enter): met before that, it was defined as "thread-2" in every
 * scoped sampled trace on 3.15. */
static int
only_entry_frame(const void* top)
{
    ft_raw_frame_struct raw;
    if (safe_read(&raw, top, FT_RAW_FRAME_SIZE) < 0) {
        return 0; /* the walk decides */
    }
    ft_raw_frame fr;
    ft_raw_frame_decode(&raw, &fr);
    return !fr.bad && fr.skip && fr.back == NULL;
}

static int
read_top_frame(PyThreadState* addr, const void** top)
{
#if FT_RAW_TOP_FRAME_INDIRECT
    /* A thread that keeps entering and leaving nested eval loops can change its cframe
     * between any two reads: after a few tries the last value is used, and the walk's own
     * checks catch a stale one. */
    for (int attempt = 0;; attempt++) {
        void *cframe = NULL, *again = NULL;
        if (safe_read(&cframe, ft_raw_cframe_field(addr), sizeof cframe) < 0) {
            return -1;
        }
        if (cframe == NULL) {
            *top = NULL;
            return 0;
        }
        if (safe_read(top, ft_raw_cframe_top_slot(cframe), sizeof *top) < 0 ||
            safe_read(&again, ft_raw_cframe_field(addr), sizeof again) < 0) {
            return -1;
        }
        if (again == cframe || attempt == 2) {
            return 0;
        }
    }
#else
    return safe_read(top, ft_raw_top_frame_slot(addr), sizeof *top);
#endif
}

/* The GIL's last holder and hand-over count.  take_gil (3.9-3.13) bumps switch_number whenever
 * a thread other than last_holder takes the GIL, and makes it last_holder.  (These two accessors
 * are layout, and belong beside ft_raw_gil_held_by in ft_compat.h.) */
static const void*
gil_holder(const ft_raw_gil* g)
{
#if PY_VERSION_HEX >= 0x030D0000
    return g->last_holder;
#else
    return (const void*)g->last_holder._value;
#endif
}

static unsigned long
gil_switches(const ft_raw_gil* g)
{
    return g->switch_number;
}

/* CPU time the thread has used, from the kernel's per-thread clock; 0 if unknown. */
static uint64_t
thread_cpu_ns(uint64_t tid)
{
    if (tid == 0) {
        return 0;
    }
    /* glibc's MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED): a gone thread gives EINVAL, whereas
     * pthread_getcpuclockid would read the pthread struct of a thread that may be freed. */
    clockid_t clk = (clockid_t)((~(unsigned)tid << 3) | 6u);
    struct timespec ts;
    if (clock_gettime(clk, &ts) != 0) {
        return 0;
    }
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + 1; /* never 0 */
}

/* cpu clock: the weight of this tick's sample of a thread that has used `cpu` ns in all (0: its
 * clock is unknown), or 0 when it is not to be sampled.  Once per tick and thread: it moves the
 * thread's last reading. */
static uint64_t
cpu_weight(thread_entry* te, uint64_t cpu, int holds, uint64_t interval_ns)
{
    if (cpu == 0) {
        return holds ? interval_ns : 0; /* tid unknown: holding the GIL is the best "on CPU" signal left */
    }
    uint64_t prev = te->last_cpu_ns;
    te->last_cpu_ns = cpu;
    if (prev == 0 || cpu <= prev) {
        return 0; /* first sight, or no CPU used since the last tick */
    }
    return cpu - prev;
}

static uint64_t
native_of(thread_entry* te)
{
    return __atomic_load_n(&te->native_id, __ATOMIC_RELAXED);
}

/* Whether a known thread's stack is still the one its last walk found, without reading it.
 * Asked only of a thread that does not hold the GIL now and whose thread state is byte for
 * byte the one read at that walk (frame pointer, data-stack top, recursion depth, exception
 * state...).  Then either proof that it has not run since says yes:
 *  - the GIL has not changed hands: switch_number and last_holder are those of that tick, when
 *    the thread was not last_holder.  Running bytecode needs the GIL, and take_gil by a thread
 *    that is not last_holder makes it last_holder and bumps switch_number: the thread has not
 *    executed one instruction since.  Free: the GIL is read once per tick anyway.
 *  - or its kernel CPU clock, read just before that walk, has not moved: a thread that has not
 *    run has not changed its frames.  One cheap syscall (no memory read); used when the GIL
 *    did change hands (other threads woke up meanwhile).
 * Why not a key such as (top frame address, instruction): frames are reused at the same
 * addresses, so a thread that went back two levels and called another function of the same
 * frame size, which blocks in the same helper, shows the same top frame, code, instruction and
 * caller address under a different caller.  With the proofs above a false "unchanged" needs
 * CPython to run code outside its own rules, not bad luck.  Residual risks, accepted: a C
 * extension that swaps thread states of this interpreter on one OS thread (PyThreadState_Swap)
 * runs the swapped-in state's code without take_gil, and would also have to leave that state
 * byte for byte as it was, same depth and all, between two ticks; and on a kernel whose
 * scheduler clock is coarser than a short run (jiffies-based sched_clock, rare) the CPU clock
 * can miss the run, where the GIL proof still holds.  *cpu: the CPU clock if it was read. */
static int
stack_unchanged(const known_thread* kt, const ft_raw_gil* gil, int gil_ok, thread_entry* te,
                uint64_t* cpu)
{
    if (gil_ok && kt->gil_known && gil_switches(gil) == kt->gil_switches &&
        gil_holder(gil) == kt->gil_holder) {
        return 1;
    }
    if (te == NULL || kt->cpu_ns == 0) {
        return 0;
    }
    if (*cpu == 0) {
        *cpu = thread_cpu_ns(native_of(te));
    }
    return *cpu == kt->cpu_ns;
}

/* Keeps what a clean walk of a thread that did not hold the GIL found (sid 0: no frames, or
 * with `out` none that the scope keeps). */
static void
remember(known_thread* kt, const ft_raw_tstate* ts, const ft_raw_gil* gil, int gil_ok,
         uint32_t sid, int out, uint8_t state, uint64_t cpu)
{
    kt->cached = 1;
    kt->sid = sid;
    kt->out = out;
    kt->state = state;
    kt->gil_known = gil_ok && gil_holder(gil) != (const void*)kt->addr;
    kt->gil_switches = gil_ok ? gil_switches(gil) : 0;
    kt->gil_holder = gil_ok ? gil_holder(gil) : NULL;
    kt->cpu_ns = cpu;
    if (ts != &kt->ts) {
        memcpy(&kt->ts, ts, sizeof *ts);
    }
}

/* The thread's entry (met, or met now) and, with the cpu clock, its CPU time and the sample's
 * weight.  0 if it has no entry, or used no CPU since the last tick (not sampled). */
static int
meet_thread(known_thread* kt, const ft_raw_tstate* ts, int holds, uint64_t interval_ns,
            thread_entry** te, uint64_t* cpu, uint64_t* weight)
{
    *te = thread_for(kt, ts);
    if (*te == NULL) {
        return 0;
    }
    __atomic_store_n(&(*te)->seen_tick, S.stat[FT_STAT_TICKS], __ATOMIC_RELAXED);
    if (S.cfg.clock == FT_CLOCK_CPU) {
        *cpu = thread_cpu_ns(native_of(*te));
        *weight = cpu_weight(*te, *cpu, holds, interval_ns);
        if (*weight == 0) {
            return 0;
        }
    }
    return 1;
}

static void
sample_thread(known_thread* kt, const ft_raw_tstate* ts, const ft_raw_gil* gil, int gil_ok,
              uint64_t tick, uint64_t interval_ns)
{
    PyThreadState* addr = kt->addr;
    int holds = gil_ok && ft_raw_gil_held_by(gil, addr);
    thread_entry* te = NULL;
    uint64_t cpu = 0; /* the thread's CPU clock, read at most once per tick */
    uint64_t weight = interval_ns;
    if (kt->te != 0 && !meet_thread(kt, ts, holds, interval_ns, &te, &cpu, &weight)) {
        return; /* met before: gone, or (cpu clock) no CPU used since the last tick */
    }
    if (!holds && kt->cached && (kt->sid == 0 || te != NULL) &&
        memcmp(&kt->ts, ts, sizeof *ts) == 0 && stack_unchanged(kt, gil, gil_ok, te, &cpu)) {
        if (kt->sid != 0) {
            emit_sample(tick, te->id, kt->sid, weight, kt->state);
            S.stat[FT_STAT_REUSED]++;
        } else if (kt->out) {
            S.stat[FT_STAT_OUT_OF_SCOPE]++;
        }
        return;
    }
    kt->cached = 0;
    /* Frames first: a thread state with none is idle, or new and not yet bound to its
     * thread (its ident is then 0, or before 3.11 the parent's, so it must not be met). */
    const void* top = NULL;
    if (read_top_frame(addr, &top) < 0) {
        return;
    }
    if (top != NULL && te == NULL && only_entry_frame(top)) {
        top = NULL;
    }
    if (top == NULL) {
        if (!holds) {
            remember(kt, ts, gil, gil_ok, 0, 0, 0, 0); /* only the GIL proof can vouch for it */
        }
        return;
    }
    /* The scope helper is fasttrace's own thread: never met, never sampled.  It publishes its
     * ident before it runs Python code, so a frame read here comes after that store; the
     * ident is loaded after the read (a load before it could miss a helper that was only
     * starting). */
    atomic_thread_fence(memory_order_acquire);
    uint64_t helper = atomic_load_explicit(&S.helper_ident, memory_order_relaxed);
    if (FT_UNLIKELY(helper != 0) && (uint64_t)ts->thread_id == helper) {
        return;
    }
    if (te == NULL && !meet_thread(kt, ts, holds, interval_ns, &te, &cpu, &weight)) {
        return;
    }
    if (!holds && cpu == 0) {
        cpu = thread_cpu_ns(native_of(te)); /* before the walk: see stack_unchanged */
    }
    walk_result w;
    walk(ts, top, &w);
    /* The thread runs in parallel with us: a frame we read may have been popped and its
     * memory reused (by a bigger frame, whose locals then sit where a code pointer was) before
     * we got there.  The checks catch that as a torn walk; the thread state and its innermost
     * frame are then read again, up to WALK_TRIES walks in all, keeping the deepest result.
     * Call-dense code tears ~25 % of first walks (measured on raytrace); a sample that stays
     * torn is kept with what was read, flagged, unless not one frame was read.  A walk that
     * stays valid is kept even if the thread moved meanwhile: on a busy thread the innermost
     * frame changes every few hundred ns, far faster than a walk, so "unchanged" could never
     * be required. */
    int retried = 0;
    for (int attempt = 1; w.torn && attempt < WALK_TRIES; attempt++) {
        ft_raw_tstate fresh;
        walk_result again;
        retried = 1;
        if (safe_read(&fresh, addr, sizeof fresh) < 0 || read_top_frame(addr, &top) < 0 ||
            top == NULL) {
            break;
        }
        walk(&fresh, top, &again);
        if (!again.torn || again.depth >= w.depth) {
            w = again;
        }
    }
    if (w.depth == 0) {
        return;
    }
    unsigned state = holds ? 0 : FT_SAMPLE_IDLE;
    if (w.torn) {
        state |= FT_SAMPLE_TORN;
        S.stat[FT_STAT_TORN] += !S.scoped; /* with a scope: if kept (kept_stack) */
    }
    if (!holds && w.leaf_instr != NULL) {
        uint8_t op;
        if (safe_read(&op, w.leaf_instr, 1) == 0 && S.is_call[op]) {
            state |= FT_SAMPLE_IN_CALL;
        }
    }
    uint8_t flags = 0;
    if (w.truncated) {
        flags |= FT_STACK_TRUNCATED;
        S.stat[FT_STAT_TRUNCATED] += !S.scoped;
    }
    uint32_t root_first[FT_SAMPLE_MAX_DEPTH];
    for (uint32_t i = 0; i < w.depth; i++) {
        root_first[i] = S.fids[w.depth - 1 - i];
    }
    uint32_t sid;
    int out = 0;
    if (S.scoped) {
        int32_t n = apply_scope(root_first, w.depth);
        if (n < 0) { /* a file not decided yet: held, and not remembered */
            if (hold(tick, te->id, weight, state, flags, root_first, w.depth) == NULL) {
                S.stat[FT_STAT_DROPPED]++;
            }
            return;
        }
        if (n == 0) {
            S.stat[FT_STAT_OUT_OF_SCOPE]++;
            sid = 0;
            out = 1;
        } else if ((sid = kept_stack((uint32_t)n, flags, state)) == 0) {
            return;
        } else {
            emit_sample(tick, te->id, sid, weight, state);
        }
    } else {
        if ((sid = stack_of(root_first, w.depth, flags)) == 0) {
            return;
        }
        put_sample(tick, te->id, sid, weight, state);
    }
    if (!holds && !retried) {
        /* A walk of the thread state read at this tick's start (a retry read another). */
        remember(kt, ts, gil, gil_ok, sid, out, (uint8_t)state, cpu);
    }
}

/* ---- the thread list ------------------------------------------------------------------------ */

/* S.amap: known thread-state addresses to their index + 1, built when this tick's list
 * departs from the last one's order. */
static int
index_known(void)
{
    uint32_t bits = 4;
    while ((1u << bits) < 2 * S.n_known) {
        bits++;
    }
    if (bits != S.amap_bits) {
        uint32_t* grown = realloc(S.amap, ((size_t)1 << bits) * sizeof *grown);
        if (grown == NULL) {
            return -1;
        }
        S.amap = grown;
        S.amap_bits = bits;
    }
    uint32_t mask = (1u << bits) - 1;
    memset(S.amap, 0, ((size_t)1 << bits) * sizeof *S.amap);
    for (uint32_t j = 0; j < S.n_known; j++) {
        uint32_t i = ptr_hash((uintptr_t)S.known[j]->addr, (int)bits);
        while (S.amap[i] != 0) {
            i = (i + 1) & mask;
        }
        S.amap[i] = j + 1;
    }
    return 0;
}

/* The index in S.known of the thread state at `addr`, or UINT32_MAX. */
static uint32_t
find_known(PyThreadState* addr)
{
    uint32_t mask = (1u << S.amap_bits) - 1;
    for (uint32_t i = ptr_hash((uintptr_t)addr, (int)S.amap_bits); S.amap[i] != 0;
         i = (i + 1) & mask) {
        if (S.known[S.amap[i] - 1]->addr == addr) {
            return S.amap[i] - 1;
        }
    }
    return UINT32_MAX;
}

void
ft_smp_forget_known(void)
{
    for (uint32_t j = 0; j < S.n_known; j++) {
        free(S.known[j]);
    }
    S.n_known = 0;
    S.n_spans = 0;
    S.known_moved = 1;
}

/* Builds this tick's thread list (S.known, in list order, their states in S.cur_ts) from the
 * list head.  Known thread states were all re-read in one batch; only new ones are read one by
 * one.  Returns the number of threads. */
static uint32_t
read_thread_list(PyThreadState* head)
{
    if (S.n_known > S.cap_fresh) {
        uint32_t cap = S.cap_fresh ? S.cap_fresh : 16;
        while (cap < S.n_known) {
            cap *= 2;
        }
        uint8_t* ok = realloc(S.fresh_ok, cap);
        S.fresh_ok = ok != NULL ? ok : S.fresh_ok;
        uint32_t* order = ok == NULL ? NULL : realloc(S.order, cap * sizeof *order);
        S.order = order != NULL ? order : S.order;
        size_t* at = order == NULL ? NULL : realloc(S.fresh_at, cap * sizeof *at);
        S.fresh_at = at != NULL ? at : S.fresh_at;
        if (at == NULL) {
            ft_smp_forget_known(); /* read one by one this tick */
        } else {
            S.cap_fresh = cap;
        }
    }
    if (S.known_moved && ft_smp_plan_reads() < 0) {
        ft_smp_forget_known();
    }
    ft_smp_read_known_states();
    int indexed = 0;
    int moved = 0; /* this tick's list differs from the last one */
    uint32_t n = 0;
    PyThreadState* addr = head;
    while (addr != NULL && n < MAX_THREADS_PER_TICK) {
        uint32_t j = UINT32_MAX;
        if (n < S.n_known && S.known[n]->addr == addr) {
            j = n; /* the list as it was: no look-up */
        } else if (S.n_known > 0 && (indexed || (indexed = index_known() == 0))) {
            j = find_known(addr);
        }
        known_thread* kt;
        const ft_raw_tstate* ts;
        if (j != UINT32_MAX && S.fresh_ok[j] == 2) {
            break; /* met twice: the list changed under us; the next tick sees it settled */
        }
        if (j != n) {
            moved = 1;
        }
        if (j != UINT32_MAX && S.fresh_ok[j] == 1) {
            kt = S.known[j];
            ts = fresh_state(j);
            if (ts->interp != S.interp) {
                break;
            }
            S.fresh_ok[j] = 2;
        } else { /* new, or its read failed */
            kt = calloc(1, sizeof *kt);
            if (kt == NULL || safe_read(&kt->ts, addr, sizeof kt->ts) < 0 ||
                kt->ts.interp != S.interp) {
                free(kt);
                break; /* the list changed under us */
            }
            kt->addr = addr;
            kt->uid = (uint64_t)kt->ts.id;
            ts = &kt->ts;
        }
        if (kt->uid != (uint64_t)ts->id) { /* the address holds a later thread state now */
            kt->uid = (uint64_t)ts->id;
            kt->te = 0;
            kt->cached = 0;
        }
        S.cur[n] = kt;
        S.cur_ts[n] = ts;
        n++;
        addr = ts->next;
    }
    for (uint32_t j = 0; j < S.n_known; j++) {
        if (S.fresh_ok[j] != 2) {
            free(S.known[j]); /* gone (or not reached this tick) */
            moved = 1;
        }
    }
    known_thread** swap = S.known;
    S.known = S.cur;
    S.cur = swap;
    S.known_moved |= moved || n != S.n_known;
    S.n_known = n;
    return n;
}

void
ft_smp_tick_once(uint64_t interval_ns)
{
    uint64_t tick = ft_ticks();
    ft_raw_gil gil;
    PyThreadState* head = NULL;
    /* The GIL and the list head in one call. */
    struct iovec local[2] = {{&gil, sizeof gil}, {&head, sizeof head}};
    struct iovec remote[2] = {{(void*)S.gil, sizeof gil},
                              {(void*)ft_raw_threads_head(S.interp), sizeof head}};
    ssize_t got = process_vm_readv(S.pid, local, 2, remote, 2, 0);
    int gil_ok = got >= (ssize_t)sizeof gil;
    if (got != (ssize_t)(sizeof gil + sizeof head)) {
        S.stat[FT_STAT_READ_FAILURES]++;
        if (safe_read(&head, ft_raw_threads_head(S.interp), sizeof head) < 0) {
            return;
        }
    }
    if (S.held_head < S.n_held) {
        ft_smp_flush_held(0); /* the samples decided since the last tick go first */
    }
    uint32_t n = read_thread_list(head);
    for (uint32_t i = 0; i < n; i++) {
        sample_thread(S.known[i], S.cur_ts[i], &gil, gil_ok, tick, interval_ns);
    }
    __atomic_store_n(&S.stat[FT_STAT_TICKS], S.stat[FT_STAT_TICKS] + 1, __ATOMIC_RELAXED);
}

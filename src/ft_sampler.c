/* ft_sampler.c: the sampling-mode sampler thread (see ft_sampler.h).
 *
 * Every tick it reads, with process_vm_readv on our own pid (a stale pointer gives EFAULT,
 * never SIGSEGV): the GIL state, the thread list, each thread state, each thread's live
 * data-stack chunk in one copy (3.11+), and any frame outside that copy.  It never calls the
 * C API and never holds the GIL.  Functions, stacks and threads are interned here, on the
 * sampler thread, and their defs go to the session's defs stream before the first SAMPLE that
 * uses them, so the writer's drain order (heads, then defs) keeps defs ahead of use.
 */
#define _GNU_SOURCE
#define FT_COMPAT_SAMPLER
#include "ft_compat.h"

#include "ft_sampler.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "ft_clock.h"
#include "ft_format.h"
#include "ft_fork.h"
#include "ft_session.h"
#include "ft_thread.h"

#define MAX_THREADS_PER_TICK 4096
#define SNAP_MAX (256 * 1024)     /* the largest data-stack copy; beyond, frames are read one by one */
#define MAX_STR 1024              /* longer names are cut */
#define WALK_TRIES 4              /* walks of one thread per tick before a sample is torn */
#define PUBLISH_NS 100000000ull   /* a partly filled chunk is handed to the writer this often */
#define CODE_TABLE_BITS 16        /* code objects remembered; the table is reset when 3/4 full */
#define STACK_TABLE_BITS 16
/* Names given for threads the sampler has not met yet wait this long, at most MAX_PENDING. */
#define NAME_PENDING_NS 5000000000ull
#define MAX_PENDING 256
#define IOV_BATCH 1024            /* UIO_MAXIOV: process_vm_readv takes at most this many a side */
/* Thread states closer than SPAN_GAP bytes are read as one span (at most SPAN_MAX bytes). */
#define SPAN_GAP 1024
#define SPAN_MAX (64 * 1024)
/* The sampler's own CPU budget: if over one window it used more than this share of a core, it
 * halves its rate, down to RATE_FLOOR_HZ (or the requested rate if lower).  At 1000 Hz on one
 * thread it uses 2-5 % (bench/README.md), so only a rate the machine cannot serve trips it.
 * FASTTRACE_SAMPLER_BUDGET="share[,window_ms]" overrides both: a test hook (see budget_hook). */
#define CPU_BUDGET 0.20
#define BUDGET_WINDOW_NS 1000000000ull
#define RATE_FLOOR_HZ 10.0
/* A forking thread waits at most this long for the joined sampler thread to leave the kernel's
 * thread list (see fork_prepare). */
#define FORK_TASK_WAIT_NS 20000000ull

/* ---- state, owned by the sampler thread unless noted --------------------------------------- */

typedef struct {
    _Atomic uintptr_t key; /* code object address; 0 empty; 1 tombstone (the code died) */
    uint32_t fid;
    int is_module;         /* co_name is "<module>": a module's top-level code */
    const void* bytecode;  /* 3.9-3.10: co_code's data, for the call check */
} code_entry;
#define CODE_TOMB ((uintptr_t)1)

typedef struct {
    uint64_t hash;
    uint32_t sid;
    uint32_t depth;
    size_t at;             /* fids in `stack_arena` */
    uint8_t flags;
} stack_entry;

/* A thread state the sampler met at its last tick, with what its last walk found.  Its stack
 * is reused without a walk while the thread provably did not run Python code since: see
 * stack_unchanged. */
typedef struct {
    PyThreadState* addr;
    uint64_t uid;             /* tstate->id: the address can be reused by a later thread state */
    uint32_t te;              /* its entry in S.threads + 1; 0: not met (no Python frames yet) */
    int cached;               /* the fields below describe its last walk */
    uint32_t sid;             /* the stack it resolved to; 0: the thread had no Python frames */
    uint8_t state;            /* that sample's IDLE / IN_CALL bits */
    int gil_known;            /* the GIL was read at that tick and the thread was not its holder */
    unsigned long gil_switches; /* the GIL's switch_number and last holder at that tick */
    const void* gil_holder;
    uint64_t cpu_ns;          /* its CPU clock read just before that walk; 0: unknown */
    ft_raw_tstate ts;         /* its thread state as read at that tick */
} known_thread;

typedef struct {
    uint64_t uid;          /* tstate->id: never reused within a process */
    uint64_t ident;
    uint64_t native_id;
    uint64_t last_cpu_ns;
    uint64_t seen_tick;    /* the sampler's tick count when it last met the thread */
    uint32_t id;           /* the file's thread id */
    int named;             /* guarded by names_lock */
} thread_entry;

static struct {
    ft_sampler_config cfg;
    uint8_t is_call[256];
    const void* stop_codes[FT_SAMPLER_MAX_STOP_CODES];
    PyInterpreterState* interp;
    const ft_raw_gil* gil;
    pid_t pid;
    pthread_t thread;
    _Atomic int stop;
    pthread_mutex_t wake_lock; /* the sampler sleeps on `wake`, so that stop() need not wait */
    pthread_cond_t wake;       /* for the rest of an interval (up to 1.5 s at 1 Hz) */
    int running;
    uint64_t interval_ns;
    uint64_t rng;
    ft_thread* ring;
    uint64_t chunk_started_ns;

    code_entry* codes; /* 1 << CODE_TABLE_BITS */
    uint32_t n_codes;
    uint32_t next_fid;

    stack_entry* stacks;
    uint32_t stacks_cap;
    uint32_t n_stacks;
    uint32_t* stack_arena;
    size_t arena_len, arena_cap;

    pthread_mutex_t names_lock; /* guards `threads` against ft_sampler_set_thread_name */
    thread_entry* threads;
    uint32_t n_threads, cap_threads;
    /* names given (ft_sampler_set_thread_name) before the sampler met the thread */
    struct pending_name {
        uint64_t ident;
        uint64_t min_uid;
        uint64_t native_id;
        uint64_t at_ns;
        char* name;
    } pending[MAX_PENDING];
    uint32_t n_pending;

    /* The thread list as met at the last tick, in list order, and this tick's being built.
     * Every known thread state is re-read in one batched process_vm_readv per tick. */
    known_thread** known;     /* MAX_THREADS_PER_TICK */
    known_thread** cur;       /* MAX_THREADS_PER_TICK */
    const ft_raw_tstate** cur_ts;
    uint32_t n_known;
    int known_moved;          /* `known` is not the list the read plan below was made for */
    /* The read plan: known thread states sorted by address and grouped into spans of nearby
     * memory, each span one iovec.  The kernel pins the pages of every remote iovec on its
     * own (measured: ~0.4 us per thread state read one by one, most of the cost), and thread
     * states sit close together on the heap. */
    struct span { const char* at; size_t len; uint32_t first, count; } * spans;
    uint32_t n_spans, cap_spans;
    uint32_t* order;          /* indices of `known` by address */
    size_t* fresh_at;         /* where known[j]'s copy is in `span_buf` */
    char* span_buf;
    size_t span_buf_len;
    uint8_t* fresh_ok;        /* 1 read, 2 read and placed in this tick's list */
    uint32_t cap_fresh;
    uint32_t* amap;           /* address -> index in `known`, open addressing; 0 empty */
    uint32_t amap_bits;
    struct iovec iov_local[IOV_BATCH], iov_remote[IOV_BATCH];

    /* rate control (sampler thread) */
    double rate_hz;           /* in force now */
    double rate_floor;
    double budget;            /* share of one core */
    uint64_t window_ns;
    uint64_t window_start_ns, window_cpu_ns;

    /* lifecycle, under g_life_lock: the sampler thread is stopped around fork() in the parent */
    uint64_t started_ns;
    int thread_alive;         /* S.thread is to be joined */
    int paused;               /* stopped for a fork; restarted by the parent */
    int fork_defer;           /* os.fork() restarts it from its Python hook, see ft_sampler.h */
    uint64_t paused_at_ns;    /* the last tick before the pause; 0 when not paused */
    uint64_t last_tick_ns;
    _Atomic int tid;          /* the sampler thread's kernel id */

    char snap[SNAP_MAX];
    uint32_t fids[FT_SAMPLE_MAX_DEPTH + 1];
    uint64_t stat[FT_STAT_COUNT];
} S;

_Static_assert(FT_STAT_COUNT <= sizeof(((ft_sampler_stats*)0)->values) / sizeof(uint64_t),
               "ft_sampler_stats (and ft_summary.sampler) hold every sampler stat");

/* Serializes start, stop and the fork handlers: stop() runs without the GIL and another thread
 * may fork meanwhile.  Static, outside S: S is wiped by ft_sampler_abandon in a child. */
static pthread_mutex_t g_life_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_atfork_registered;

/* Bumped by the code watcher whenever a code object dies (3.12+).  An insert that saw it move
 * may have named a dead object whose address is now reused, so it is not kept. */
static _Atomic uint64_t g_code_deaths;
/* Registered at the first sampling start and kept: it only looks at S.codes (NULL when no
 * sampler runs), and watcher slots are few (8), so a slot is never given back and re-taken. */
#if FT_HAVE_CODE_WATCHERS
static int g_watcher = -1;
#endif

/* ---- safe reads ----------------------------------------------------------------------------- */

static int
safe_read(void* dst, const void* src, size_t n)
{
    struct iovec local = {dst, n};
    struct iovec remote = {(void*)src, n};
    if (process_vm_readv(S.pid, &local, 1, &remote, 1, 0) == (ssize_t)n) {
        return 0;
    }
    S.stat[FT_STAT_READ_FAILURES]++;
    return -1;
}

static int
by_address(const void* a, const void* b)
{
    uintptr_t x = (uintptr_t)S.known[*(const uint32_t*)a]->addr;
    uintptr_t y = (uintptr_t)S.known[*(const uint32_t*)b]->addr;
    return x < y ? -1 : x > y;
}

/* Makes the read plan for S.known (when the list changed: rarely).  0, or -1 on ENOMEM. */
static int
plan_reads(void)
{
    uint32_t n = S.n_known;
    for (uint32_t j = 0; j < n; j++) {
        S.order[j] = j;
    }
    qsort(S.order, n, sizeof *S.order, by_address);
    S.n_spans = 0;
    size_t total = 0;
    for (uint32_t k = 0; k < n; k++) {
        const char* at = (const char*)S.known[S.order[k]]->addr;
        struct span* last = S.n_spans ? &S.spans[S.n_spans - 1] : NULL;
        /* The next state joins the span if it starts at or after the span's end, close to it
         * (a copy of a few hundred bytes costs less than pinning another page). */
        if (last != NULL && at >= last->at + last->len &&
            (size_t)(at - (last->at + last->len)) <= SPAN_GAP &&
            (size_t)(at - last->at) + sizeof(ft_raw_tstate) <= SPAN_MAX) {
            size_t len = (size_t)(at - last->at) + sizeof(ft_raw_tstate);
            total += len - last->len;
            last->len = len;
            last->count++;
        } else {
            if (S.n_spans == S.cap_spans) {
                uint32_t cap = S.cap_spans ? S.cap_spans * 2 : 64;
                struct span* grown = realloc(S.spans, cap * sizeof *grown);
                if (grown == NULL) {
                    return -1;
                }
                S.spans = grown;
                S.cap_spans = cap;
            }
            S.spans[S.n_spans++] = (struct span){at, sizeof(ft_raw_tstate), k, 1};
            total += sizeof(ft_raw_tstate);
        }
    }
    if (total > S.span_buf_len) {
        char* grown = realloc(S.span_buf, total);
        if (grown == NULL) {
            return -1;
        }
        S.span_buf = grown;
        S.span_buf_len = total;
    }
    size_t base = 0;
    for (uint32_t i = 0; i < S.n_spans; i++) {
        struct span* sp = &S.spans[i];
        for (uint32_t k = sp->first; k < sp->first + sp->count; k++) {
            uint32_t j = S.order[k];
            S.fresh_at[j] = base + (size_t)((const char*)S.known[j]->addr - sp->at);
        }
        base += sp->len;
    }
    S.known_moved = 0;
    return 0;
}

static const ft_raw_tstate*
fresh_state(uint32_t j)
{
    return (const ft_raw_tstate*)(S.span_buf + S.fresh_at[j]);
}

/* Re-reads every known thread state: one process_vm_readv per IOV_BATCH spans.  A call stops at
 * the first span it cannot read (it never splits one): that span's states are then read one by
 * one, and the next call starts after it. */
static void
read_known_states(void)
{
    if (S.n_known > 0) {
        memset(S.fresh_ok, 0, S.n_known);
    }
    size_t base = 0; /* where span i's copy goes in span_buf */
    uint32_t i = 0;
    while (i < S.n_spans) {
        uint32_t n = S.n_spans - i < IOV_BATCH ? S.n_spans - i : IOV_BATCH;
        size_t to = base;
        for (uint32_t k = 0; k < n; k++) {
            const struct span* sp = &S.spans[i + k];
            S.iov_local[k] = (struct iovec){S.span_buf + to, sp->len};
            S.iov_remote[k] = (struct iovec){(void*)sp->at, sp->len};
            to += sp->len;
        }
        ssize_t got = process_vm_readv(S.pid, S.iov_local, n, S.iov_remote, n, 0);
        size_t left = got > 0 ? (size_t)got : 0;
        uint32_t k = 0;
        for (; k < n && left >= S.spans[i + k].len; k++) {
            const struct span* sp = &S.spans[i + k];
            left -= sp->len;
            base += sp->len;
            for (uint32_t m = sp->first; m < sp->first + sp->count; m++) {
                S.fresh_ok[S.order[m]] = 1;
            }
        }
        if (k < n) { /* this span failed: its thread states one by one */
            const struct span* sp = &S.spans[i + k];
            S.stat[FT_STAT_READ_FAILURES]++;
            for (uint32_t m = sp->first; m < sp->first + sp->count; m++) {
                uint32_t j = S.order[m];
                S.fresh_ok[j] = safe_read(S.span_buf + S.fresh_at[j], S.known[j]->addr,
                                          sizeof(ft_raw_tstate)) == 0;
            }
            base += sp->len;
            k++;
        }
        i += k;
    }
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

static uint64_t
mono_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t
next_random(void)
{
    /* xorshift64*: the jitter only has to be independent of the program's own period */
    S.rng ^= S.rng >> 12;
    S.rng ^= S.rng << 25;
    S.rng ^= S.rng >> 27;
    return S.rng * 2685821657736338717ull;
}

/* ---- strings -------------------------------------------------------------------------------- */

static uint8_t*
put_utf8(uint8_t* p, uint32_t c)
{
    if (c < 0x80) {
        *p++ = (uint8_t)c;
    } else if (c < 0x800) {
        *p++ = (uint8_t)(0xC0 | (c >> 6));
        *p++ = (uint8_t)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        *p++ = (uint8_t)(0xE0 | (c >> 12));
        *p++ = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        *p++ = (uint8_t)(0x80 | (c & 0x3F));
    } else {
        *p++ = (uint8_t)(0xF0 | ((c >> 18) & 0x07));
        *p++ = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
        *p++ = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        *p++ = (uint8_t)(0x80 | (c & 0x3F));
    }
    return p;
}

/* Copies the str at `addr` as UTF-8 into out (room for 4 * MAX_STR bytes).  Returns the length,
 * or -1 if it is not a readable compact str. */
static int
read_str(const void* addr, uint8_t* out)
{
    ft_raw_str_header h;
    const void* data;
    size_t len;
    if (addr == NULL || safe_read(&h, addr, sizeof h) < 0) {
        return -1;
    }
    int kind = ft_raw_str_layout(addr, &h, &data, &len);
    if (kind == 0) {
        return -1;
    }
    if (len > MAX_STR) {
        len = MAX_STR;
    }
    uint8_t raw[4 * MAX_STR];
    if (len > 0 && safe_read(raw, data, len * (size_t)kind) < 0) {
        return -1;
    }
    if (kind == 1) { /* ASCII or Latin-1 */
        uint8_t* p = out;
        for (size_t i = 0; i < len; i++) {
            p = put_utf8(p, raw[i]);
        }
        return (int)(p - out);
    }
    uint8_t* p = out;
    for (size_t i = 0; i < len; i++) {
        uint32_t c;
        if (kind == 2) {
            uint16_t c16;
            memcpy(&c16, raw + 2 * i, 2);
            c = c16;
        } else {
            memcpy(&c, raw + 4 * i, 4);
            if (c > 0x10FFFF) {
                c = 0xFFFD;
            }
        }
        p = put_utf8(p, c);
    }
    return (int)(p - out);
}

/* ---- functions ------------------------------------------------------------------------------ */

static uint32_t
ptr_hash(uintptr_t p, int bits)
{
    return (uint32_t)(((uint64_t)p * 0x9E3779B97F4A7C15ull) >> (64 - bits));
}

/* Writes the FUNCTION def; returns 1 if the code is a module's top level ("<module>"). */
static int
put_function_def(uint32_t fid, const ft_raw_code* rc)
{
    static uint8_t name[4 * MAX_STR], qual[4 * MAX_STR], file[4 * MAX_STR];
    int nn = read_str(rc->name, name);
    int nq = read_str(rc->qualname, qual);
    int nf = read_str(rc->filename, file);
    if (nn < 0) {
        memcpy(name, "?", 1);
        nn = 1;
    }
    if (nq < 0) {
        memcpy(qual, name, (size_t)nn);
        nq = nn;
    }
    if (nf < 0) {
        nf = 0;
    }
    ft_def_str strs[4] = {{(const char*)name, (size_t)nn}, {(const char*)qual, (size_t)nq},
                          {(const char*)file, (size_t)nf}, {"", 0}}; /* module: "", as traced */
    ft_session_put_function_def(fid, 0, rc->firstlineno, strs);
    return nn == 8 && memcmp(name, "<module>", 8) == 0;
}

/* function_of's miss: the code object at `addr` is not in the table.  `i` is the empty slot
 * where the look-up stopped. */
static uint32_t
new_function(const void* addr, uint32_t i, const void** bytecode, int* is_module)
{
    uintptr_t key = (uintptr_t)addr;
    uint32_t mask = (1u << CODE_TABLE_BITS) - 1;
    if (S.n_codes >= (3u << CODE_TABLE_BITS) / 4) {
        /* Full of code objects (or tombstones): start over.  Functions seen again get new ids
         * with the same names, which readers merge by name. */
        for (uint32_t j = 0; j <= mask; j++) {
            atomic_store_explicit(&S.codes[j].key, 0, memory_order_relaxed);
        }
        S.n_codes = 0;
        i = ptr_hash(key, CODE_TABLE_BITS);
    }
    uint64_t deaths = atomic_load(&g_code_deaths);
    PyCodeObject copy; /* only the first FT_RAW_CODE_SIZE bytes are read */
    if (safe_read(&copy, addr, FT_RAW_CODE_SIZE) < 0 || !ft_raw_is_code_type((PyObject*)&copy)) {
        return 0;
    }
    ft_raw_code rc;
    ft_raw_code_decode(&copy, &rc);
    uint32_t fid = ++S.next_fid;
    *is_module = put_function_def(fid, &rc);
    *bytecode = rc.bytecode;
    if (atomic_load(&g_code_deaths) != deaths) {
        return fid; /* named correctly for this sample, but not cached: see g_code_deaths */
    }
    while (atomic_load_explicit(&S.codes[i].key, memory_order_relaxed) != 0) {
        i = (i + 1) & mask;
    }
    S.codes[i].fid = fid;
    S.codes[i].bytecode = rc.bytecode;
    S.codes[i].is_module = *is_module;
    atomic_store_explicit(&S.codes[i].key, key, memory_order_release);
    S.n_codes++;
    if (atomic_load(&g_code_deaths) != deaths) {
        uintptr_t expected = key;
        atomic_compare_exchange_strong(&S.codes[i].key, &expected, CODE_TOMB);
    }
    return fid;
}

/* The function id of the code object at `addr`, defining it at first sight; 0 if `addr` is
 * not a code object (the frame was torn).  *bytecode gets co_code's data (3.9-3.10). */
static uint32_t
function_of(const void* addr, const void** bytecode, int* is_module)
{
    uintptr_t key = (uintptr_t)addr;
    uint32_t mask = (1u << CODE_TABLE_BITS) - 1;
    uint32_t i = ptr_hash(key, CODE_TABLE_BITS);
    for (;; i = (i + 1) & mask) {
        uintptr_t k = atomic_load_explicit(&S.codes[i].key, memory_order_acquire);
        if (k == key) {
            *bytecode = S.codes[i].bytecode;
            *is_module = S.codes[i].is_module;
            return S.codes[i].fid;
        }
        if (k == 0) {
            break;
        }
    }
    return new_function(addr, i, bytecode, is_module);
}

#if FT_HAVE_CODE_WATCHERS
/* Any thread, GIL held, the code object about to be freed: its address may soon hold another
 * code object, so the sampler must not keep naming it with this one's names. */
static int
code_watcher(PyCodeEvent event, PyCodeObject* co)
{
    if (event != PY_CODE_EVENT_DESTROY || S.codes == NULL) {
        return 0;
    }
    atomic_fetch_add(&g_code_deaths, 1);
    uintptr_t key = (uintptr_t)co;
    uint32_t mask = (1u << CODE_TABLE_BITS) - 1;
    for (uint32_t i = ptr_hash(key, CODE_TABLE_BITS), n = 0; n <= mask; i = (i + 1) & mask, n++) {
        uintptr_t k = atomic_load_explicit(&S.codes[i].key, memory_order_acquire);
        if (k == 0) {
            break;
        }
        if (k == key) {
            atomic_compare_exchange_strong(&S.codes[i].key, &k, CODE_TOMB);
            break;
        }
    }
    return 0;
}
#endif

/* ---- stacks --------------------------------------------------------------------------------- */

static uint64_t
hash_fids(const uint32_t* fids, uint32_t depth, uint8_t flags)
{
    uint64_t h = 0xcbf29ce484222325ull ^ flags;
    for (uint32_t i = 0; i < depth; i++) {
        h = (h ^ fids[i]) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h | 1; /* 0 marks an empty slot */
}

static int
grow_stacks(void)
{
    uint32_t cap = S.stacks_cap * 2;
    stack_entry* grown = calloc(cap, sizeof *grown);
    if (grown == NULL) {
        return -1;
    }
    for (uint32_t i = 0; i < S.stacks_cap; i++) {
        stack_entry* e = &S.stacks[i];
        if (e->hash != 0) {
            uint32_t j = (uint32_t)(e->hash >> 32) & (cap - 1);
            while (grown[j].hash != 0) {
                j = (j + 1) & (cap - 1);
            }
            grown[j] = *e;
        }
    }
    free(S.stacks);
    S.stacks = grown;
    S.stacks_cap = cap;
    return 0;
}

/* stack_of's miss: fids[0..depth) is not in the table.  h is its hash; `i` the empty slot
 * where the look-up stopped. */
static uint32_t
new_stack(const uint32_t* fids, uint32_t depth, uint8_t flags, uint64_t h, uint32_t i)
{
    if (S.arena_len + depth > S.arena_cap) {
        size_t cap = S.arena_cap * 2;
        while (cap < S.arena_len + depth) {
            cap *= 2;
        }
        uint32_t* grown = realloc(S.stack_arena, cap * sizeof *grown);
        if (grown == NULL) {
            return 0;
        }
        S.stack_arena = grown;
        S.arena_cap = cap;
    }
    uint8_t* p = ft_defs_begin(1 + 5 + 1 + 5 + (size_t)depth * 5);
    if (p == NULL) {
        return 0;
    }
    uint32_t sid = ++S.n_stacks;
    *p++ = FT_DEF_STACK;
    p = ft_put_varint(p, sid);
    *p++ = flags;
    p = ft_put_varint(p, depth);
    for (uint32_t d = 0; d < depth; d++) {
        p = ft_put_varint(p, fids[d]);
    }
    ft_defs_end(p);
    memcpy(S.stack_arena + S.arena_len, fids, depth * sizeof *fids);
    stack_entry* e = &S.stacks[i];
    e->hash = h;
    e->sid = sid;
    e->depth = depth;
    e->at = S.arena_len;
    e->flags = flags;
    S.arena_len += depth;
    if (S.n_stacks * 4 > S.stacks_cap * 3) {
        grow_stacks(); /* on failure the table stays usable, only fuller */
    }
    return sid;
}

/* The STACK id of fids[0..depth) (root first), defining it at first sight; 0 on ENOMEM. */
static uint32_t
stack_of(const uint32_t* fids, uint32_t depth, uint8_t flags)
{
    uint64_t h = hash_fids(fids, depth, flags);
    uint32_t mask = S.stacks_cap - 1;
    uint32_t i = (uint32_t)(h >> 32) & mask;
    for (; S.stacks[i].hash != 0; i = (i + 1) & mask) {
        stack_entry* e = &S.stacks[i];
        if (e->hash == h && e->depth == depth && e->flags == flags &&
            memcmp(S.stack_arena + e->at, fids, depth * sizeof *fids) == 0) {
            return e->sid;
        }
    }
    return new_stack(fids, depth, flags, h, i);
}

/* ---- threads -------------------------------------------------------------------------------- */

/* names_lock held.  Takes the name waiting for this ident, if any, and writes the THREAD
 * def (again, when only the ident changed). */
static void
define_thread(thread_entry* t)
{
    char* name = NULL;
    for (uint32_t i = 0; t->ident != 0 && i < S.n_pending; i++) {
        if (S.pending[i].ident == t->ident && t->uid >= S.pending[i].min_uid) {
            name = S.pending[i].name;
            if (t->native_id == 0 && S.pending[i].native_id != 0) {
                __atomic_store_n(&t->native_id, S.pending[i].native_id, __ATOMIC_RELAXED);
            }
            S.pending[i] = S.pending[--S.n_pending];
            t->named = 1;
            break;
        }
    }
    ft_session_put_thread_def(t->id, t->ident, t->native_id, name);
    free(name);
}

/* thread_met's rare case: the thread state got its thread's ident. */
static void
bind_thread(thread_entry* t, uint64_t ident, uint64_t native_id)
{
    pthread_mutex_lock(&S.names_lock);
    t->ident = ident;
    if (native_id != 0) {
        __atomic_store_n(&t->native_id, native_id, __ATOMIC_RELAXED);
    }
    define_thread(t);
    pthread_mutex_unlock(&S.names_lock);
}

static thread_entry*
thread_met(thread_entry* t, uint64_t ident, uint64_t native_id)
{
    if (FT_UNLIKELY(t->ident != ident && ident != 0)) {
        /* A thread state is made by the parent thread and bound to its thread later: until
         * then its ident is 0. */
        bind_thread(t, ident, native_id);
    }
    return t;
}

static thread_entry*
thread_of(uint64_t uid, uint64_t ident, uint64_t native_id)
{
    /* Newest first: live threads are at the end, and most ticks find them at once. */
    for (uint32_t i = S.n_threads; i-- > 0;) {
        thread_entry* t = &S.threads[i];
        if (t->uid == uid) {
            return thread_met(t, ident, native_id);
        }
    }
    pthread_mutex_lock(&S.names_lock);
    if (S.n_threads == S.cap_threads) {
        uint32_t cap = S.cap_threads ? S.cap_threads * 2 : 16;
        thread_entry* grown = realloc(S.threads, cap * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&S.names_lock);
            return NULL;
        }
        S.threads = grown;
        S.cap_threads = cap;
    }
    thread_entry* t = &S.threads[S.n_threads];
    memset(t, 0, sizeof *t);
    t->uid = uid;
    t->ident = ident;
    t->native_id = native_id;
    t->id = ft_session_new_thread_id();
    S.n_threads++;
    define_thread(t);
    pthread_mutex_unlock(&S.names_lock);
    return t;
}

/* The entry of a known thread state's thread, found through its last entry when it has one:
 * a search of the whole table per thread and tick made many threads cost N^2. */
static thread_entry*
thread_for(known_thread* kt, const ft_raw_tstate* ts)
{
    uint64_t native = ft_raw_tstate_native_id(ts);
    if (kt->te != 0 && S.threads[kt->te - 1].uid == (uint64_t)ts->id) {
        return thread_met(&S.threads[kt->te - 1], (uint64_t)ts->thread_id, native);
    }
    thread_entry* t = thread_of(ts->id, (uint64_t)ts->thread_id, native);
    kt->te = t == NULL ? 0 : (uint32_t)(t - S.threads) + 1;
    return t;
}

void
ft_sampler_set_thread_name(uint64_t ident, const char* name, uint64_t native_id, int force,
                           uint64_t min_uid)
{
    if (!S.running || ident == 0) {
        return;
    }
    pthread_mutex_lock(&S.names_lock);
    uint64_t ticks = __atomic_load_n(&S.stat[FT_STAT_TICKS], __ATOMIC_RELAXED);
    for (uint32_t i = S.n_threads; i-- > 0;) {
        thread_entry* t = &S.threads[i];
        /* An ident is reused once its thread ends: a thread just started is one made after
         * min_uid; otherwise an entry the sampler has not met for two ticks is a thread that
         * ended. */
        if (t->ident == ident &&
            (min_uid ? t->uid >= min_uid
                     : __atomic_load_n(&t->seen_tick, __ATOMIC_RELAXED) + 2 >= ticks)) {
            if (!t->named || force) {
                ft_session_put_thread_name(t->id, name);
                t->named = 1;
            }
            if (t->native_id == 0 && native_id != 0) {
                __atomic_store_n(&t->native_id, native_id, __ATOMIC_RELAXED);
            }
            pthread_mutex_unlock(&S.names_lock);
            return; /* older entries with this ident are threads that ended */
        }
    }
    /* Not met yet (it has just been started): keep the name until it is.  An ident is reused
     * once its thread ends, so a newer name for it replaces an older one, and names wait only
     * NAME_PENDING_NS. */
    uint64_t now = mono_ns(CLOCK_MONOTONIC);
    for (uint32_t i = 0; i < S.n_pending;) {
        if (S.pending[i].ident == ident || now - S.pending[i].at_ns > NAME_PENDING_NS) {
            free(S.pending[i].name);
            S.pending[i] = S.pending[--S.n_pending];
        } else {
            i++;
        }
    }
    char* copy = strdup(name);
    if (copy != NULL && S.n_pending < MAX_PENDING) {
        S.pending[S.n_pending++] = (struct pending_name){ident, min_uid, native_id, now, copy};
    } else {
        free(copy);
    }
    pthread_mutex_unlock(&S.names_lock);
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
        if (fr.bad) {
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

/* Reads the thread's innermost frame pointer (NULL: no Python frames).  0, or -1 when the
 * thread state moved under us (see ft_raw_cframe_field). */
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

/* Keeps what a clean walk of a thread that did not hold the GIL found (sid 0: no frames). */
static void
remember(known_thread* kt, const ft_raw_tstate* ts, const ft_raw_gil* gil, int gil_ok,
         uint32_t sid, uint8_t state, uint64_t cpu)
{
    kt->cached = 1;
    kt->sid = sid;
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
            put_sample(tick, te->id, kt->sid, weight, kt->state);
            S.stat[FT_STAT_REUSED]++;
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
    if (top == NULL) {
        if (!holds) {
            remember(kt, ts, gil, gil_ok, 0, 0, 0); /* only the GIL proof can vouch for it */
        }
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
        S.stat[FT_STAT_TORN]++;
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
        S.stat[FT_STAT_TRUNCATED]++;
    }
    uint32_t root_first[FT_SAMPLE_MAX_DEPTH];
    for (uint32_t i = 0; i < w.depth; i++) {
        root_first[i] = S.fids[w.depth - 1 - i];
    }
    uint32_t sid = stack_of(root_first, w.depth, flags);
    if (sid == 0) {
        return;
    }
    put_sample(tick, te->id, sid, weight, state);
    if (!holds && !retried) {
        /* A walk of the thread state read at this tick's start (a retry read another). */
        remember(kt, ts, gil, gil_ok, sid, (uint8_t)state, cpu);
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

static void
forget_known(void)
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
            forget_known(); /* read one by one this tick */
        } else {
            S.cap_fresh = cap;
        }
    }
    if (S.known_moved && plan_reads() < 0) {
        forget_known();
    }
    read_known_states();
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

static void
tick_once(uint64_t interval_ns)
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
    uint32_t n = read_thread_list(head);
    for (uint32_t i = 0; i < n; i++) {
        sample_thread(S.known[i], S.cur_ts[i], &gil, gil_ok, tick, interval_ns);
    }
    __atomic_store_n(&S.stat[FT_STAT_TICKS], S.stat[FT_STAT_TICKS] + 1, __ATOMIC_RELAXED);
}

/* ---- scheduler ------------------------------------------------------------------------------ */

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
        tick_once(now - prev_tick_ns);
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
        forget_known();
    }
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
    if (!S.running || S.paused) {
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
     * very thread in fork_prepare. */
    S.fork_defer = 0;
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
    if (S.running) {
        return EBUSY;
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
    int err = 0;
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
#if FT_HAVE_CODE_WATCHERS
    if (g_watcher < 0 && (g_watcher = PyCode_AddWatcher(code_watcher)) < 0) {
        PyErr_Clear(); /* all slots taken: a recycled code address may keep a stale name */
    }
#endif
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

void
ft_sampler_stop(ft_sampler_stats* out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&g_life_lock); /* not while a fork has the sampler stopped */
    if (!S.running) {
        pthread_mutex_unlock(&g_life_lock);
        return;
    }
    stop_thread();
    uint64_t now = mono_ns(CLOCK_MONOTONIC);
    if (S.paused) { /* a fork's restart never came (or failed) */
        S.stat[FT_STAT_PAUSED_NS] += now - S.paused_at_ns;
        S.paused = 0;
        S.paused_at_ns = 0;
    }
    S.stat[FT_STAT_DURATION_NS] = now - S.started_ns;
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
    ft_session_set_function_count(S.next_fid);
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

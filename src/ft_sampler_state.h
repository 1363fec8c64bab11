/* ft_sampler_state.h: what the sampler's files share; no other file includes it.
 *
 * The state S and its tables' entry types, the constants that size them, and the ft_smp_*
 * functions one file calls in another.  Also, static inline, the few helpers the tick calls in
 * its inner loops (a safe read, a clock, and the hit path of each interning table, whose miss
 * path is the ft_smp_* function declared beside it): split over files, the tick compiles as it
 * did when all of this was one file.  For the same reason every declaration is hidden: S is
 * addressed PC-relative and calls are direct, as for the statics they were.
 *
 * The files: ft_sampler_remote.c (reads of the process's memory: the read plan, strs),
 * ft_sampler_tables.c (functions, stacks and threads, interned and defined; the scope's file
 * names and the helper's side), ft_sampler_walk.c (one thread's stack, the scope applied to it
 * and the samples held for a decision, the thread list, one tick), ft_sampler.c (scheduler,
 * lifecycle, layout check, fork, start and stop).
 */
#ifndef FT_SAMPLER_STATE_H
#define FT_SAMPLER_STATE_H

#ifndef FT_COMPAT_SAMPLER
#error "the sampler's files define _GNU_SOURCE and FT_COMPAT_SAMPLER, then include ft_compat.h"
#endif

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#include "ft_format.h"
#include "ft_sampler.h"
#include "ft_thread.h"

#define MAX_THREADS_PER_TICK 4096
#define SNAP_MAX (256 * 1024)     /* the largest data-stack copy; beyond, frames are read one by one */
#define MAX_STR 1024              /* longer names are cut */
#define CODE_TABLE_BITS 16        /* code objects remembered; the table is reset when 3/4 full */
#define STACK_TABLE_BITS 16
/* Names given for threads the sampler has not met yet wait this long, at most MAX_PENDING. */
#define NAME_PENDING_NS 5000000000ull
#define MAX_PENDING 256
#define IOV_BATCH 1024            /* UIO_MAXIOV: process_vm_readv takes at most this many a side */
/* The scope (ft_sampler.h): file names met, in pages that never move (the helper reads them
 * while the sampler adds more); past the last page a new file is in scope, undecided. */
#define SCOPE_PAGE_BITS 10
#define SCOPE_PAGES 16384
/* Samples held for a decision: beyond this many (or this many frames) one is dropped. */
#define HELD_MAX (1u << 18)
#define HELD_FIDS_MAX ((size_t)1 << 22)
/* Names of functions not defined yet (no kept stack used them): beyond this many bytes,
 * functions are defined at first sight, as without a scope. */
#define DEFERRED_MAX ((size_t)32 << 20)

#pragma GCC visibility push(hidden)

/* ---- state, owned by the sampler thread unless noted --------------------------------------- */

typedef struct {
    _Atomic uintptr_t key; /* code object address; 0 empty; 1 tombstone (the code died) */
    uint32_t fid;
    int is_module;         /* co_name is "<module>": a module's top-level code */
    const void* bytecode;  /* 3.9-3.10: co_code's data, for the call check */
} code_entry;
#define CODE_TOMB ((uintptr_t)1)

/* A file name met in a code object (cfg.scope_patterns). */
enum { SCOPE_PENDING = 0, SCOPE_IN = 1, SCOPE_OUT = 2 };
typedef struct {
    char* name;             /* co_filename as UTF-8; set before the file is published */
    uint32_t len;
    uint64_t hash;
    _Atomic uint8_t state;  /* SCOPE_*: stored by the one deciding it (GIL held) */
} scope_file;

/* A function (the sampler's own id, S.next_fid) when a scope applies: its file, and its id
 * in the file, given when a kept stack first uses it, so that the file defines only the
 * functions of what the scope keeps, with dense ids.  Until then its FUNCTION def's fields
 * wait in `def`. */
typedef struct {
    uint32_t file;          /* its scope_file + 1; 0: in scope (no patterns, or no room) */
    uint32_t out;           /* its function id in the file; 0: not defined yet */
    struct deferred_def {
        int lineno;
        uint32_t name_len, qual_len, file_len; /* then the three strings' bytes */
    }* def;
} scope_fn;

/* A sample held until every file of its stack is decided: `depth` frames (root first) at `at`
 * in held_fids; or one already decided (sid != 0) that waits behind such a one, since samples
 * go out in tick order. */
typedef struct {
    uint64_t tick;
    uint64_t weight_ns;
    size_t at;
    uint32_t thread;
    uint32_t sid;
    uint32_t depth;
    uint8_t state;
    uint8_t flags;
} held_sample;

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
    int out;                  /* with sid 0: the scope kept none of its frames */
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

typedef struct ft_smp_state {
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

    /* The scope (ft_sampler.h), owned by the sampler thread except as noted. */
    int scoped;               /* cfg.scope_patterns, or a max_depth */
    scope_file** scope_pages; /* SCOPE_PAGES pointers; pages are read by the helper */
    uint32_t n_files;
    _Atomic uint32_t files_published; /* guarded by the helper's lock for its wait */
    uint32_t files_taken;     /* the helper's (then stop's): decided below this */
    uint32_t* file_index;     /* file name hash -> scope_file + 1, open addressing */
    uint32_t file_index_bits;
    scope_fn* fns;            /* by the sampler's function id */
    uint32_t cap_fns;
    uint32_t next_out_fid;    /* function ids given in the file */
    size_t deferred_bytes;
    held_sample* held;        /* samples held for a decision, oldest first from held_head */
    uint32_t n_held, held_head, cap_held;
    uint32_t* held_fids;
    size_t held_len, held_cap;
    _Atomic uint64_t helper_ident; /* the helper thread's ident (never sampled); 0: none */
    int halted;               /* ft_sampler_halt joined the thread */
    uint64_t halted_ns;
    uint32_t kept[FT_SAMPLE_MAX_DEPTH];

    char snap[SNAP_MAX];
    uint32_t fids[FT_SAMPLE_MAX_DEPTH + 1];
    uint64_t stat[FT_STAT_COUNT];
} ft_smp_state;

/* The one state, defined in ft_sampler.c (as is g_life_lock): a one-letter name, as when it
 * was a static of one file; hidden, it is seen by the sampler's files alone. */
extern ft_smp_state S;

/* ---- safe reads and clocks (ft_sampler_remote.c has the rest) ------------------------------- */

static inline int
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

/* known[j]'s copy from this tick's read (ft_smp_read_known_states). */
static inline const ft_raw_tstate*
fresh_state(uint32_t j)
{
    return (const ft_raw_tstate*)(S.span_buf + S.fresh_at[j]);
}

static inline uint64_t
mono_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Sampler thread.  The read plan (when S.known changed) and this tick's batched read of
 * every known thread state. */
int ft_smp_plan_reads(void);
void ft_smp_read_known_states(void);
/* The str at `addr` as UTF-8 (room for 4 * MAX_STR bytes): its length, or -1. */
int ft_smp_read_str(const void* addr, uint8_t* out);

/* ---- the interning tables (ft_sampler_tables.c): hit paths here, miss paths there ----------- */

static inline uint32_t
ptr_hash(uintptr_t p, int bits)
{
    return (uint32_t)(((uint64_t)p * 0x9E3779B97F4A7C15ull) >> (64 - bits));
}

/* function_of's miss: reads and defines the code object; `slot` is where the look-up stopped. */
uint32_t ft_smp_new_function(const void* addr, uint32_t slot, const void** bytecode,
                             int* is_module);
/* GIL held, at start: hears of code objects' deaths from then on, once per process. */
void ft_smp_watch_code_deaths(void);

/* The function id of the code object at `addr`, defining it at first sight; 0 if `addr` is
 * not a code object (the frame was torn).  *bytecode gets co_code's data (3.9-3.10). */
static inline uint32_t
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
    return ft_smp_new_function(addr, i, bytecode, is_module);
}

static inline uint64_t
hash_fids(const uint32_t* fids, uint32_t depth, uint8_t flags)
{
    uint64_t h = 0xcbf29ce484222325ull ^ flags;
    for (uint32_t i = 0; i < depth; i++) {
        h = (h ^ fids[i]) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h | 1; /* 0 marks an empty slot */
}

/* stack_of's miss: defines the stack (hash h) in `slot`, where the look-up stopped. */
uint32_t ft_smp_new_stack(const uint32_t* fids, uint32_t depth, uint8_t flags, uint64_t h,
                          uint32_t slot);

/* The STACK id of fids[0..depth) (root first), defining it at first sight; 0 on ENOMEM. */
static inline uint32_t
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
    return ft_smp_new_stack(fids, depth, flags, h, i);
}

/* thread_met's rare case: takes names_lock, sets the ident and writes the THREAD def again. */
void ft_smp_bind_thread(thread_entry* t, uint64_t ident, uint64_t native_id);
/* The entry of the thread state `uid`, made (and defined) at first sight; NULL on ENOMEM. */
thread_entry* ft_smp_thread_of(uint64_t uid, uint64_t ident, uint64_t native_id);

static inline thread_entry*
thread_met(thread_entry* t, uint64_t ident, uint64_t native_id)
{
    if (FT_UNLIKELY(t->ident != ident && ident != 0)) {
        /* A thread state is made by the parent thread and bound to its thread later: until
         * then its ident is 0. */
        ft_smp_bind_thread(t, ident, native_id);
    }
    return t;
}

/* The entry of a known thread state's thread, found through its last entry when it has one:
 * a search of the whole table per thread and tick made many threads cost N^2. */
static inline thread_entry*
thread_for(known_thread* kt, const ft_raw_tstate* ts)
{
    uint64_t native = ft_raw_tstate_native_id(ts);
    if (kt->te != 0 && S.threads[kt->te - 1].uid == (uint64_t)ts->id) {
        return thread_met(&S.threads[kt->te - 1], (uint64_t)ts->thread_id, native);
    }
    thread_entry* t = ft_smp_thread_of(ts->id, (uint64_t)ts->thread_id, native);
    kt->te = t == NULL ? 0 : (uint32_t)(t - S.threads) + 1;
    return t;
}

/* ---- the scope (ft_sampler_tables.c) --------------------------------------------------------- */

static inline scope_file*
scope_file_at(uint32_t i)
{
    return &S.scope_pages[i >> SCOPE_PAGE_BITS][i & ((1u << SCOPE_PAGE_BITS) - 1)];
}

/* SCOPE_IN, SCOPE_OUT or SCOPE_PENDING: whether function `fid` (the sampler's id) is in scope. */
static inline uint8_t
fn_scope(uint32_t fid)
{
    uint32_t f = fid < S.cap_fns ? S.fns[fid].file : 0;
    if (f == 0) {
        return SCOPE_IN;
    }
    return atomic_load_explicit(&scope_file_at(f - 1)->state, memory_order_acquire);
}

/* Sampler thread, at start (GIL held) or with it stopped: the scope's tables; 0 or ENOMEM. */
int ft_smp_scope_alloc(void);
void ft_smp_scope_free(void);
/* Whether a scope helper was expected and has not exited yet. */
int ft_smp_scope_helper_running(void);
/* In a forked child: the helper is not there; its lock and state are made new. */
void ft_smp_scope_after_fork_child(void);

/* ---- the walk (ft_sampler_walk.c) ----------------------------------------------------------- */

/* Sampler thread, or with it stopped: writes the held samples that are decided now, in order,
 * up to the first that is not (`final`: every one; an undecided one is counted as dropped). */
void ft_smp_flush_held(int final);

/* Sampler thread, or with it stopped (free_tables): frees the known thread states. */
void ft_smp_forget_known(void);
/* Sampler thread: one tick, a SAMPLE for each thread with Python frames. */
void ft_smp_tick_once(uint64_t interval_ns);

#pragma GCC visibility pop

#endif /* FT_SAMPLER_STATE_H */

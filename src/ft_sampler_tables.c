/* ft_sampler_tables.c: the sampler's interning tables.  Functions (code objects by
 * address, with the code watcher that tombstones the dead ones), stacks (fid sequences) and
 * threads (thread states by id, with names given before the sampler met them) each get a
 * small id the first time the sampler meets them, and their def goes to the session's defs
 * stream then, ahead of the first SAMPLE that uses them.  The sampler thread owns the tables;
 * `names_lock` guards the thread table against naming (ft_sampler_set_thread_name, with the
 * GIL), and the code watcher (any thread, GIL held) only tombstones entries.  The look-ups'
 * hit paths are static inline in ft_sampler_state.h, in the walk; here are their miss paths.
 *
 * With a scope (ft_sampler.h) two more tables: the file names met, each decided once by the
 * scope helper, and per function its file and its id in the file, given (and its def written)
 * when a kept stack first uses it.  Here too the helper's side of the hand-over.
 */
#define _GNU_SOURCE
#define FT_COMPAT_SAMPLER
#include "ft_compat.h"

#include "ft_sampler_state.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ft_format.h"
#include "ft_defs.h"
#include "ft_fork.h"
#include "ft_session.h"

/* Bumped by the code watcher whenever a code object dies (3.12+).  An insert that saw it move
 * may have named a dead object whose address is now reused, so it is not kept. */
static _Atomic uint64_t g_code_deaths;
/* Registered at the first sampling start and kept: it only looks at S.codes (NULL when no
 * sampler runs), and watcher slots are few (8), so a slot is never given back and re-taken. */
#if FT_HAVE_CODE_WATCHERS
static int g_watcher = -1;
#endif
/* Where there is no code watcher (3.9-3.11, or 3.12+ with every slot taken), code objects'
 * tp_dealloc is wrapped instead, also once and for good: this is the one it wrapped. */
static destructor g_code_dealloc;

/* The scope helper's hand-over (ft_sampler.h).  Statics, outside S: the helper may outlive a
 * session that was never stopped (an exit without stop()), and S is wiped at every start. */
static pthread_mutex_t g_scope_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_scope_cond = PTHREAD_COND_INITIALIZER;
static int g_helper;     /* 1 from ft_sampler_scope_expect until the helper's exit */
static int g_helper_stop; /* the helper is to return from ft_sampler_scope_wait */
static int g_helper_tid;  /* its kernel thread id */
/* os.fork() waits at most this long for the helper's task to leave the thread list. */
#define HELPER_GONE_WAIT_NS 20000000ull

/* ---- the scope's file names --------------------------------------------------------------- */

static uint64_t
hash_bytes(const uint8_t* p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return h;
}

static void
index_file(uint32_t i)
{
    uint32_t mask = (1u << S.file_index_bits) - 1;
    uint32_t j = (uint32_t)(scope_file_at(i)->hash >> 32) & mask;
    while (S.file_index[j] != 0) {
        j = (j + 1) & mask;
    }
    S.file_index[j] = i + 1;
}

static int
grow_file_index(void)
{
    uint32_t bits = S.file_index_bits + 1;
    uint32_t* grown = calloc((size_t)1 << bits, sizeof *grown);
    if (grown == NULL) {
        return -1;
    }
    free(S.file_index);
    S.file_index = grown;
    S.file_index_bits = bits;
    for (uint32_t i = 0; i < S.n_files; i++) {
        index_file(i);
    }
    return 0;
}

/* The file `name` (n bytes) as scope_file + 1, made and published to the helper at first
 * sight; 0 when there is no room for it (its code is then in scope). */
static uint32_t
file_of(const uint8_t* name, size_t n)
{
    uint64_t h = hash_bytes(name, n);
    uint32_t mask = (1u << S.file_index_bits) - 1;
    for (uint32_t j = (uint32_t)(h >> 32) & mask; S.file_index[j] != 0; j = (j + 1) & mask) {
        scope_file* f = scope_file_at(S.file_index[j] - 1);
        if (f->hash == h && f->len == n && memcmp(f->name, name, n) == 0) {
            return S.file_index[j];
        }
    }
    uint32_t i = S.n_files;
    if (i >> SCOPE_PAGE_BITS >= SCOPE_PAGES ||
        (2 * (i + 1) > (1u << S.file_index_bits) && grow_file_index() < 0)) {
        return 0;
    }
    scope_file** page = &S.scope_pages[i >> SCOPE_PAGE_BITS];
    if (*page == NULL && (*page = calloc((size_t)1 << SCOPE_PAGE_BITS, sizeof **page)) == NULL) {
        return 0;
    }
    scope_file* f = scope_file_at(i);
    if ((f->name = malloc(n + 1)) == NULL) {
        return 0;
    }
    memcpy(f->name, name, n);
    f->name[n] = '\0';
    f->len = (uint32_t)n;
    f->hash = h;
    atomic_store_explicit(&f->state, SCOPE_PENDING, memory_order_relaxed);
    S.n_files = i + 1;
    index_file(i);
    pthread_mutex_lock(&g_scope_lock); /* publishes f: the helper reads it after its wait */
    atomic_store_explicit(&S.files_published, S.n_files, memory_order_release);
    pthread_cond_broadcast(&g_scope_cond);
    pthread_mutex_unlock(&g_scope_lock);
    return i + 1;
}

int
ft_smp_scope_alloc(void)
{
    S.scoped = S.cfg.scope_patterns || S.cfg.max_depth != UINT32_MAX;
    if (!S.scoped) {
        return 0;
    }
    S.cap_fns = 1024;
    S.fns = calloc(S.cap_fns, sizeof *S.fns);
    if (S.fns == NULL) {
        return ENOMEM;
    }
    if (S.cfg.scope_patterns) {
        S.scope_pages = calloc(SCOPE_PAGES, sizeof *S.scope_pages);
        S.file_index_bits = 10;
        S.file_index = calloc((size_t)1 << S.file_index_bits, sizeof *S.file_index);
        if (S.scope_pages == NULL || S.file_index == NULL) {
            return ENOMEM;
        }
    }
    return 0;
}

void
ft_smp_scope_free(void)
{
    for (uint32_t i = 0; i < S.cap_fns && S.fns != NULL; i++) {
        free(S.fns[i].def);
    }
    free(S.fns);
    S.fns = NULL;
    S.cap_fns = 0;
    /* A helper still running (a capture that exited without stop()) may read the names:
     * they are leaked then. */
    if (S.scope_pages != NULL && !ft_smp_scope_helper_running()) {
        for (uint32_t i = 0; i < S.n_files; i++) {
            free(scope_file_at(i)->name);
        }
        for (uint32_t p = 0; p < SCOPE_PAGES; p++) {
            free(S.scope_pages[p]);
        }
        free(S.scope_pages);
    }
    S.scope_pages = NULL;
    S.n_files = 0;
    atomic_store(&S.files_published, 0);
    free(S.file_index);
    S.file_index = NULL;
    free(S.held);
    free(S.held_fids);
    S.held = NULL;
    S.held_fids = NULL;
    S.n_held = S.held_head = S.cap_held = 0;
    S.held_len = S.held_cap = 0;
}

/* ---- functions ------------------------------------------------------------------------------ */

/* With a scope: room in S.fns for the function id `fid`; 0, or -1 out of memory. */
static int
reserve_fn(uint32_t fid)
{
    if (fid < S.cap_fns) {
        return 0;
    }
    uint32_t cap = S.cap_fns * 2;
    while (cap <= fid) {
        cap *= 2;
    }
    scope_fn* grown = realloc(S.fns, (size_t)cap * sizeof *grown);
    if (grown == NULL) {
        return -1;
    }
    memset(grown + S.cap_fns, 0, (size_t)(cap - S.cap_fns) * sizeof *grown);
    S.fns = grown;
    S.cap_fns = cap;
    return 0;
}

/* With a scope: keeps the FUNCTION def's fields of function `fid` until a kept stack uses it;
 * -1 when they cannot wait (out of memory, or too much waits already). */
static int
defer_def(scope_fn* fn, int lineno, const ft_def_str strs[3])
{
    size_t n = sizeof *fn->def + strs[0].n + strs[1].n + strs[2].n;
    if (S.deferred_bytes + n > DEFERRED_MAX || (fn->def = malloc(n)) == NULL) {
        return -1;
    }
    fn->def->lineno = lineno;
    fn->def->name_len = (uint32_t)strs[0].n;
    fn->def->qual_len = (uint32_t)strs[1].n;
    fn->def->file_len = (uint32_t)strs[2].n;
    char* p = (char*)(fn->def + 1);
    for (int i = 0; i < 3; i++) {
        memcpy(p, strs[i].s, strs[i].n);
        p += strs[i].n;
    }
    S.deferred_bytes += n;
    return 0;
}

/* With a scope: gives function `fid` its id in the file and writes its def; 0, or -1 out of
 * memory (it stays undefined). */
static int
define_fn(uint32_t fid)
{
    scope_fn* fn = &S.fns[fid];
    struct deferred_def* d = fn->def;
    if (d == NULL) {
        return -1; /* cannot happen: a function without an id keeps its def */
    }
    const char* p = (const char*)(d + 1);
    ft_def_str strs[4] = {{p, d->name_len},
                          {p + d->name_len, d->qual_len},
                          {p + d->name_len + d->qual_len, d->file_len},
                          {"", 0}};
    if (ft_defs_put_function(S.next_out_fid + 1, 0, d->lineno, strs) < 0) {
        return -1;
    }
    fn->out = ++S.next_out_fid;
    S.deferred_bytes -= sizeof *d + d->name_len + d->qual_len + d->file_len;
    free(d);
    fn->def = NULL;
    return 0;
}

/* Writes the FUNCTION def (with a scope: keeps it, see scope_fn); returns 1 if the code is a
 * module's top level ("<module>"). */
static int
put_function_def(uint32_t fid, const ft_raw_code* rc)
{
    static uint8_t name[4 * MAX_STR], qual[4 * MAX_STR], file[4 * MAX_STR];
    int nn = ft_smp_read_str(rc->name, name);
    int nq = ft_smp_read_str(rc->qualname, qual);
    int nf = ft_smp_read_str(rc->filename, file);
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
    int is_module = nn == 8 && memcmp(name, "<module>", 8) == 0;
    if (S.scoped) {
        scope_fn* fn = &S.fns[fid]; /* reserved by the caller */
        memset(fn, 0, sizeof *fn);
        if (S.cfg.scope_patterns) {
            fn->file = file_of(file, (size_t)nf);
        }
        if (defer_def(fn, rc->firstlineno, strs) < 0) {
            /* defined now, as without a scope: the file may then hold functions that no
             * kept stack uses */
            if (ft_defs_put_function(S.next_out_fid + 1, 0, rc->firstlineno, strs) == 0) {
                fn->out = ++S.next_out_fid;
            }
        }
        return is_module;
    }
    ft_defs_put_function(fid, 0, rc->firstlineno, strs);
    return is_module;
}

/* function_of's miss (ft_sampler_state.h): the code object at `addr` is not in the table.
 * `i` is the empty slot where the look-up stopped. */
uint32_t
ft_smp_new_function(const void* addr, uint32_t i, const void** bytecode, int* is_module)
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
    if (S.scoped && reserve_fn(S.next_fid + 1) < 0) {
        return 0;
    }
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

/* Any thread, GIL held, the code object at `co` about to be freed: its address may soon hold
 * another code object, so the sampler must not keep naming it with this one's names.  Without
 * this, a module's top level (freed once it has run) lent its name to the next code object
 * made at its address: samples of a multiprocessing worker began in fasttrace's sitecustomize
 * on 3.9-3.11. */
static void
forget_code(const void* co)
{
    if (S.codes == NULL) {
        return;
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
}

/* PyCode_Type.tp_dealloc while wrapped: borrowed `co`, whose last reference is being dropped;
 * forgets it, then frees it as the interpreter would have. */
static void
dealloc_watched_code(PyObject* co)
{
    forget_code(co);
    g_code_dealloc(co);
}

#if FT_HAVE_CODE_WATCHERS
static int
code_watcher(PyCodeEvent event, PyCodeObject* co)
{
    if (event == PY_CODE_EVENT_DESTROY) {
        forget_code(co);
    }
    return 0;
}
#endif

/* GIL held, at start: the code watcher is registered once and kept (see g_watcher); where
 * there is none, or no free slot, PyCode_Type's tp_dealloc is wrapped, once and kept. */
void
ft_smp_watch_code_deaths(void)
{
#if FT_HAVE_CODE_WATCHERS
    if (g_watcher >= 0) {
        return;
    }
    if ((g_watcher = PyCode_AddWatcher(code_watcher)) >= 0) {
        return;
    }
    PyErr_Clear();
#endif
    if (g_code_dealloc == NULL) {
        g_code_dealloc = PyCode_Type.tp_dealloc;
        PyCode_Type.tp_dealloc = dealloc_watched_code;
    }
}

/* ---- stacks --------------------------------------------------------------------------------- */

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

/* stack_of's miss (ft_sampler_state.h): fids[0..depth) is not in the table.  h is its hash;
 * `i` the empty slot where the look-up stopped. */
uint32_t
ft_smp_new_stack(const uint32_t* fids, uint32_t depth, uint8_t flags, uint64_t h, uint32_t i)
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
    if (S.scoped) { /* functions get their ids in the file as kept stacks first use them */
        for (uint32_t d = 0; d < depth; d++) {
            if (S.fns[fids[d]].out == 0 && define_fn(fids[d]) < 0) {
                return 0;
            }
        }
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
        p = ft_put_varint(p, S.scoped ? S.fns[fids[d]].out : fids[d]);
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
    ft_defs_put_thread(t->id, t->ident, t->native_id, name);
    free(name);
}

/* thread_met's rare case (ft_sampler_state.h): the thread state got its thread's ident. */
void
ft_smp_bind_thread(thread_entry* t, uint64_t ident, uint64_t native_id)
{
    pthread_mutex_lock(&S.names_lock);
    t->ident = ident;
    if (native_id != 0) {
        __atomic_store_n(&t->native_id, native_id, __ATOMIC_RELAXED);
    }
    define_thread(t);
    pthread_mutex_unlock(&S.names_lock);
}

thread_entry*
ft_smp_thread_of(uint64_t uid, uint64_t ident, uint64_t native_id)
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
                ft_defs_put_thread_name(t->id, name);
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

/* ---- the scope helper's side (ft_sampler.h) -------------------------------------------------- */

void
ft_sampler_scope_expect(void)
{
    pthread_mutex_lock(&g_scope_lock);
    g_helper = 1;
    g_helper_stop = 0;
    pthread_mutex_unlock(&g_scope_lock);
}

int
ft_sampler_scope_enter(uint64_t ident)
{
    pthread_mutex_lock(&g_scope_lock);
    g_helper_tid = (int)syscall(SYS_gettid);
    int ok = !g_helper_stop;
    if (ok) {
        atomic_store(&S.helper_ident, ident);
    }
    pthread_mutex_unlock(&g_scope_lock);
    return ok ? 0 : -1;
}

int
ft_sampler_scope_wait(uint32_t* first, uint32_t* end)
{
    pthread_mutex_lock(&g_scope_lock);
    while (!g_helper_stop &&
           atomic_load_explicit(&S.files_published, memory_order_acquire) == S.files_taken) {
        pthread_cond_wait(&g_scope_cond, &g_scope_lock);
    }
    int r = g_helper_stop ? -1 : 0;
    *first = S.files_taken;
    *end = atomic_load_explicit(&S.files_published, memory_order_acquire);
    pthread_mutex_unlock(&g_scope_lock);
    return r;
}

const char*
ft_sampler_scope_file(uint32_t i, size_t* len)
{
    scope_file* f = scope_file_at(i);
    *len = f->len;
    return f->name;
}

void
ft_sampler_scope_decide(uint32_t i, int in)
{
    atomic_store_explicit(&scope_file_at(i)->state, in ? SCOPE_IN : SCOPE_OUT,
                          memory_order_release);
}

void
ft_sampler_scope_taken(uint32_t end)
{
    pthread_mutex_lock(&g_scope_lock);
    S.files_taken = end;
    pthread_mutex_unlock(&g_scope_lock);
}

void
ft_sampler_scope_exit(void)
{
    pthread_mutex_lock(&g_scope_lock);
    atomic_store(&S.helper_ident, 0);
    g_helper = 0;
    pthread_cond_broadcast(&g_scope_cond);
    pthread_mutex_unlock(&g_scope_lock);
}

/* Tells the helper to stop and waits until it has exited: its kernel thread id, 0 if none ran. */
static int
stop_helper(void)
{
    pthread_mutex_lock(&g_scope_lock);
    int ran = g_helper;
    g_helper_stop = 1;
    pthread_cond_broadcast(&g_scope_cond);
    while (g_helper) {
        pthread_cond_wait(&g_scope_cond, &g_scope_lock);
    }
    int tid = ran ? g_helper_tid : 0;
    pthread_mutex_unlock(&g_scope_lock);
    return tid;
}

void
ft_sampler_scope_join(void)
{
    stop_helper();
}

int
ft_sampler_scope_pause(void)
{
    int tid = stop_helper();
    /* Gone from /proc/self/stat too, where CPython 3.12+ counts the threads (ft_fork.h). */
    ft_fork_wait_task_gone(tid, HELPER_GONE_WAIT_NS);
    return tid != 0;
}

void
ft_sampler_scope_pending(uint32_t* first, uint32_t* end)
{
    pthread_mutex_lock(&g_scope_lock);
    *first = S.files_taken;
    *end = atomic_load_explicit(&S.files_published, memory_order_acquire);
    pthread_mutex_unlock(&g_scope_lock);
}

int
ft_smp_scope_helper_running(void)
{
    pthread_mutex_lock(&g_scope_lock);
    int r = g_helper;
    pthread_mutex_unlock(&g_scope_lock);
    return r;
}

void
ft_smp_scope_after_fork_child(void)
{
    /* The helper thread does not exist here, and may have held the lock at fork(). */
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
    memcpy(&g_scope_lock, &lock, sizeof lock);
    memcpy(&g_scope_cond, &cond, sizeof cond);
    g_helper = 0;
    g_helper_stop = 0;
    g_helper_tid = 0;
}

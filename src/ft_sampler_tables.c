/* ft_sampler_tables.c: the sampler's interning tables.  Functions (code objects by
 * address, with the code watcher that tombstones the dead ones), stacks (fid sequences) and
 * threads (thread states by id, with names given before the sampler met them) each get a
 * small id the first time the sampler meets them, and their def goes to the session's defs
 * stream then, ahead of the first SAMPLE that uses them.  The sampler thread owns the tables;
 * `names_lock` guards the thread table against naming (ft_sampler_set_thread_name, with the
 * GIL), and the code watcher (any thread, GIL held) only tombstones entries.  The look-ups'
 * hit paths are static inline in ft_sampler_state.h, in the walk; here are their miss paths.
 */
#define _GNU_SOURCE
#define FT_COMPAT_SAMPLER
#include "ft_compat.h"

#include "ft_sampler_state.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ft_format.h"
#include "ft_defs.h"
#include "ft_session.h"

/* Bumped by the code watcher whenever a code object dies (3.12+).  An insert that saw it move
 * may have named a dead object whose address is now reused, so it is not kept. */
static _Atomic uint64_t g_code_deaths;
/* Registered at the first sampling start and kept: it only looks at S.codes (NULL when no
 * sampler runs), and watcher slots are few (8), so a slot is never given back and re-taken. */
#if FT_HAVE_CODE_WATCHERS
static int g_watcher = -1;
#endif

/* ---- functions ------------------------------------------------------------------------------ */

/* Writes the FUNCTION def; returns 1 if the code is a module's top level ("<module>"). */
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
    ft_defs_put_function(fid, 0, rc->firstlineno, strs);
    return nn == 8 && memcmp(name, "<module>", 8) == 0;
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

/* GIL held, at start: code_watcher is registered once and kept (see g_watcher). */
void
ft_smp_watch_code_deaths(void)
{
    if (g_watcher < 0 && (g_watcher = PyCode_AddWatcher(code_watcher)) < 0) {
        PyErr_Clear(); /* all slots taken: a recycled code address may keep a stale name */
    }
}
#endif

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

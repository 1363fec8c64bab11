/* ft_session.c: start and stop, the thread registry and the definitions stream. */
#include "ft_session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "ft_format.h"
#include "ft_sampler.h"

ft_session ft_S;
_Atomic uint32_t ft_active_gen = FT_GEN_NONE;
static uint32_t g_last_gen = 0;

/* ---- header ------------------------------------------------------------------------------ */

static uint8_t*
put_str(uint8_t* p, const char* s, size_t n)
{
    p = ft_put_varint(p, n);
    memcpy(p, s, n);
    return p + n;
}

static int
write_all(int fd, const uint8_t* buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
write_header(const ft_config* cfg, uint32_t clock_kind)
{
    size_t py_len = strlen(cfg->python_version);
    size_t cap = FT_PREAMBLE_SIZE + 128 + cfg->command_line_size + py_len + 20;
    uint8_t* buf = malloc(cap);
    if (buf == NULL) {
        return ENOMEM;
    }
    uint8_t* body = buf + FT_PREAMBLE_SIZE;
    uint8_t* p = body;
    double hz = ft_clock_tick_hz();
    p = ft_put_u32(p, cfg->python_version_hex);
    p = ft_put_u32(p, (uint32_t)getpid());
    p = ft_put_u32(p, cfg->mode == FT_MODE_SAMPLE ? FT_MODE_SAMPLE : FT_MODE_TRACE);
    p = ft_put_u32(p, (cfg->c_calls ? FT_HEADER_C_CALLS : 0) |
                          ((uint32_t)cfg->hook << FT_HEADER_HOOK_SHIFT) |
                          (cfg->hook_fallback ? FT_HEADER_HOOK_FALLBACK : 0));
    p = ft_put_u32(p, clock_kind);
    p = ft_put_u32(p, cfg->chunk_size);
    p = ft_put_u64(p, (uint64_t)cfg->chunk_size * cfg->n_chunks);
    p = ft_put_u64(p, ft_S.start_clock.tick);
    p = ft_put_u64(p, ft_S.start_clock.mono_ns);
    p = ft_put_u64(p, ft_S.start_clock.wall_ns);
    memcpy(p, &hz, 8);
    p += 8;
    p = put_str(p, cfg->command_line, cfg->command_line_size);
    p = put_str(p, cfg->python_version, py_len);
    uint32_t body_size = (uint32_t)(p - body);
    memcpy(buf, FT_MAGIC, FT_MAGIC_SIZE);
    ft_put_u32(buf + 8, FT_FORMAT_VERSION);
    ft_put_u32(buf + 12, body_size);
    ft_put_u32(buf + 16, (uint32_t)crc32(0, body, body_size));
    int err = write_all(cfg->fd, buf, FT_PREAMBLE_SIZE + body_size);
    free(buf);
    if (err == 0) {
        ft_S.bytes = ft_S.good_bytes = FT_PREAMBLE_SIZE + body_size;
    }
    return err;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static void kick_writer(void);

int
ft_session_start(const ft_config* cfg)
{
    if (ft_S.running) {
        return EBUSY;
    }
    uint32_t clock_kind = (uint32_t)ft_clock_init();
    memset(&ft_S, 0, sizeof ft_S);
    ft_thread_kick_writer = kick_writer; /* before any ring exists */
    pthread_mutex_init(&ft_S.lock, NULL);
    pthread_mutex_init(&ft_S.defs_lock, NULL);
    pthread_mutex_init(&ft_S.wake_lock, NULL);
    pthread_cond_init(&ft_S.wake, NULL);
    ft_S.fd = cfg->fd;
    ft_S.mode = cfg->mode;
    ft_S.hook = cfg->hook;
    ft_S.c_calls = cfg->c_calls;
    ft_S.chunk_size = cfg->chunk_size;
    ft_S.n_chunks = cfg->n_chunks;
    g_last_gen = (g_last_gen + 1) % FT_GEN_NONE;
    if (g_last_gen == 0) {
        g_last_gen = 1; /* 0 is every new thread's cached generation */
    }
    ft_S.gen = g_last_gen;
    /* A ring that cannot even be reserved now would make every thread's first event fail:
     * say so at start() instead of recording nothing. */
    ft_thread* probe = ft_thread_new(0, cfg->chunk_size, cfg->n_chunks);
    if (probe == NULL) {
        return ENOMEM;
    }
    ft_thread_free(probe);
    ft_S.path = cfg->path != NULL ? strdup(cfg->path) : NULL;
    ft_clock_sample(&ft_S.start_clock);
    int err = write_header(cfg, clock_kind);
    if (err == 0) {
        err = ft_writer_start();
    }
    if (err != 0) {
        free(ft_S.path);
        ft_S.path = NULL;
        return err;
    }
    ft_S.running = 1;
    atomic_store(&ft_active_gen, ft_S.gen);
    return 0;
}

void
ft_session_quiesce(void)
{
    atomic_store(&ft_active_gen, FT_GEN_NONE);
}

static void
free_snapshots(void)
{
    ft_snapshot* s = ft_S.snapshots;
    while (s != NULL) {
        ft_snapshot* next = s->next;
        free(s->fids);
        free(s);
        s = next;
    }
    ft_S.snapshots = NULL;
}

void
ft_session_finish(ft_summary* out)
{
    ft_sampler_stats sampled;
    ft_sampler_stop(&sampled); /* first: its last chunk and stats def go out with the rest */
    ft_writer_join();
    ft_clock_sync stop;
    ft_clock_sample(&stop);
    /* Empty the rings first, so that a thread still dropping can write the DROP record that
     * closes its gap. */
    while (ft_writer_drain() > 0) {
    }
    pthread_mutex_lock(&ft_S.lock);
    for (uint32_t i = 0; i < ft_S.n_threads; i++) {
        ft_thread* t = ft_S.threads[i];
        if (t != NULL && !t->finished) {
            ft_thread_finish(t, stop.tick);
            t->finished = 1;
        }
    }
    pthread_mutex_unlock(&ft_S.lock);
    /* Every chunk is published now; a ring that was full empties one round at a time. */
    while (ft_writer_drain() > 0) {
    }
    ft_writer_drain(); /* frees the threads finished in the last round */
    ft_S.dropped += atomic_load(&ft_S.lost_events);
    ft_writer_write_clock();
    ft_writer_write_trailer(&stop);
    if (ft_S.fd >= 0) {
        close(ft_S.fd);
        ft_S.fd = -1;
    }

    memset(out, 0, sizeof *out);
    out->events = ft_S.events;
    out->dropped = ft_S.dropped; /* the trailer's count: rings and threads with none */
    out->lost_threads = ft_S.lost_threads;
    out->hook_lost_threads = ft_S.hook_lost_threads;
    out->bytes = ft_S.bytes;
    out->duration_ns = stop.mono_ns - ft_S.start_clock.mono_ns;
    out->threads = ft_S.n_threads + ft_S.n_sampled_threads;
    out->functions = ft_S.n_functions;
    memcpy(out->sampler, sampled.values, sizeof out->sampler);
    out->error = atomic_load(&ft_S.writer_error);
    out->error_offset = ft_S.error_offset;

    for (uint32_t i = 0; i < ft_S.n_threads; i++) {
        ft_thread_free(ft_S.threads[i]);
    }
    free(ft_S.threads);
    ft_S.threads = NULL;
    ft_thread_free(ft_S.sample_ring);
    ft_S.sample_ring = NULL;
    free(ft_S.defs);
    ft_S.defs = NULL;
    free_snapshots();
    free(ft_S.path);
    ft_S.path = NULL;
    ft_S.running = 0;
}

void
ft_session_at_exit(void)
{
    if (!ft_S.running) {
        return;
    }
    ft_session_quiesce();
    char* path = ft_S.path != NULL ? strdup(ft_S.path) : NULL;
    ft_summary sum;
    ft_session_finish(&sum);
    char line[512];
    int n;
    if (sum.error != 0) {
        n = snprintf(line, sizeof line,
                     "fasttrace: writing %s failed at byte %llu: %s; tracing stopped there\n",
                     path ? path : "the trace", (unsigned long long)sum.error_offset,
                     strerror(sum.error));
    }
    else {
        n = snprintf(line, sizeof line,
                     "fasttrace: warning: the trace was still running when the interpreter "
                     "exited (started after atexit handlers ran?); it was stopped and saved "
                     "to %s (%llu records)\n",
                     path ? path : "its file", (unsigned long long)sum.events);
    }
    free(path);
    if (n > 0) {
        ssize_t w = write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        (void)w;
    }
}

void
ft_session_abandon(void)
{
    /* After fork the writer thread does not exist in the child and the locks may be held by
     * threads that are gone: drop everything without joining, unlocking or freeing.  The
     * memory is leaked on purpose (memray does the same). */
    atomic_store(&ft_active_gen, FT_GEN_NONE);
    if (ft_S.fd >= 0) {
        close(ft_S.fd);
    }
    ft_sampler_abandon();
    memset(&ft_S, 0, sizeof ft_S); /* ft_S.path leaks with the rest */
    ft_S.fd = -1;
}

/* ---- registry ---------------------------------------------------------------------------- */

static ft_snapshot*
take_snapshot(uint64_t ident)
{
    ft_snapshot** link = &ft_S.snapshots;
    for (ft_snapshot* s = *link; s != NULL; link = &s->next, s = s->next) {
        if (s->ident == ident) {
            *link = s->next;
            return s;
        }
    }
    return NULL;
}

void
ft_session_add_snapshot(uint64_t ident, const uint32_t* fids_leaf_first, uint32_t depth,
                        uint32_t muted)
{
    ft_snapshot* s = calloc(1, sizeof *s);
    if (s == NULL || (depth > 0 && (s->fids = malloc(depth * sizeof(uint32_t))) == NULL)) {
        free(s);
        return; /* that thread's first returns become orphans: correct, only less tidy */
    }
    s->ident = ident;
    s->depth = depth;
    s->muted = muted;
    for (uint32_t i = 0; i < depth; i++) {
        s->fids[i] = fids_leaf_first[depth - 1 - i];
    }
    pthread_mutex_lock(&ft_S.lock);
    s->next = ft_S.snapshots;
    ft_S.snapshots = s;
    pthread_mutex_unlock(&ft_S.lock);
}

void
ft_session_put_thread_def(uint32_t id, uint64_t ident, uint64_t native_id, const char* name)
{
    size_t n = name != NULL ? strlen(name) : 0;
    uint8_t* p = ft_defs_begin(1 + 30 + 10 + n);
    if (p == NULL) {
        return;
    }
    *p++ = FT_DEF_THREAD;
    p = ft_put_varint(p, id);
    p = ft_put_varint(p, ident);
    p = ft_put_varint(p, native_id);
    p = put_str(p, name != NULL ? name : "", n);
    ft_defs_end(p);
}

ft_thread*
ft_session_attach_thread(uint64_t ident, uint64_t native_id, const char* name)
{
    pthread_mutex_lock(&ft_S.lock);
    if (ft_S.n_threads == ft_S.cap_threads) {
        uint32_t cap = ft_S.cap_threads ? ft_S.cap_threads * 2 : 16;
        ft_thread** grown = realloc(ft_S.threads, cap * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&ft_S.lock);
            return NULL;
        }
        ft_S.threads = grown;
        ft_S.cap_threads = cap;
    }
    ft_thread* t = ft_thread_new(ft_S.n_threads + 1, ft_S.chunk_size, ft_S.n_chunks);
    if (t == NULL) {
        /* Out of memory (or address space): this thread goes unrecorded, and says so. */
        ft_S.lost_threads++;
        pthread_mutex_unlock(&ft_S.lock);
        return NULL;
    }
    t->ident = ident;
    t->native_id = native_id;
    ft_S.threads[ft_S.n_threads++] = t;
    ft_snapshot* snap = take_snapshot(ident);
    pthread_mutex_unlock(&ft_S.lock);

    t->last_tick = ft_S.start_clock.tick;
    t->chunk_base_tick = t->last_tick;
    ft_session_put_thread_def(t->id, t->ident, t->native_id, name);
    if (name != NULL) {
        ft_thread_named(t);
    }
    if (snap != NULL) {
        /* Frames that were already running at start() open at the start time. */
        if (snap->depth > 0) { /* fids is NULL for an empty stack */
            memcpy(t->stack, snap->fids, (size_t)snap->depth * sizeof(uint32_t));
        }
        t->depth = snap->depth;
        ft_thread_put_stack(t, FT_REC_STACK, 0, ft_S.start_clock.tick);
        if (snap->muted > 0) {
            ft_thread_mute(t, snap->muted);
        }
        free(snap->fids);
        free(snap);
    }
    return t;
}

void
ft_session_thread_exit(uint32_t gen, uint32_t id)
{
    pthread_mutex_lock(&ft_S.lock);
    if (ft_S.running && gen == ft_S.gen && id >= 1 && id <= ft_S.n_threads) {
        ft_thread* t = ft_S.threads[id - 1];
        if (t != NULL && !t->finished) {
            ft_thread_finish(t, ft_ticks());
            t->finished = 1;
        }
    }
    pthread_mutex_unlock(&ft_S.lock);
}

ft_thread*
ft_session_find_thread(uint64_t ident)
{
    ft_thread* found = NULL;
    pthread_mutex_lock(&ft_S.lock);
    for (uint32_t i = 0; i < ft_S.n_threads && found == NULL; i++) {
        ft_thread* t = ft_S.threads[i];
        if (t != NULL && !t->finished && t->ident == ident) {
            found = t;
        }
    }
    pthread_mutex_unlock(&ft_S.lock);
    return found;
}

void
ft_session_each_thread(void (*fn)(ft_thread* t, void* arg), void* arg)
{
    pthread_mutex_lock(&ft_S.lock);
    for (uint32_t i = 0; i < ft_S.n_threads; i++) {
        ft_thread* t = ft_S.threads[i];
        if (t != NULL && !t->finished) {
            fn(t, arg);
        }
    }
    pthread_mutex_unlock(&ft_S.lock);
}

void
ft_session_hook_lost(ft_thread* t, const char* what)
{
    if (!ft_thread_lose_hook(t)) {
        return;
    }
    ft_S.hook_lost_threads++;
    size_t n = strlen(what);
    uint8_t* p = ft_defs_begin(1 + 10 + 10 + 10 + n);
    if (p != NULL) {
        *p++ = FT_DEF_HOOK_LOST;
        p = ft_put_varint(p, t->id);
        p = ft_put_varint(p, t->last_tick);
        p = put_str(p, what, n);
        ft_defs_end(p);
    }
}

void
ft_session_put_thread_name(uint32_t id, const char* name)
{
    size_t n = strlen(name);
    uint8_t* p = ft_defs_begin(1 + 10 + 10 + n);
    if (p != NULL) {
        *p++ = FT_DEF_THREAD_NAME;
        p = ft_put_varint(p, id);
        p = put_str(p, name, n);
        ft_defs_end(p);
    }
}

void
ft_session_name_thread(ft_thread* t, const char* name)
{
    pthread_mutex_lock(&ft_S.lock);
    ft_session_put_thread_name(t->id, name);
    pthread_mutex_unlock(&ft_S.lock);
}

void
ft_session_set_thread_name(uint64_t ident, const char* name)
{
    /* Idents are reused once a thread ends: only a live thread can carry this one. */
    pthread_mutex_lock(&ft_S.lock);
    for (uint32_t i = 0; i < ft_S.n_threads; i++) {
        ft_thread* t = ft_S.threads[i];
        if (t != NULL && !t->finished && t->ident == ident) {
            ft_session_put_thread_name(t->id, name);
        }
    }
    pthread_mutex_unlock(&ft_S.lock);
}

/* ---- definitions stream ------------------------------------------------------------------ */

uint8_t*
ft_defs_begin(size_t size)
{
    pthread_mutex_lock(&ft_S.defs_lock);
    if (ft_S.defs_len + size > ft_S.defs_cap) {
        size_t cap = ft_S.defs_cap ? ft_S.defs_cap : 4096;
        while (cap < ft_S.defs_len + size) {
            cap *= 2;
        }
        uint8_t* grown = realloc(ft_S.defs, cap);
        if (grown == NULL) {
            pthread_mutex_unlock(&ft_S.defs_lock);
            return NULL;
        }
        ft_S.defs = grown;
        ft_S.defs_cap = cap;
    }
    return ft_S.defs + ft_S.defs_len;
}

void
ft_defs_end(uint8_t* end)
{
    ft_S.defs_len = (size_t)(end - ft_S.defs);
    pthread_mutex_unlock(&ft_S.defs_lock);
}

int
ft_session_put_function_def(uint32_t fid, uint8_t flags, int lineno, const ft_def_str strs[4])
{
    size_t size = 1 + 5 + 1 + 5;
    for (int i = 0; i < 4; i++) {
        size += 10 + strs[i].n;
    }
    uint8_t* p = ft_defs_begin(size);
    if (p == NULL) {
        return -1; /* the reader reports the undefined id */
    }
    *p++ = FT_DEF_FUNCTION;
    p = ft_put_varint(p, fid);
    *p++ = flags;
    p = ft_put_varint(p, lineno > 0 ? (uint64_t)lineno : 0);
    for (int i = 0; i < 4; i++) {
        p = put_str(p, strs[i].s, strs[i].n);
    }
    ft_defs_end(p);
    return 0;
}

ft_thread*
ft_session_sample_ring(void)
{
    pthread_mutex_lock(&ft_S.lock);
    if (ft_S.sample_ring == NULL) {
        ft_S.sample_ring = ft_thread_new(0, ft_S.chunk_size, ft_S.n_chunks);
        if (ft_S.sample_ring != NULL) {
            ft_S.sample_ring->chunk_type = FT_CHUNK_SAMPLES;
            ft_S.sample_ring->name_pending = 0;
            ft_S.sample_ring->last_tick = ft_S.start_clock.tick;
            ft_S.sample_ring->chunk_base_tick = ft_S.start_clock.tick;
        }
    }
    pthread_mutex_unlock(&ft_S.lock);
    return ft_S.sample_ring;
}

uint32_t
ft_session_new_thread_id(void)
{
    pthread_mutex_lock(&ft_S.lock);
    uint32_t id = ++ft_S.n_sampled_threads;
    pthread_mutex_unlock(&ft_S.lock);
    return id;
}

void
ft_session_set_function_count(uint32_t n)
{
    ft_S.n_functions = n;
}

/* ft_thread_kick_writer: a ring is half full. */
static void
kick_writer(void)
{
    pthread_cond_signal(&ft_S.wake);
}

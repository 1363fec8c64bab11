/* ft_session.c: start and stop, the thread registry and the definitions stream. */
#include "ft_session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "ft_defs.h"
#include "ft_flight.h"
#include "ft_format.h"
#include "ft_series.h"
#include "ft_sink.h"
#include "ft_writer.h"

ft_session ft_S;
_Atomic uint32_t ft_active_gen = FT_GEN_NONE;
static uint32_t g_last_gen = 0;

/* ---- lifecycle --------------------------------------------------------------------------- */

/* ---- what the writer takes from the session (ft_writer_sources) ---- */

static ft_ring_ref*
writer_rings(size_t* n)
{
    pthread_mutex_lock(&ft_S.lock);
    size_t count = ft_S.n_threads + (ft_S.sample_ring != NULL);
    ft_ring_ref* out = malloc((count ? count : 1) * sizeof *out);
    *n = 0;
    if (out != NULL) {
        for (uint32_t i = 0; i < ft_S.n_threads; i++) {
            ft_thread* t = ft_S.threads[i];
            if (t != NULL) {
                out[*n].ring = t;
                out[*n].head = atomic_load_explicit(&t->head, memory_order_acquire);
                (*n)++;
            }
        }
        if (ft_S.sample_ring != NULL) {
            out[*n].ring = ft_S.sample_ring;
            out[*n].head = atomic_load_explicit(&ft_S.sample_ring->head, memory_order_acquire);
            (*n)++;
        }
    }
    pthread_mutex_unlock(&ft_S.lock);
    return out;
}

static void
writer_reap(void)
{
    /* Free the rings of threads that have exited and been written out. */
    pthread_mutex_lock(&ft_S.lock);
    for (uint32_t i = 0; i < ft_S.n_threads; i++) {
        ft_thread* t = ft_S.threads[i];
        if (t != NULL && t->finished && atomic_load(&t->head) == atomic_load(&t->tail)) {
            ft_S.dropped += t->dropped_total;
            ft_S.threads[i] = NULL;
            ft_thread_free(t);
        }
    }
    pthread_mutex_unlock(&ft_S.lock);
}

static void
writer_failed(int err)
{
    /* Recording stops (hooks see no active session) while the application goes on; stop()
     * reports the error. */
    (void)err;
    atomic_store(&ft_active_gen, FT_GEN_NONE);
}

static void
writer_counts(ft_trailer* tr)
{
    pthread_mutex_lock(&ft_S.lock);
    tr->dropped = ft_S.dropped + atomic_load(&ft_S.lost_events);
    tr->threads = ft_S.n_threads;
    tr->functions = ft_S.n_functions;
    tr->lost_threads = ft_S.lost_threads;
    pthread_mutex_unlock(&ft_S.lock);
}

static const ft_writer_sources g_sources = {writer_rings, writer_reap, writer_failed,
                                            writer_counts};

/* A random id shared by the files of one rotated series (and kept apart from others). */
static uint64_t
series_id(void)
{
    return ft_S.start_clock.wall_ns ^ ((uint64_t)getpid() << 32) ^ ft_S.start_clock.tick;
}

int
ft_session_start(const ft_config* cfg)
{
    if (ft_S.running) {
        return EBUSY;
    }
    uint32_t clock_kind = (uint32_t)ft_clock_init();
    ft_thread_min_ticks = 0;
    if (ft_thread_min_ns > 0 && cfg->mode == FT_MODE_TRACE) {
        double ticks = (double)ft_thread_min_ns * ft_clock_tick_hz() / 1e9;
        ft_thread_min_ticks = ticks < 1 ? 1 : (uint64_t)(ticks + 0.5);
    }
    memset(&ft_S, 0, sizeof ft_S);
    ft_S.fd = -1;
    pthread_mutex_init(&ft_S.lock, NULL);
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
    ft_defs_reset();
    ft_clock_sample(&ft_S.start_clock);

    ft_file_info info;
    memset(&info, 0, sizeof info);
    info.python_version_hex = cfg->python_version_hex;
    info.pid = (uint32_t)getpid();
    info.mode = cfg->mode == FT_MODE_SAMPLE ? FT_MODE_SAMPLE : FT_MODE_TRACE;
    info.flags = (cfg->c_calls ? FT_HEADER_C_CALLS : 0) |
                 ((uint32_t)cfg->hook << FT_HEADER_HOOK_SHIFT) |
                 (cfg->hook_fallback ? FT_HEADER_HOOK_FALLBACK : 0);
    info.clock_kind = clock_kind;
    info.chunk_size = cfg->chunk_size;
    info.buffer_size = (uint64_t)cfg->chunk_size * cfg->n_chunks;
    info.start = ft_S.start_clock;
    info.tick_hz = ft_clock_tick_hz();
    info.command_line = cfg->command_line;
    info.command_line_size = cfg->command_line_size;
    info.python_version = cfg->python_version;
    info.series_id = series_id();

    ft_sink* sink = NULL;
    int err = 0;
    if (cfg->sink == FT_SINK_FLIGHT) {
        double ticks = cfg->flight_seconds * info.tick_hz;
        sink = ft_flight_new(cfg->flight_max_bytes, ticks > 0 ? (uint64_t)ticks : 0,
                             cfg->chunk_size);
        err = sink == NULL ? ENOMEM : 0;
    }
    else if (cfg->sink == FT_SINK_SERIES) {
        uint64_t header_size = 0;
        info.origin = FT_ORIGIN_SERIES;
        info.series_index = 1;
        err = ft_file_write_header(cfg->fd, &info, &header_size);
        ft_series_config sc = {cfg->series_stem, cfg->series_suffix, cfg->series_max_bytes,
                               cfg->series_max_seconds, cfg->series_keep, writer_counts};
        if (err == 0 && (sink = ft_series_new(&sc, &info, cfg->fd, header_size)) == NULL) {
            err = ENOMEM;
        }
    }
    else {
        uint64_t header_size = 0;
        info.origin = FT_ORIGIN_CAPTURE;
        info.series_id = 0;
        err = ft_file_write_header(cfg->fd, &info, &header_size);
        if (err == 0 && (sink = ft_file_sink_new(cfg->fd, header_size)) == NULL) {
            err = ENOMEM;
        }
    }
    if (err == 0) {
        err = ft_writer_start(sink, &g_sources, &info);
    }
    if (err != 0) {
        if (sink != NULL && cfg->sink == FT_SINK_SERIES) {
            ft_series_release_fd(sink); /* the caller still owns it */
        }
        ft_sink_destroy(sink);
        ft_defs_free();
        return err;
    }
    /* the file sink's fd is closed here at finish; the series closes its own files */
    ft_S.fd = cfg->sink == FT_SINK_FILE ? cfg->fd : -1;
    ft_S.path = cfg->path != NULL ? strdup(cfg->path) : NULL;
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

    memset(out, 0, sizeof *out);
    ft_writer_result w;
    ft_writer_finish(&stop, &w);
    out->events = w.events;
    out->bytes = w.bytes;
    out->error = w.error;
    out->error_offset = w.error_offset;
    out->first_index = w.first_index;
    out->last_index = w.last_index;
    out->skipped_error = w.skipped_error;
    out->skipped_error_index = w.skipped_error_index;
    out->skipped_error_offset = w.skipped_error_offset;
    out->skipped_errors = w.skipped_errors;
    out->lost_chunks = w.lost_chunks;
    if (ft_S.fd >= 0) {
        close(ft_S.fd);
        ft_S.fd = -1;
    }
    out->dropped = ft_S.dropped + atomic_load(&ft_S.lost_events); /* as in the trailer */
    out->lost_threads = ft_S.lost_threads;
    out->hook_lost_threads = ft_S.hook_lost_threads;
    out->duration_ns = stop.mono_ns - ft_S.start_clock.mono_ns;
    out->threads = ft_S.n_threads + ft_S.n_sampled_threads;
    out->functions = ft_S.n_functions;

    pthread_mutex_lock(&ft_S.lock);
    for (uint32_t i = 0; i < ft_S.n_threads; i++) {
        ft_thread_free(ft_S.threads[i]);
    }
    free(ft_S.threads);
    ft_S.threads = NULL;
    ft_S.n_threads = 0;
    pthread_mutex_unlock(&ft_S.lock);
    ft_thread_free(ft_S.sample_ring);
    ft_S.sample_ring = NULL;
    ft_defs_free();
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
    ft_writer_abandon();
    ft_defs_abandon();
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
    ft_defs_put_thread(t->id, t->ident, t->native_id, name);
    if (name != NULL) {
        ft_thread_named(t);
    }
    if (snap != NULL && snap->depth > 0) { /* fids is NULL for an empty stack */
        /* Frames that were already running at start() open at the start time: the first
         * chunk's OPEN record carries them (its base tick is the start tick). */
        memcpy(t->stack, snap->fids, (size_t)snap->depth * sizeof(uint32_t));
        t->depth = snap->depth;
        t->written = t->depth; /* in the OPEN record: in the file (min_duration) */
    }
    ft_thread_open_first(t);
    if (snap != NULL) {
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

void
ft_session_flush_threads(void)
{
    pthread_mutex_lock(&ft_S.lock);
    for (uint32_t i = 0; ft_S.running && ft_S.threads != NULL && i < ft_S.n_threads; i++) {
        ft_thread* t = ft_S.threads[i];
        if (t != NULL) {
            ft_thread_flush(t);
        }
    }
    pthread_mutex_unlock(&ft_S.lock);
    if (ft_thread_kick_writer != NULL) {
        ft_thread_kick_writer();
    }
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
    ft_defs_put_hook_lost(t->id, t->last_tick, what);
}

void
ft_session_name_thread(ft_thread* t, const char* name)
{
    pthread_mutex_lock(&ft_S.lock);
    ft_defs_put_thread_name(t->id, name);
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
            ft_defs_put_thread_name(t->id, name);
        }
    }
    pthread_mutex_unlock(&ft_S.lock);
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

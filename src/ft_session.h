/* ft_session.h: the one trace session of the process, its thread registry, its definitions
 * stream and its writer thread.
 *
 * Concurrency, in one place:
 *  - hooks (producers) run with the GIL held and touch only their own ft_thread, except on
 *    slow paths (first event of a thread, first sight of a function), which take `lock` or
 *    `defs_lock`;
 *  - the writer thread never holds the GIL; it reads published chunks and the defs buffer;
 *  - start/stop run with the GIL held (the Cython layer releases it around joins and I/O).
 */
#ifndef FT_SESSION_H
#define FT_SESSION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ft_clock.h"
#include "ft_thread.h"

/* ft_active_gen holds the running session's generation, or FT_GEN_NONE.  A thread whose cached
 * generation differs takes the slow path; that is how hooks notice start, stop and a failed
 * writer with one compare. */
#define FT_GEN_NONE 0xFFFFFFFFu
extern _Atomic uint32_t ft_active_gen;

typedef struct {
    const char* path;
    int fd;   /* FT_SINK_FILE: the output, taken over by start() on success */
    int sink; /* ft_sink_kind */
    uint64_t flight_max_bytes; /* FT_SINK_FLIGHT: the ring's size */
    double flight_seconds;     /* FT_SINK_FLIGHT: keep at least this much */
    /* FT_SINK_SERIES: fd is file 1, named stem.0001suffix; see ft_series.h */
    const char* series_stem;
    const char* series_suffix;
    uint64_t series_max_bytes;
    double series_max_seconds;
    uint32_t series_keep;
    int c_calls;
    int hook; /* ft_hook_kind */
    int hook_fallback; /* the frame evaluator was the choice but another tool holds it */
    int mode; /* ft_mode */
    uint32_t chunk_size;
    uint32_t n_chunks;
    /* header strings (UTF-8, NUL-terminated, owned by the caller during start) */
    const char* command_line; /* argv joined by NUL characters, with a final NUL */
    size_t command_line_size;
    const char* python_version;
    uint32_t python_version_hex;
} ft_config;

enum ft_sink_kind {
    FT_SINK_FILE = 0,   /* one file from start() to stop() */
    FT_SINK_FLIGHT = 1, /* a flight recorder: the last seconds in memory, written on request */
    FT_SINK_SERIES = 2, /* a rotating series of files */
};

typedef struct {
    uint64_t events;
    uint64_t dropped;     /* events lost to full rings and to threads with no ring */
    uint64_t bytes;
    uint64_t duration_ns;
    uint32_t threads;
    uint32_t functions;
    uint32_t lost_threads;      /* threads whose ring could not be allocated */
    uint32_t hook_lost_threads; /* threads whose hook another tool replaced */
    int error;             /* errno of the first write failure, 0 if none */
    uint64_t error_offset; /* end of the last chunk written whole before it */
    uint64_t sampler[16]; /* sampling mode: ft_sampler_stat values (filled by the caller) */
    /* a rotated series: the files kept, and the failures it went past (ft_sink) */
    uint64_t first_index, last_index;
    int skipped_error;
    uint64_t skipped_error_index, skipped_error_offset, skipped_errors, lost_chunks;
} ft_summary;

/* Per-thread stack captured at start(), taken over by the thread's first event. */
typedef struct ft_snapshot {
    uint64_t ident;
    uint32_t depth;
    uint32_t muted; /* fasttrace's own frames running above these: their returns are muted */
    uint32_t* fids; /* root first */
    struct ft_snapshot* next;
} ft_snapshot;

typedef struct {
    uint32_t gen; /* this session's generation (never FT_GEN_NONE) */
    int running;
    int mode;     /* ft_mode: sampling mode has no hooks and no per-thread rings */
    int hook;     /* ft_hook_kind */
    char* path;   /* for the message of a trace saved at exit (owned) */
    int c_calls;
    int fd;       /* the file sink's output, closed at finish; -1 for a flight recorder */
    uint32_t chunk_size;
    uint32_t n_chunks;
    ft_clock_sync start_clock;

    /* registry: threads[i] has id i + 1; freed slots are NULL */
    pthread_mutex_t lock;
    ft_thread** threads;
    uint32_t n_threads;
    uint32_t cap_threads;
    ft_snapshot* snapshots;
    uint32_t n_functions;

    /* sampling mode: the sampler's ring (chunk type SAMPLES) and the threads it named */
    ft_thread* sample_ring;
    uint32_t n_sampled_threads;

    uint64_t dropped; /* drops of rings freed so far (under lock) */

    /* threads the trace could not follow */
    _Atomic uint64_t lost_events; /* events of threads whose ring could not be allocated */
    uint32_t lost_threads;
    uint32_t hook_lost_threads;
} ft_session;

extern ft_session ft_S;

/* ---- lifecycle (GIL held) ---- */

/* Writes the header (file sink) and starts the writer.  Returns 0, or an errno value; on
 * failure nothing is left running and the caller still owns cfg->fd. */
int ft_session_start(const ft_config* cfg);
/* Stops recording: hooks that still fire afterwards do nothing.  GIL held. */
void ft_session_quiesce(void);
/* Joins the writer, flushes every thread, writes the trailer and closes the file.  Call
 * without the GIL after ft_session_quiesce (and after ft_sampler_stop in sampling mode, so
 * that the sampler's last chunk and stats go out with the rest). */
void ft_session_finish(ft_summary* out);
/* In a forked child: forget the parent's session without touching its file or threads. */
void ft_session_abandon(void);
/* Py_AtExit: a trace still running when the interpreter is gone (start() called from an
 * atexit handler, whose own handler never runs) is finished here and a line is written to
 * stderr.  No Python: the interpreter is finalized. */
void ft_session_at_exit(void);
/* Trace mode, a flight recorder, GIL held: every live thread hands its partly filled chunk
 * to the writer (the GIL keeps their hooks out meanwhile), so that a dump taken next holds
 * everything recorded until now. */
void ft_session_flush_threads(void);

/* ---- used by the hooks' slow paths and by start() ---- */

/* Creates this thread's buffer (and its THREAD def); NULL when not tracing or out of memory. */
ft_thread* ft_session_attach_thread(uint64_t ident, uint64_t native_id, const char* name);
void ft_session_add_snapshot(uint64_t ident, const uint32_t* fids_leaf_first, uint32_t depth,
                             uint32_t muted);
/* The thread's hook was replaced by another tool (see ft_thread_lose_hook): a HOOK_LOST def
 * says on which thread, from which tick, and what replaced it.  GIL held. */
void ft_session_hook_lost(ft_thread* t, const char* what);
/* The live (not finished) thread with this ident, or NULL.  Takes the registry lock. */
ft_thread* ft_session_find_thread(uint64_t ident);
/* Calls fn on every live thread (registry lock held: fn must not take it). */
void ft_session_each_thread(void (*fn)(ft_thread* t, void* arg), void* arg);
/* Names the live thread with this ident (stop() names every live thread this way). */
void ft_session_set_thread_name(uint64_t ident, const char* name);
void ft_session_name_thread(ft_thread* t, const char* name);
/* Sampling mode (ft_sampler.c).  The ring is created at the first call. */
ft_thread* ft_session_sample_ring(void);
uint32_t ft_session_new_thread_id(void);
void ft_session_set_function_count(uint32_t n);
/* Called by a thread on exit (pthread key destructor). */
void ft_session_thread_exit(uint32_t gen, uint32_t id);

#endif /* FT_SESSION_H */

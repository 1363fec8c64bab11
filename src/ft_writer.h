/* ft_writer.h: the writer thread.  It drains every ring's published chunks, and the
 * definitions written since its last round, into one sink (ft_sink.h); it never holds the GIL
 * and never calls Python.
 *
 * It knows nothing of the session above it: the session hands it its rings, its counts and
 * what to do when the sink fails as callbacks (ft_writer_sources).
 */
#ifndef FT_WRITER_H
#define FT_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "ft_clock.h"
#include "ft_flight.h"
#include "ft_sink.h"
#include "ft_thread.h"

typedef struct {
    ft_thread* ring;
    uint64_t head; /* its published head, read before the definitions were taken */
} ft_ring_ref;

typedef struct {
    /* A malloc'd snapshot of every ring (the threads' and the sampler's) with its head; *n
     * gets the count.  NULL with *n = 0 when there are none or out of memory. */
    ft_ring_ref* (*rings)(size_t* n);
    /* Frees the rings of threads that exited and are written out. */
    void (*reap)(void);
    /* The sink failed (errno): recording stops; stop() reports it. */
    void (*failed)(int err);
    /* The trailer's counts that the writer does not keep (dropped, threads, functions,
     * lost_threads). */
    void (*counts)(ft_trailer* tr);
} ft_writer_sources;

/* Starts the writer thread over `sink` (the file sink has the header written already).  `info`
 * is kept (a copy; its strings too) for dumps.  0, or an errno value. */
int ft_writer_start(ft_sink* sink, const ft_writer_sources* src, const ft_file_info* info);
/* Stops the thread; the sink stays open for ft_writer_finish. */
void ft_writer_join(void);
/* Writes every published chunk (and pending defs) once.  Returns the number of chunks. */
size_t ft_writer_drain(void);
/* What the writer did, for stop()'s summary. */
typedef struct {
    uint64_t events; /* records written */
    uint64_t bytes;  /* written (files) or held (the flight recorder) */
    int error;       /* errno of the failure that stopped recording, 0 if none */
    uint64_t error_offset;
    /* a rotated series: see ft_sink */
    uint64_t first_index, last_index;
    int skipped_error;
    uint64_t skipped_error_index, skipped_error_offset, skipped_errors, lost_chunks;
} ft_writer_result;

/* After ft_writer_join: the last defs, a CLOCK and the sink's finish (a trailer), and frees
 * the sink. */
void ft_writer_finish(const ft_clock_sync* stop, ft_writer_result* out);
/* In a forked child: forget the thread and the sink without joining or freeing. */
void ft_writer_abandon(void);
/* Whether the writer's sink is a flight recorder (dumps are possible). */
int ft_writer_is_flight(void);

/* A flight-recorder dump to fd, done by the writer thread; the caller waits (without the GIL)
 * and dumps are serialized.  0, or an errno value (EINVAL: not a flight recorder; ESRCH: no
 * writer running). */
int ft_writer_dump(int fd, ft_flight_dump_result* out);

/* pthread_atfork (see ft_fork.h): the writer is stopped around fork() and restarted in the
 * parent; os.fork()'s Python hooks defer the restart until after CPython's own handlers. */
void ft_writer_fork_prepare(void);
void ft_writer_fork_parent(void);
void ft_writer_fork_defer(void);
void ft_writer_fork_resume(void);

#endif /* FT_WRITER_H */

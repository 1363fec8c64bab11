/* ft_flight.h: the flight recorder's sink, a bounded ring of chunks in memory.
 *
 * Go's runtime/trace.FlightRecorder keeps the last seconds of a trace in memory and writes
 * them out on request.  This sink does the same with fasttrace's chunks: every chunk the
 * writer drains is copied into one ring of `max_bytes`; the oldest chunks go when the ring is
 * full, or once they arrived more than `window` ago (so that at least the last `window` is kept
 * whenever max_bytes allows it).  Chunks leave in arrival order, which keeps each thread's
 * chunks in the ring a suffix of its chunks: with the self-contained chunks of format 2 (each
 * opens with its thread's stack) and the whole definitions table, any such suffix decodes.
 *
 * A dump writes the ring as an ordinary .ftrace file, on the writer thread: it never pauses
 * the program.  While it runs, chunks it has not written yet are pinned (not evicted); the
 * writer keeps draining between slices of the dump, and if the ring fills with pinned chunks
 * the rest waits in the threads' own rings until the dump moves on.
 *
 * Memory: max_bytes, mapped once and touched as it fills; each chunk is stored with its
 * arrival tick in front of it, so there is no index beside it.
 */
#ifndef FT_FLIGHT_H
#define FT_FLIGHT_H

#include <stdint.h>

#include "ft_sink.h"

/* NULL out of memory (or max_bytes too small for two chunks of chunk_size). */
ft_sink* ft_flight_new(uint64_t max_bytes, uint64_t window_ticks, uint32_t chunk_size);

/* What a dump wrote. */
typedef struct {
    int error;          /* errno of a write failure, 0 if none */
    uint64_t error_offset;
    uint64_t bytes;
    uint64_t events;    /* records in the dumped chunks */
    uint64_t chunks;
    uint64_t start_tick; /* the window: the earliest chunk's base tick ... */
    uint64_t end_tick;   /* ... to the dump */
    uint64_t duration_ns; /* end - start */
    uint32_t threads;     /* thread ids known (the trailer's count) */
    uint32_t functions;
} ft_flight_dump_result;

/* Writes the ring to fd as a complete file: header (`info`, with the window's start and
 * origin FLIGHT), the whole definitions table, the chunks, a CLOCK and a TRAILER (`trailer`:
 * its events are replaced by the dump's own count).  Writer thread only.  `between(arg)` runs
 * between slices of the dump (the writer drains the rings there).  `now` is the dump's
 * clock. */
void ft_flight_dump(ft_sink* ring, int fd, const ft_file_info* info, const ft_clock_sync* now,
                    const ft_trailer* trailer, void (*between)(void* arg), void* arg,
                    ft_flight_dump_result* out);

#endif /* FT_FLIGHT_H */

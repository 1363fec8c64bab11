/* ft_sink.h: where the writer thread's chunks go.
 *
 * The writer drains every ring into one sink: a file (start() to stop()), a bounded ring of
 * chunks in memory (the flight recorder, ft_flight.h), or a rotating series of files.  Every
 * chunk reaches the sink whole, with its header filled and checksummed; a sink never sees a
 * partial record and never calls Python.  Sinks are used by the writer thread alone (and by
 * start()/stop() while it is not running), so they take no locks.
 */
#ifndef FT_SINK_H
#define FT_SINK_H

#include <stddef.h>
#include <stdint.h>

#include "ft_clock.h"
#include "ft_format.h"

/* What a file's header says (FORMAT.md section 2). */
typedef struct {
    uint32_t python_version_hex;
    uint32_t pid;
    uint32_t mode;  /* ft_mode */
    uint32_t flags; /* ft_header_flags */
    uint32_t clock_kind;
    uint32_t chunk_size;
    uint64_t buffer_size;
    ft_clock_sync start;
    double tick_hz;
    const char* command_line; /* argv joined by NUL characters, with a final NUL */
    size_t command_line_size;
    const char* python_version;
    uint64_t series_index; /* 0: not part of a rotated series */
    uint64_t series_id;
    uint8_t origin; /* ft_origin */
} ft_file_info;

/* The encoded preamble and header body, malloc'd (*n bytes); NULL out of memory. */
uint8_t* ft_header_encode(const ft_file_info* info, size_t* n);

/* Fills a chunk header, checksum included. */
void ft_chunk_fill(ft_chunk_header* h, uint8_t type, uint8_t flags, uint32_t thread,
                   uint32_t records, uint64_t base_tick, const uint8_t* payload, uint32_t size);

typedef struct ft_sink ft_sink;

enum {
    FT_SINK_TAKEN = 0, /* the chunk is the sink's now (written or copied) */
    FT_SINK_BUSY = 1,  /* not taken: no room until a dump in progress moves on; retry later */
};

typedef struct {
    /* One chunk.  `h` may be reused at once; `payload` must stay valid until the next flush. */
    int (*chunk)(ft_sink* s, const ft_chunk_header* h, const uint8_t* payload);
    /* Ends a round: after it the payloads handed over may be reused. */
    void (*flush)(ft_sink* s);
    /* stop(): the trailer (the capture's counts; a sink of several files puts each file's
     * own events in).  The CLOCK before it is written already. */
    void (*finish)(ft_sink* s, ft_trailer* tr);
    void (*destroy)(ft_sink* s);
} ft_sink_ops;

struct ft_sink {
    const ft_sink_ops* ops;
    int error;             /* errno of the first failure, 0 if none: the sink takes no more */
    uint64_t error_offset; /* files: the end of the last chunk written whole before it */
    uint64_t bytes;        /* files: bytes written; rings: bytes held */
    uint64_t chunks;       /* chunks taken */
    int keeps_window;      /* a flight recorder: the chunks stay in memory for dumps */
    /* A rotated series: the files' indexes (first still kept, last written), and failures
     * it went past (a full disk: that file stops, the next one starts when it can). */
    uint64_t first_index, last_index;
    int skipped_error;            /* errno of the first such failure, 0 if none */
    uint64_t skipped_error_index; /* in this file ... */
    uint64_t skipped_error_offset; /* ... at this byte (what is before it is readable) */
    uint64_t skipped_errors;      /* failures in all */
    uint64_t lost_chunks;         /* chunks that found no file to go to */
};

/* A sink writing to `fd` (not closed by the sink), whose first `offset` bytes (the header)
 * are written already.  NULL out of memory. */
ft_sink* ft_file_sink_new(int fd, uint64_t offset);
/* The file sink's finish: writes the trailer chunk. */
void ft_file_sink_finish(ft_sink* s, ft_trailer* tr);
/* Writes the header for `info` to `fd`: 0, or an errno value.  *n gets its size. */
int ft_file_write_header(int fd, const ft_file_info* info, uint64_t* n);

static inline int
ft_sink_chunk(ft_sink* s, const ft_chunk_header* h, const uint8_t* payload)
{
    return s->ops->chunk(s, h, payload);
}

static inline void
ft_sink_flush(ft_sink* s)
{
    s->ops->flush(s);
}

static inline void
ft_sink_finish(ft_sink* s, ft_trailer* tr)
{
    s->ops->finish(s, tr);
}

static inline void
ft_sink_destroy(ft_sink* s)
{
    if (s != NULL) {
        s->ops->destroy(s);
    }
}

/* A small chunk (defs, clock, trailer) with its payload anywhere: filled and flushed at once. */
void ft_sink_small_chunk(ft_sink* s, uint8_t type, const uint8_t* payload, uint32_t size);

#endif /* FT_SINK_H */

/* ft_reader.h: decoding .ftrace files.  Every read is bounds-checked: any input, however
 * damaged, gives an error with an offset and a reason, never a crash.  No Python calls. */
#ifndef FT_READER_H
#define FT_READER_H

#include <stddef.h>
#include <stdint.h>

#include "ft_format.h"

typedef struct {
    size_t offset;     /* byte offset of the problem in the file */
    char reason[240];
} ft_read_error;

typedef struct {
    uint32_t version;
    uint32_t python_version_hex;
    uint32_t pid;
    uint32_t mode;
    uint32_t flags;
    uint32_t clock_kind;
    uint32_t chunk_size;
    uint64_t buffer_size;
    uint64_t start_tick;
    uint64_t start_mono_ns;
    uint64_t start_wall_ns;
    double tick_hz;
    const uint8_t* command_line; /* argv, NUL-separated */
    size_t command_line_size;
    const uint8_t* python_version;
    size_t python_version_size;
    /* version 2 (version 1 files: 0, 0, FT_ORIGIN_CAPTURE) */
    uint64_t series_index; /* 0: not part of a rotated series; k >= 1: its k-th file */
    uint64_t series_id;    /* the same in every file of a series */
    uint8_t origin;        /* ft_origin */
    size_t first_chunk; /* offset of the first chunk */
} ft_header;

/* Returns 0, or -1 with `e` filled. */
int ft_read_header(const uint8_t* data, size_t size, ft_header* h, ft_read_error* e);

enum ft_chunk_status {
    FT_READ_OK = 1,         /* a valid chunk at offset */
    FT_READ_END = 0,        /* clean end of file (or only zero padding left) */
    FT_READ_TRUNCATED = -1, /* the file ends inside this chunk: a damaged tail */
    FT_READ_CORRUPT = -2,   /* bad magic, size or checksum */
};

/* ---- definitions ---- */

typedef struct {
    const uint8_t* s;
    size_t n;
} ft_str;

typedef struct {
    uint8_t tag; /* FT_DEF_* */
    uint64_t id; /* function or thread id */
    uint8_t flags;
    uint64_t lineno;
    uint64_t ident;
    uint64_t native_id;
    ft_str name, qualname, filename, module;
    /* STACK: id = stack id, flags, `count` function ids as varints at list.s;
     * SAMPLING: rate, clock, max_depth; SAMPLER_STATS: `count` varints at list.s */
    uint64_t count;
    ft_str list;
    uint64_t rate, clock, max_depth;
    uint64_t tick; /* HOOK_LOST: id = thread, tick, name = what replaced the hook */
} ft_def;

/* Decodes up to `n` varints of a STACK or SAMPLER_STATS list (validated by ft_next_def). */
size_t ft_def_list(const ft_def* d, uint64_t* out, size_t n);

/* One SAMPLE record (SAMPLES chunks). */
typedef struct {
    uint64_t tick;
    uint64_t thread;
    uint64_t stack;
    uint64_t weight_us;
    uint8_t state; /* ft_sample_state bits */
} ft_sample;

/* Decodes the sample at *pos (advancing it); `tick` carries from record to record (start it at
 * the chunk's base_tick).  Returns 1, 0 at the end of the payload, -1 on error. */
int ft_next_sample(const uint8_t* payload, size_t size, size_t* pos, size_t base, uint64_t* tick,
                   ft_sample* s, ft_read_error* e);

/* Decodes the def at *pos (advancing it).  Returns 1, 0 at the end of the payload, -1 on
 * error.  `base` is the payload's file offset, for messages. */
int ft_next_def(const uint8_t* payload, size_t size, size_t* pos, size_t base, ft_def* d,
                ft_read_error* e);

/* ---- events ---- */

enum ft_event_kind {
    FT_EV_CALL = 0,
    FT_EV_RETURN = 1,
    FT_EV_C_CALL = 2,
    FT_EV_C_RETURN = 3,
    FT_EV_GAP = 4, /* events were dropped: tick = resume, aux = dropped, aux2 = gap start */
};

typedef struct {
    uint64_t tick;
    uint64_t aux;
    uint64_t aux2;
    uint32_t fid;
    uint8_t kind;
    uint8_t synthetic; /* made by the reader: frames open at start, or closed/reopened at a gap */
} ft_event;

typedef struct {
    ft_event* ev;
    size_t n;
    size_t cap;
} ft_event_buf;

/* One thread's decoding state, carried from chunk to chunk (and from file to file of a
 * series).  Zeroed: no chunk of the thread decoded yet. */
typedef struct {
    uint32_t* stack;
    uint32_t depth;
    uint32_t cap;
    uint64_t last_tick;
    uint64_t unmatched; /* returns with nothing open and no function id */
    uint8_t started;    /* a chunk with records was decoded: OPEN records are skipped */
    uint8_t broken;     /* a discontinuity since (ft_thread_decoder_break) */
} ft_thread_decoder;

/* `fid_kind[fid]` is 0 for a Python function, 1 for a C function, 0xFF if undefined. */
typedef struct {
    const uint8_t* fid_kind;
    uint32_t n_fids;
} ft_functions_view;

/* Appends the chunk's events to `out`; `version` is the file's format version.  Returns 0, or
 * -1 with `e` filled (also on ENOMEM). */
int ft_decode_events(ft_thread_decoder* d, const ft_functions_view* fv, const uint8_t* payload,
                     size_t size, size_t base, uint64_t base_tick, uint32_t version,
                     ft_event_buf* out, ft_read_error* e);
/* A discontinuity in a series (a file missing or cut): the thread's next chunk closes its open
 * frames at its last tick, notes a gap to its base_tick and opens as a first chunk would. */
void ft_thread_decoder_break(ft_thread_decoder* d);
/* Appends synthetic returns for every open frame, at `tick`. */
int ft_close_open(ft_thread_decoder* d, const ft_functions_view* fv, uint64_t tick,
                  ft_event_buf* out);
void ft_thread_decoder_free(ft_thread_decoder* d);
/* The tick of the last record of an events chunk (base_tick if it has none), without
 * decoding events: a killed trace ends at its last event, not at its last clock record.
 * Returns 0, or -1 if the records are malformed (*out then holds the last tick read). */
int ft_events_last_tick(const uint8_t* payload, size_t size, uint64_t base_tick, uint32_t version,
                        uint64_t* out);
void ft_event_buf_free(ft_event_buf* b);

#endif /* FT_READER_H */

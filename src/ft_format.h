/* ft_format.h: the .ftrace file format.  FORMAT.md beside this file is the byte-level spec;
 * this header is its source of truth for numbers.  Everything is little-endian.
 *
 *   file   := header chunk*
 *   header := "\x89FTRACE\n" u32 version u32 body_size u32 crc32(body) body
 *   chunk  := ft_chunk_header payload         (payload_size bytes, crc over header[12:] + payload)
 */
#ifndef FT_FORMAT_H
#define FT_FORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FT_MAGIC "\x89" "FTRACE\n"
#define FT_MAGIC_SIZE 8
#define FT_FORMAT_VERSION 2u /* the version written */
/* The versions the readers read (FORMAT.md says what changed in each). */
#define FT_FORMAT_VERSION_MIN 1u
#define FT_FORMAT_VERSION_MAX 2u
#define FT_PREAMBLE_SIZE 20 /* magic + version + body_size + crc */

#define FT_CHUNK_MAGIC 0x4B435446u /* "FTCK" */
#define FT_CHUNK_HEADER_SIZE 32

/* Trace modes, header field `mode`. */
enum ft_mode {
    FT_MODE_TRACE = 1,
    FT_MODE_SAMPLE = 2,
};

/* Header flags. */
enum ft_header_flags {
    FT_HEADER_C_CALLS = 1u << 0,
    FT_HEADER_HOOK_SHIFT = 1, /* bits 1-2: the hook that recorded the trace (ft_hook_kind) */
    FT_HEADER_HOOK_FALLBACK = 1u << 3, /* the frame evaluator was taken by another tool */
};

enum ft_hook_kind {
    FT_HOOK_PROFILE = 0,    /* a C profile function (PyEval_SetProfile), 3.9-3.11 */
    FT_HOOK_MONITORING = 1, /* sys.monitoring C callbacks, 3.12+ */
    FT_HOOK_EVAL_FRAME = 2, /* a PEP 523 frame evaluator, 3.11 with c_calls=False */
    FT_HOOK_SAMPLER = 3,    /* sampling mode: no hook, a sampler thread */
};

/* Chunk types. */
enum ft_chunk_type {
    FT_CHUNK_EVENTS = 1,  /* one thread's event records */
    FT_CHUNK_DEFS = 2,    /* function and thread definitions */
    FT_CHUNK_CLOCK = 3,   /* one ft_clock_sync: u64 tick, u64 mono_ns, u64 wall_ns */
    FT_CHUNK_TRAILER = 4, /* the end of a complete trace; see ft_trailer */
    FT_CHUNK_SAMPLES = 5, /* sampling mode: SAMPLE records of every thread, from the sampler */
};

/* Header field `origin` (version 2): what made the file. */
enum ft_origin {
    FT_ORIGIN_CAPTURE = 0, /* start() to stop() */
    FT_ORIGIN_FLIGHT = 1,  /* a flight-recorder dump: the last seconds of a running capture */
    FT_ORIGIN_SERIES = 2,  /* one file of a rotated series */
};

/* Chunk flags. */
enum ft_chunk_flags {
    FT_CHUNK_LAST_OF_THREAD = 1u << 0, /* the thread exited or the trace stopped */
};

/* Fixed 32-byte chunk header.  crc32 (zlib's polynomial) covers bytes 12..31 of the header and
 * the whole payload, so a flipped bit anywhere but the magic, size and crc fields themselves is
 * caught; those three are checked by their own consistency. */
typedef struct {
    uint32_t magic;
    uint32_t payload_size;
    uint32_t crc32;
    uint8_t type;
    uint8_t flags;
    uint16_t reserved;
    uint32_t thread;    /* events chunks: the thread id; 0 otherwise */
    uint32_t records;   /* events chunks: number of event records */
    uint64_t base_tick; /* events chunks: the first record's delta is from this tick */
} ft_chunk_header;

_Static_assert(sizeof(ft_chunk_header) == FT_CHUNK_HEADER_SIZE, "chunk header is 32 bytes");

/* Record tags inside events chunks.  Every event record is `tag [fid] dt`; dt is the tick delta
 * from the previous record of the same thread (or from base_tick).  Returns carry no function
 * id: the reader pops its per-thread stack, which the writer keeps identical. */
enum ft_event_tag {
    FT_REC_CALL = 0x01,            /* varint fid, varint dt */
    FT_REC_RETURN = 0x02,          /* varint dt */
    FT_REC_C_CALL = 0x03,          /* varint fid, varint dt */
    FT_REC_C_RETURN = 0x04,        /* varint dt */
    FT_REC_ORPHAN_RETURN = 0x05,   /* varint fid, varint dt: a return with nothing open */
    FT_REC_ORPHAN_C_RETURN = 0x06, /* varint fid, varint dt */
    FT_REC_STACK = 0x07,           /* varint dt, varint depth, depth x varint fid (root first) */
    FT_REC_DROP = 0x08,            /* varint dropped, varint dt, varint depth, depth x fid */
    FT_REC_OPEN = 0x0A, /* version 2: varint depth, depth x varint fid (root first), no dt: the
                           frames open when the chunk began; every chunk's first record is an
                           OPEN or a DROP */
};

/* The one record of SAMPLES chunks: `tag varint dt varint thread varint stack varint w`, where
 * dt is the tick delta from the previous SAMPLE of the chunk (or base_tick), stack is a STACK
 * def id (0 = no Python frames), and w = weight_us << 3 | state bits.  weight_us is the time
 * the sample stands for: wall clock, the interval since the previous tick; cpu clock, the
 * thread's CPU time since its previous sample. */
#define FT_REC_SAMPLE 0x09
enum ft_sample_state {
    FT_SAMPLE_IDLE = 1u << 0,    /* the thread did not hold the GIL: waiting, not running Python */
    FT_SAMPLE_IN_CALL = 1u << 1, /* its innermost Python frame was executing a call */
    FT_SAMPLE_TORN = 1u << 2,    /* the stack changed while it was read; frames may be missing */
    FT_SAMPLE_STATE_BITS = 3,
};
#define FT_MAX_SAMPLE_SIZE (1 + 10 + 5 + 5 + 10)

/* Record tags inside defs chunks.  str = varint length + UTF-8 bytes. */
enum ft_def_tag {
    FT_DEF_FUNCTION = 0x10, /* varint fid, u8 flags, varint lineno, str name, str qualname,
                               str filename, str module */
    FT_DEF_THREAD = 0x11,   /* varint thread, varint ident, varint native_id, str name */
    FT_DEF_THREAD_NAME = 0x12, /* varint thread, str name */
    FT_DEF_STACK = 0x13,       /* varint sid, u8 flags, varint depth, depth x varint fid (root
                                  first) */
    FT_DEF_SAMPLING = 0x14,    /* varint rate_hz, u8 clock (ft_sample_clock), varint max_depth */
    FT_DEF_SAMPLER_STATS = 0x15, /* varint count, count x varint value (ft_sampler_stat order) */
    FT_DEF_HOOK_LOST = 0x16,     /* varint thread, varint tick, str what: another tool replaced
                                    this thread's hook; nothing after `tick` was recorded */
    FT_DEF_SCOPE = 0x17, /* str json: the capture's scope as given (include, exclude, max_depth,
                          * min_duration, trim_stacks); at most one, before any event */
};

enum ft_stack_flags {
    FT_STACK_TRUNCATED = 1u << 0, /* deeper than max_depth: the outermost frames were cut */
};

enum ft_sample_clock {
    FT_CLOCK_WALL = 0,
    FT_CLOCK_CPU = 1,
};

/* SAMPLER_STATS values, in this order (readers take the first `count` they know). */
enum ft_sampler_stat {
    FT_STAT_TICKS,         /* sampler wake-ups that sampled */
    FT_STAT_SAMPLES,       /* SAMPLE records written */
    FT_STAT_LATE,          /* ticks that came more than one interval late (schedule reset) */
    FT_STAT_TORN,          /* samples flagged TORN after one retry */
    FT_STAT_TRUNCATED,     /* samples whose stack was cut at max_depth */
    FT_STAT_DROPPED,       /* samples lost: the sampler's ring was full */
    FT_STAT_SAMPLER_CPU_NS, /* CPU time of the sampler thread */
    FT_STAT_READ_FAILURES, /* memory reads that failed (a pointer went stale under the sampler) */
    FT_STAT_DURATION_NS,   /* from the sampler's start to its stop */
    FT_STAT_REALTIME,      /* 1 if the sampler ran at SCHED_FIFO priority */
    FT_STAT_REUSED,        /* samples whose stack was reused: the thread had not run since */
    FT_STAT_RATE_LOWERED,  /* times the sampler halved its rate, over its CPU budget */
    FT_STAT_FINAL_RATE_MHZ, /* the rate in force at stop, in mHz (the requested one if never lowered) */
    FT_STAT_CPU_BUDGET_PPM, /* the sampler's CPU budget, in millionths of one core */
    FT_STAT_PAUSED_NS,     /* time stopped around fork() in the parent (from the last tick before
                            * each fork to the restart), within the duration */
    FT_STAT_OUT_OF_SCOPE,  /* samples not written: the capture's scope kept none of their frames */
    FT_STAT_COUNT,
};

/* The deepest stack a sample keeps (innermost frames); deeper ones are flagged truncated. */
#define FT_SAMPLE_MAX_DEPTH 1024

enum ft_function_flags {
    FT_FUNC_IS_C = 1u << 0,
};

/* Trailer payload: written once by stop(); its absence means the file is truncated. */
typedef struct {
    uint64_t events;
    uint64_t dropped;
    uint64_t stop_tick;
    uint64_t stop_mono_ns;
    uint64_t stop_wall_ns;
    uint32_t threads;
    uint32_t functions;
    uint32_t error; /* errno of a writer failure, 0 if none */
    uint32_t lost_threads; /* threads whose ring could not be allocated (0 before this field) */
} ft_trailer;

_Static_assert(sizeof(ft_trailer) == 56, "trailer is 56 bytes");

/* The largest event record the hot path writes: tag + two 10-byte varints. */
#define FT_MAX_EVENT_SIZE 21

/* ---- varints (LEB128, as in protobuf) ------------------------------------------------------ */

static inline uint8_t*
ft_put_varint(uint8_t* p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static inline uint8_t*
ft_put_u32(uint8_t* p, uint32_t v)
{
    memcpy(p, &v, 4); /* the supported platforms are little-endian */
    return p + 4;
}

static inline uint8_t*
ft_put_u64(uint8_t* p, uint64_t v)
{
    memcpy(p, &v, 8);
    return p + 8;
}

/* str: varint length, then the bytes. */
static inline uint8_t*
ft_put_str(uint8_t* p, const char* s, size_t n)
{
    p = ft_put_varint(p, n);
    memcpy(p, s, n);
    return p + n;
}

#endif /* FT_FORMAT_H */

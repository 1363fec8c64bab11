/* ft_thread.h: one traced thread's buffer, written by that thread alone.
 *
 * Each thread owns a ring of fixed-size chunks.  The thread (the producer) appends records to
 * the chunk at `head`; when it is full it publishes it with a release store of `head` and moves
 * on.  The writer thread (the only consumer) writes chunks [tail, head) to the file and hands
 * them back with a release store of `tail`.  No locks and no Python objects on this path: a
 * full ring makes the producer drop events and count them (see ft_thread_make_room).
 */
#ifndef FT_THREAD_H
#define FT_THREAD_H

#include <stdatomic.h>
#include <stdint.h>

#include "ft_format.h"

#define FT_LIKELY(x) __builtin_expect(!!(x), 1)
#define FT_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* The shadow stack is reserved at this depth (virtual memory, touched only as deep as the
 * thread goes); deeper frames are counted in `excess` so that pushes and pops stay paired. */
#define FT_MAX_DEPTH (1u << 20)

typedef struct {
    uint32_t used;      /* payload bytes */
    uint32_t records;
    uint64_t base_tick;
    uint32_t flags;     /* ft_chunk_flags */
} ft_chunk_meta;

typedef struct ft_thread {
    /* ---- producer-only, hot ---- */
    uint8_t* pos;       /* next free payload byte of the chunk being filled */
    uint8_t* limit;     /* a record may start at pos only if pos <= limit */
    uint64_t last_tick; /* tick of the last record written */
    uint32_t records;   /* records in the chunk being filled */
    uint32_t depth;     /* shadow stack depth */
    /* A call at depth >= depth_limit takes the hooks' scoped path: max_depth (a muted region
     * from max_depth on), min_duration (every call: it is pending, not written).  UINT32_MAX
     * when neither applies, so the unscoped path pays no extra compare. */
    uint32_t depth_limit;
    uint32_t max_depth;   /* UINT32_MAX: none */
    /* min_duration, in ticks (0: none).  The calls of frames [written, depth) are pending:
     * each frame's enter tick (<< 1, | 1 for a C call) is in enter_ticks.  A return of a
     * pending frame shorter than min_ticks writes nothing; a longer one first writes the
     * pending calls from the outermost (ft_thread_flush_pending). */
    uint64_t min_ticks;
    uint32_t written;
    uint64_t* enter_ticks;
    uint32_t excess;    /* frames past FT_MAX_DEPTH */
    uint32_t* stack;    /* shadow stack of function ids, root first */
    uint64_t dropped;   /* events lost in the current gap */

    /* ---- producer-only, cold ---- */
    uint8_t* real_limit; /* `limit` is lowered below this while the thread name is unknown */
    int dropping;
    int name_pending;
    uint32_t unwritten; /* events since the name check that wrote nothing (muted, pending) */
    /* fasttrace's own frames (start(), stop()) and everything they call are not recorded:
     * `muted` counts the frames of that region still open, `mute_next` marks the event being
     * emitted as one of fasttrace's own.  Either sends every event down the slow path. */
    uint32_t muted;
    int mute_next;
    /* Another tool replaced this thread's hook: nothing after its last record was seen.  The
     * gap is closed (a DROP with no frames) when the thread finishes. */
    int hook_lost;
    uint64_t dropped_total;
    uint64_t chunk_base_tick;

    /* ---- the ring ---- */
    uint8_t* chunks;        /* n_chunks * chunk_size bytes */
    ft_chunk_meta* meta;    /* n_chunks entries */
    uint32_t n_chunks;
    uint32_t chunk_size;
    _Atomic uint64_t head;  /* chunks published (producer stores, writer loads) */
    _Atomic uint64_t tail;  /* chunks written back (writer stores, producer loads) */

    /* ---- identity; guarded by the session's registry lock after creation ---- */
    uint32_t id;            /* 1-based thread id in the file */
    uint64_t ident;         /* threading.get_ident() */
    uint64_t native_id;     /* the kernel's tid */
    int finished;           /* its last chunk is published; nothing more will be written */
    uint8_t chunk_type;     /* FT_CHUNK_EVENTS, or FT_CHUNK_SAMPLES for the sampler's ring */
} ft_thread;

/* Payload area of chunk number `seq` (any sequence number; the ring wraps). */
static inline uint8_t*
ft_chunk_payload(ft_thread* t, uint64_t seq)
{
    return t->chunks + (size_t)(seq % t->n_chunks) * t->chunk_size + FT_CHUNK_HEADER_SIZE;
}

/* The capture's max_depth (UINT32_MAX: none) and min_duration (in ticks, 0: none): every
 * thread created from now on gets them.  Set before the session's threads are. */
extern uint32_t ft_thread_max_depth;
extern uint64_t ft_thread_min_ticks;
/* min_duration in ns (0: none), set with the scope; the session turns it into
 * ft_thread_min_ticks once its clock is known. */
extern uint64_t ft_thread_min_ns;

/* min_duration: writes the pending calls of frames [written, upto) with their own enter ticks
 * (FT_REC_CALL or FT_REC_C_CALL), outermost first, taking chunks as needed; a call that finds
 * no room is counted as dropped.  Muted regions do not apply (the frames are the program's).
 * Producer only; needs no GIL. */
void ft_thread_flush_pending(ft_thread* t, uint32_t upto);

/* Allocates a thread buffer; NULL on failure.  No Python calls. */
ft_thread* ft_thread_new(uint32_t id, uint32_t chunk_size, uint32_t n_chunks);
void ft_thread_free(ft_thread* t);

/* Slow path of every record write, called when pos > limit.  Publishes the full chunk, takes
 * the next one, resumes from a gap (writing a DROP record), re-checks the thread name, or
 * follows a muted region.  `enter` is 1 for a call, 0 for a return.  Returns FT_ROOM_WRITE if
 * a record of FT_MAX_EVENT_SIZE bytes may now be written at pos, FT_ROOM_DROP if the event
 * must be dropped (and counted), FT_ROOM_SKIP if it is one of fasttrace's own (not recorded,
 * not on the shadow stack).  Needs the GIL only for the name check (hook context). */
enum { FT_ROOM_DROP = 0, FT_ROOM_WRITE = 1, FT_ROOM_SKIP = 2 };
int ft_thread_make_room(ft_thread* t, uint64_t now, int enter);

/* Starts a muted region on this thread: its next event is one of fasttrace's own (enter), or
 * `open_frames` own frames are already running (their returns, and what they call, are not
 * recorded).  Producer only. */
void ft_thread_mute(ft_thread* t, uint32_t open_frames);

/* The thread's name is known: its events stop taking the slow path for the name check. */
void ft_thread_named(ft_thread* t);

/* An event that writes nothing (muted, or pending under min_duration): the name check, which
 * otherwise rides on written records, runs at each of the first 64 such events, then at the
 * 128th, 256th ... while the name is unknown (threading registers a thread within its first
 * few dozen events; a thread it never registers stops paying soon).  Hook context. */
void ft_thread_unwritten_event(ft_thread* t);

/* Sets the muted depth (0 ends the muted region) and returns the previous one.  Producer
 * only. */
uint32_t ft_thread_set_muted(ft_thread* t, uint32_t muted);

/* ---- what this layer needs from the layers above it ----------------------------------------
 * Callbacks those layers set, so that the dependencies run one way (format; thread; session
 * and writer; hooks and sampler on top) and this file includes nothing above it. */

/* Called (in hook context, GIL held) each time a thread hands a full chunk to the writer: the
 * hooks check there that no other tool took their place.  Set by ft_hooks.c. */
extern void (*ft_thread_on_handoff)(void);

/* Looks the thread's name up and records it.  Returns 1 once the name is known (or cannot ever
 * be).  GIL held.  Set by ft_hooks.c; while unset the name is never looked up (the sampler's
 * ring has none). */
extern int (*ft_thread_try_name)(ft_thread* t);

/* Wakes the writer thread: a ring is half full.  Any producer, no lock held.  Set by
 * ft_session.c before any ring exists. */
extern void (*ft_thread_kick_writer)(void);

/* Marks that another tool replaced this thread's hook (GIL held; the thread's own hook no
 * longer runs, so the caller may act as its producer).  Returns 1 the first time. */
int ft_thread_lose_hook(ft_thread* t);

/* Writes a STACK or DROP record of the current shadow stack into the current chunk (which the
 * caller made room in).  `tag` is FT_REC_STACK or FT_REC_DROP. */
void ft_thread_put_stack(ft_thread* t, uint8_t tag, uint64_t dropped, uint64_t now);

/* Begins the ring's first chunk with its OPEN record: the frames in the shadow stack (those
 * running at start(), or none).  Once, before the thread's first event. */
void ft_thread_open_first(ft_thread* t);

/* Publishes the partly filled chunk (if it holds events) and takes the next one, begun with
 * OPEN.  The producer must be quiescent: the caller holds the GIL, and a hook never lets go of
 * it while it writes a record.  Caller holds the registry lock (a thread's own exit path
 * finishes it under that lock). */
void ft_thread_flush(ft_thread* t);

/* Publishes the partially filled chunk, marks it as the thread's last, and stops the producer.
 * Called with the producer quiescent: at stop() or from the exiting thread itself. */
void ft_thread_finish(ft_thread* t, uint64_t now);

/* For a ring written by something other than a hook (the sampler): publishes the chunk being
 * filled, unless the ring was full, and if `more` takes the next one.  Returns 1 if a chunk is
 * ready to write into (`dropping` is then 0). */
int ft_thread_rotate(ft_thread* t, int more);

#endif /* FT_THREAD_H */

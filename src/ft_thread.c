/* ft_thread.c: the slow paths of a thread's chunk ring (see ft_thread.h). */
#include "ft_thread.h"

#include <stdlib.h>
#include <sys/mman.h>

/* While the name is unknown, every record takes the slow path, which looks the thread up in
 * threading._active (~100 ns): on 3.12+ a new thread records ~50 events before threading
 * registers it and may record only a dozen after, so any coarser interval misses short
 * threads.  A thread still unnamed when its first chunk fills (not a threading.Thread) stops
 * being checked. */
#define FT_NAME_RECHECK_BYTES 0

void (*ft_thread_on_handoff)(void);
int (*ft_thread_try_name)(ft_thread* t);
void (*ft_thread_kick_writer)(void);

/* A chunk-less thread points pos and limit here so that every event takes the slow path. */
static uint8_t g_no_room[FT_MAX_EVENT_SIZE * 2];

static void set_limit(ft_thread* t);

/* Points pos past limit, so that every record takes the slow path. */
static void
no_room(ft_thread* t)
{
    t->limit = t->real_limit = g_no_room + FT_MAX_EVENT_SIZE;
    t->pos = g_no_room + FT_MAX_EVENT_SIZE + 1;
}

static void*
map_anon(size_t size)
{
    void* p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

uint32_t ft_thread_max_depth = UINT32_MAX;
uint64_t ft_thread_min_ticks;
uint64_t ft_thread_min_ns;

ft_thread*
ft_thread_new(uint32_t id, uint32_t chunk_size, uint32_t n_chunks)
{
    ft_thread* t = calloc(1, sizeof *t);
    if (t == NULL) {
        return NULL;
    }
    t->id = id;
    t->chunk_size = chunk_size;
    t->n_chunks = n_chunks;
    /* Anonymous mappings: pages are only committed as the ring and the stack are touched. */
    t->chunks = map_anon((size_t)chunk_size * n_chunks);
    t->stack = map_anon((size_t)FT_MAX_DEPTH * sizeof(uint32_t));
    t->meta = calloc(n_chunks, sizeof *t->meta);
    if (t->chunks == NULL || t->stack == NULL || t->meta == NULL) {
        ft_thread_free(t);
        return NULL;
    }
    t->chunk_type = FT_CHUNK_EVENTS;
    t->max_depth = ft_thread_max_depth;
    t->min_ticks = ft_thread_min_ticks;
    t->depth_limit = t->min_ticks ? 0 : t->max_depth;
    if (t->min_ticks) {
        t->enter_ticks = map_anon((size_t)FT_MAX_DEPTH * sizeof(uint64_t));
        if (t->enter_ticks == NULL) {
            ft_thread_free(t);
            return NULL;
        }
    }
    atomic_init(&t->head, 0);
    atomic_init(&t->tail, 0);
    t->pos = ft_chunk_payload(t, 0);
    t->real_limit = t->pos + (chunk_size - FT_CHUNK_HEADER_SIZE) - FT_MAX_EVENT_SIZE;
    t->name_pending = 1;
    set_limit(t);
    return t;
}

void
ft_thread_free(ft_thread* t)
{
    if (t == NULL) {
        return;
    }
    if (t->chunks != NULL) {
        munmap(t->chunks, (size_t)t->chunk_size * t->n_chunks);
    }
    if (t->stack != NULL) {
        munmap(t->stack, (size_t)FT_MAX_DEPTH * sizeof(uint32_t));
    }
    if (t->enter_ticks != NULL) {
        munmap(t->enter_ticks, (size_t)FT_MAX_DEPTH * sizeof(uint64_t));
    }
    free(t->meta);
    free(t);
}

static void
set_limit(ft_thread* t)
{
    t->limit = t->real_limit;
    if (t->muted || t->mute_next) {
        /* Below pos: every event takes the slow path, which skips it.  pos is never the
         * first byte of the ring (chunk headers precede payloads), so pos - 1 is in bounds. */
        if (t->limit >= t->pos) {
            t->limit = t->pos - 1;
        }
        return;
    }
    if (t->name_pending && t->pos + FT_NAME_RECHECK_BYTES < t->real_limit) {
        t->limit = t->pos + FT_NAME_RECHECK_BYTES;
    }
}

void
ft_thread_mute(ft_thread* t, uint32_t open_frames)
{
    if (open_frames > 0) {
        t->muted += open_frames;
    }
    else {
        t->mute_next = 1;
    }
    set_limit(t);
}

void
ft_thread_named(ft_thread* t)
{
    t->name_pending = 0;
    set_limit(t);
}

uint32_t
ft_thread_set_muted(ft_thread* t, uint32_t muted)
{
    uint32_t was = t->muted;
    t->muted = muted;
    t->mute_next = 0;
    set_limit(t);
    return was;
}

int
ft_thread_lose_hook(ft_thread* t)
{
    if (t->hook_lost || t->finished) {
        return 0;
    }
    t->hook_lost = 1;
    return 1;
}

void
ft_thread_unwritten_event(ft_thread* t)
{
    uint32_t n = ++t->unwritten;
    if (t->name_pending && (n <= 64 || (n & (n - 1)) == 0) && ft_thread_try_name != NULL &&
        ft_thread_try_name(t)) {
        t->name_pending = 0;
        set_limit(t);
    }
}

/* A muted event: nothing is written and the shadow stack does not move. */
static int
follow_mute(ft_thread* t, int enter)
{
    if (t->name_pending) {
        ft_thread_unwritten_event(t);
    }
    int own = t->mute_next;
    t->mute_next = 0;
    if (t->muted > 0) {
        if (enter) {
            t->muted++;
        }
        else {
            t->muted--;
        }
    }
    else if (own && enter) {
        t->muted = 1; /* one of our own frames opens: mute until it returns */
    }
    /* else the return of one of our own frames that opened before the trace did */
    set_limit(t);
    return FT_ROOM_SKIP;
}

static uint8_t*
chunk_start(ft_thread* t)
{
    return ft_chunk_payload(t, atomic_load_explicit(&t->head, memory_order_relaxed));
}

static void
publish(ft_thread* t, uint32_t flags)
{
    uint64_t head = atomic_load_explicit(&t->head, memory_order_relaxed);
    ft_chunk_meta* m = &t->meta[head % t->n_chunks];
    m->used = (uint32_t)(t->pos - chunk_start(t));
    m->records = t->records;
    m->base_tick = t->chunk_base_tick;
    m->flags = flags;
    atomic_store_explicit(&t->head, head + 1, memory_order_release);
    uint64_t tail = atomic_load_explicit(&t->tail, memory_order_relaxed);
    if (head + 1 - tail >= t->n_chunks / 2 && ft_thread_kick_writer != NULL) {
        ft_thread_kick_writer();
    }
}

/* `varint depth, depth x varint fid`: the shadow stack, root first, in at most `room` bytes.
 * A stack too deep for them keeps its innermost frames, the ones the following returns pop. */
static uint8_t*
put_frames(ft_thread* t, uint8_t* p, size_t room)
{
    /* min_duration: only the frames whose calls are in the file (the pending ones may never
     * be) */
    uint32_t depth = t->min_ticks ? t->written : t->depth;
    uint32_t first = 0;
    if (10 + (size_t)depth * 5 > room) {
        uint32_t fit = (uint32_t)((room - 10) / 5);
        first = depth - fit;
        depth = fit;
    }
    p = ft_put_varint(p, depth);
    for (uint32_t i = first; i < first + depth; i++) {
        p = ft_put_varint(p, t->stack[i]);
    }
    return p;
}

/* The OPEN record that begins every events chunk (format 2): the shadow stack, so that the
 * chunk decodes without the ones before it (a flight-recorder window, a file of a rotated
 * series).  At most a quarter of the chunk: a deeper stack keeps its innermost frames, the ones
 * the chunk's returns pop.  No dt (its time is the chunk's base tick), and not counted in
 * `records`, which counts events. */
static void
put_open(ft_thread* t)
{
    uint8_t* p = t->pos;
    *p++ = FT_REC_OPEN;
    t->pos = put_frames(t, p, (t->chunk_size - FT_CHUNK_HEADER_SIZE) / 4 - 1);
}

void
ft_thread_open_first(ft_thread* t)
{
    put_open(t);
    set_limit(t);
}

/* Takes the chunk at head if the writer has given it back; `open`: begin it with OPEN (else
 * the caller begins it with a DROP, which carries the stack itself). */
static int
take_chunk(ft_thread* t, int open)
{
    uint64_t head = atomic_load_explicit(&t->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&t->tail, memory_order_acquire);
    if (head - tail >= t->n_chunks) {
        no_room(t);
        return 0;
    }
    uint8_t* start = ft_chunk_payload(t, head);
    t->pos = start;
    t->real_limit = start + (t->chunk_size - FT_CHUNK_HEADER_SIZE) - FT_MAX_EVENT_SIZE;
    t->records = 0;
    t->chunk_base_tick = t->last_tick;
    if (open && t->chunk_type == FT_CHUNK_EVENTS) {
        put_open(t);
    }
    set_limit(t);
    return 1;
}

void
ft_thread_flush(ft_thread* t)
{
    if (t->finished || t->dropping || t->records == 0) {
        return; /* nothing new, or a gap whose DROP will come with its next event */
    }
    publish(t, 0);
    if (!take_chunk(t, 1)) {
        t->dropping = 1;
    }
}

/* What take_room found. */
enum room { ROOM_NONE, ROOM_GAP_ENDED, ROOM_FREE, ROOM_NEW_CHUNK };

/* Room for a record at `now`, shared by the hooks' slow path and the flush of pending calls:
 * in a gap, a free chunk ends it with its DROP record (ROOM_GAP_ENDED) or the gap goes on
 * (ROOM_NONE); a full chunk is published and the next taken (ROOM_NEW_CHUNK), or a gap
 * begins (ROOM_NONE); else the chunk has room (ROOM_FREE). */
static enum room
take_room(ft_thread* t, uint64_t now)
{
    if (t->dropping) {
        if (!take_chunk(t, 0)) {
            return ROOM_NONE;
        }
        t->dropping = 0;
        ft_thread_put_stack(t, FT_REC_DROP, t->dropped, now);
        t->dropped_total += t->dropped;
        t->dropped = 0;
        return ROOM_GAP_ENDED;
    }
    if (t->pos <= t->real_limit) {
        return ROOM_FREE;
    }
    publish(t, 0);
    t->name_pending = 0; /* the periodic name check covers the first chunk only */
    if (!take_chunk(t, 1)) {
        t->dropping = 1;
        return ROOM_NONE;
    }
    return ROOM_NEW_CHUNK;
}

int
ft_thread_make_room(ft_thread* t, uint64_t now, int enter)
{
    if (FT_UNLIKELY(t->muted || t->mute_next)) {
        return follow_mute(t, enter);
    }
    switch (take_room(t, now)) {
    case ROOM_NONE:
        return 0;
    case ROOM_FREE:
        /* Not full: this visit is the periodic name check. */
        if (t->name_pending && (ft_thread_try_name == NULL || ft_thread_try_name(t))) {
            t->name_pending = 0;
        }
        set_limit(t);
        return 1;
    case ROOM_NEW_CHUNK:
        if (ft_thread_on_handoff != NULL) {
            ft_thread_on_handoff();
        }
        return 1;
    case ROOM_GAP_ENDED:
        return 1;
    }
    return 1;
}

void
ft_thread_put_stack(ft_thread* t, uint8_t tag, uint64_t dropped, uint64_t now)
{
    /* The record must fit in what is left of the chunk, below real_limit, which keeps back
     * room for the event record the caller writes next. */
    size_t room = (size_t)(t->real_limit - t->pos);
    uint8_t* p = t->pos;
    *p++ = tag;
    if (tag == FT_REC_DROP) {
        p = ft_put_varint(p, dropped);
    }
    p = ft_put_varint(p, now - t->last_tick);
    t->pos = put_frames(t, p, room - (1 + 10 + 10)); /* tag, dropped, dt at their widest */
    t->last_tick = now;
    t->records++;
    set_limit(t);
}

int
ft_thread_rotate(ft_thread* t, int more)
{
    if (!t->dropping && t->records > 0) {
        publish(t, more ? 0 : FT_CHUNK_LAST_OF_THREAD);
    } else if (!t->dropping) {
        if (!more) {
            t->dropping = 1; /* nothing to publish; the ring is done */
            no_room(t);
        }
        return more;
    }
    if (!more) {
        t->dropping = 1;
        no_room(t);
        return 0;
    }
    t->dropping = !take_chunk(t, 0);
    return !t->dropping;
}

/* Room for one record of FT_MAX_EVENT_SIZE at pos, for a pending call: as
 * ft_thread_make_room without its hook-context work (the name check, the handoff check), which
 * the next ordinary event does. */
static int
pending_room(ft_thread* t, uint64_t tick)
{
    return take_room(t, tick) != ROOM_NONE;
}

void
ft_thread_flush_pending(ft_thread* t, uint32_t upto)
{
    for (uint32_t i = t->written; i < upto; i++) {
        uint64_t e = t->enter_ticks[i];
        uint64_t tick = e >> 1;
        if (tick < t->last_tick) {
            tick = t->last_tick; /* never: a pending call is younger than any record */
        }
        if (pending_room(t, tick)) {
            uint8_t* p = t->pos;
            *p++ = (e & 1) ? FT_REC_C_CALL : FT_REC_CALL;
            p = ft_put_varint(p, t->stack[i]);
            p = ft_put_varint(p, tick - t->last_tick);
            t->pos = p;
            t->last_tick = tick;
            t->records++;
        }
        else {
            t->dropped++; /* the frame is open in the file from the gap's DROP record on */
        }
        t->written = i + 1;
    }
    set_limit(t);
}

void
ft_thread_finish(ft_thread* t, uint64_t now)
{
    if (t->hook_lost) {
        /* Nothing reopens after the gap that began at the thread's last record. */
        t->depth = 0;
        t->excess = 0;
        t->written = 0;
    }
    else if (t->min_ticks && t->written < t->depth) {
        /* Calls still running that already last min_duration: they are in the trace (their
         * ancestors, older, too), open at its end. */
        uint32_t upto = t->written;
        while (upto < t->depth && now - (t->enter_ticks[upto] >> 1) >= t->min_ticks) {
            upto++;
        }
        ft_thread_flush_pending(t, upto);
    }
    if (t->hook_lost && !t->dropping) {
        /* Close that gap: the reader closes the frames that were open at its start. */
        if (t->pos + 32 > t->real_limit) { /* put_stack needs 31 bytes below real_limit */
            publish(t, 0);
            if (!take_chunk(t, 0)) {
                t->dropping = 1;
            }
        }
        if (!t->dropping) {
            ft_thread_put_stack(t, FT_REC_DROP, 0, now);
        }
    }
    if (t->dropping && take_chunk(t, 0)) {
        t->dropping = 0;
        ft_thread_put_stack(t, FT_REC_DROP, t->dropped, now);
        t->dropped_total += t->dropped;
        t->dropped = 0;
    }
    if (!t->dropping) {
        publish(t, FT_CHUNK_LAST_OF_THREAD);
    }
    t->dropped_total += t->dropped;
    t->dropped = 0;
    t->dropping = 1;
    no_room(t);
}

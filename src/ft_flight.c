/* ft_flight.c: the flight recorder's ring of chunks and its dump (see ft_flight.h). */
#include "ft_flight.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ft_defs.h"

/* Each entry, at a multiple of 8 bytes: u64 arrival tick, the 32-byte chunk header, the
 * payload, zero padding to 8.  An arrival of WRAP means: the next entry is at the ring's
 * start (the rest of the mapping was too short for it). */
#define WRAP UINT64_MAX
#define NO_PIN UINT64_MAX
#define DUMP_SLICE (1u << 20) /* bytes written between two drains of the rings */

typedef struct {
    ft_sink base;
    uint8_t* buf;
    uint64_t cap;        /* a multiple of 8 */
    uint64_t tail, head; /* logical offsets: [tail, head) holds the entries */
    uint64_t pin;        /* entries at or after this offset are being dumped: kept */
    uint64_t window;     /* ticks: an entry that arrived longer ago than this may go */
} flight;

static inline uint64_t
pad8(uint64_t n)
{
    return (n + 7) & ~(uint64_t)7;
}

static inline uint8_t*
at(flight* r, uint64_t logical)
{
    return r->buf + logical % r->cap;
}

static inline uint64_t
arrival(flight* r, uint64_t logical)
{
    uint64_t a;
    memcpy(&a, at(r, logical), 8);
    return a;
}

/* Bytes the entry at `logical` takes, up to the next one. */
static uint64_t
entry_size(flight* r, uint64_t logical)
{
    if (arrival(r, logical) == WRAP) {
        return r->cap - logical % r->cap;
    }
    ft_chunk_header h;
    memcpy(&h, at(r, logical) + 8, sizeof h);
    return pad8(8 + FT_CHUNK_HEADER_SIZE + (uint64_t)h.payload_size);
}

/* Drops the oldest entry, unless it is pinned.  Returns 0 if it could not. */
static int
evict(flight* r)
{
    if (r->tail == r->head || r->tail >= r->pin) {
        return 0;
    }
    uint64_t size = entry_size(r, r->tail);
    if (arrival(r, r->tail) != WRAP) {
        ft_chunk_header h;
        memcpy(&h, at(r, r->tail) + 8, sizeof h);
        r->base.bytes -= FT_CHUNK_HEADER_SIZE + h.payload_size;
        r->base.chunks--;
    }
    r->tail += size;
    return 1;
}

static int
flight_chunk(ft_sink* s, const ft_chunk_header* h, const uint8_t* payload)
{
    flight* r = (flight*)s;
    if (h->type != FT_CHUNK_EVENTS && h->type != FT_CHUNK_SAMPLES) {
        /* Definitions live in the persistent table, which a dump writes whole; a dump writes
         * its own clock and trailer. */
        return FT_SINK_TAKEN;
    }
    uint64_t need = pad8(8 + FT_CHUNK_HEADER_SIZE + (uint64_t)h->payload_size);
    for (;;) {
        uint64_t room_to_end = r->cap - r->head % r->cap;
        uint64_t waste = room_to_end < need ? room_to_end : 0;
        if (r->cap - (r->head - r->tail) >= waste + need) {
            if (waste > 0) {
                uint64_t w = WRAP;
                memcpy(at(r, r->head), &w, 8);
                r->head += waste;
            }
            break;
        }
        if (!evict(r)) {
            return FT_SINK_BUSY;
        }
    }
    uint8_t* p = at(r, r->head);
    uint64_t now = ft_ticks();
    memcpy(p, &now, 8);
    memcpy(p + 8, h, FT_CHUNK_HEADER_SIZE);
    memcpy(p + 8 + FT_CHUNK_HEADER_SIZE, payload, h->payload_size);
    r->head += need;
    s->bytes += FT_CHUNK_HEADER_SIZE + h->payload_size;
    s->chunks++;
    return FT_SINK_TAKEN;
}

/* Once per round: entries older than the window go. */
static void
flight_flush(ft_sink* s)
{
    flight* r = (flight*)s;
    uint64_t now = ft_ticks();
    while (r->tail < r->head && r->tail < r->pin) {
        uint64_t a = arrival(r, r->tail);
        if (a != WRAP && now - a <= r->window) {
            break;
        }
        evict(r);
    }
}

static void
flight_destroy(ft_sink* s)
{
    flight* r = (flight*)s;
    munmap(r->buf, r->cap);
    free(r);
}

static void
flight_finish(ft_sink* s, ft_trailer* tr)
{
    (void)s; /* the window goes with the recorder: only dumps are files */
    (void)tr;
}

static const ft_sink_ops flight_ops = {flight_chunk, flight_flush, flight_finish,
                                       flight_destroy};

ft_sink*
ft_flight_new(uint64_t max_bytes, uint64_t window_ticks, uint32_t chunk_size)
{
    uint64_t cap = max_bytes & ~(uint64_t)7;
    if (cap < 2 * pad8(8 + (uint64_t)chunk_size)) {
        return NULL;
    }
    flight* r = calloc(1, sizeof *r);
    if (r == NULL) {
        return NULL;
    }
    /* Reserved, not committed: pages are touched as chunks arrive, and stay (RSS is flat once
     * the ring has wrapped). */
    void* buf = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        free(r);
        return NULL;
    }
    r->base.ops = &flight_ops;
    r->base.keeps_window = 1;
    r->buf = buf;
    r->cap = cap;
    r->pin = NO_PIN;
    r->window = window_ticks;
    return &r->base;
}

/* ---- dump ---------------------------------------------------------------------------------- */

/* ns per tick from the session's start to now (the best estimate there is). */
static double
ns_per_tick(const ft_file_info* info, const ft_clock_sync* now)
{
    if (now->tick > info->start.tick + (uint64_t)(info->tick_hz / 1000)) {
        return (double)(now->mono_ns - info->start.mono_ns) /
               (double)(now->tick - info->start.tick);
    }
    return 1e9 / info->tick_hz;
}

void
ft_flight_dump(ft_sink* ring, int fd, const ft_file_info* info, const ft_clock_sync* now,
               const ft_trailer* trailer, void (*between)(void* arg), void* arg,
               ft_flight_dump_result* out)
{
    flight* r = (flight*)ring;
    memset(out, 0, sizeof *out);
    uint64_t from = r->tail, to = r->head;

    /* The window starts at the earliest base tick: every record is at or after it. */
    uint64_t start = now->tick;
    for (uint64_t l = from; l < to; l += entry_size(r, l)) {
        if (arrival(r, l) != WRAP) {
            ft_chunk_header h;
            memcpy(&h, at(r, l) + 8, sizeof h);
            if (h.base_tick < start) {
                start = h.base_tick;
            }
        }
    }
    ft_file_info hdr = *info;
    double npt = ns_per_tick(info, now);
    uint64_t back = (uint64_t)((double)(now->tick - start) * npt);
    hdr.start.tick = start;
    hdr.start.mono_ns = now->mono_ns - back;
    hdr.start.wall_ns = now->wall_ns - back;
    hdr.origin = FT_ORIGIN_FLIGHT;
    hdr.series_index = 0;
    hdr.series_id = 0;
    out->start_tick = start;
    out->end_tick = now->tick;
    out->duration_ns = back;
    out->threads = trailer->threads;
    out->functions = trailer->functions;

    uint64_t header_size = 0;
    int err = ft_file_write_header(fd, &hdr, &header_size);
    ft_sink* file = err == 0 ? ft_file_sink_new(fd, header_size) : NULL;
    if (file == NULL) {
        out->error = err != 0 ? err : 12 /* ENOMEM */;
        return;
    }
    size_t n_defs = 0, defs_end = 0;
    uint8_t* defs = ft_defs_copy(0, &n_defs, &defs_end);
    if (n_defs > 0) {
        ft_sink_small_chunk(file, FT_CHUNK_DEFS, defs, (uint32_t)n_defs);
    }
    free(defs);

    /* The chunks, oldest first, a slice at a time: what is written may be evicted, so the
     * writer can drain the rings into the room it frees. */
    r->pin = from;
    uint64_t l = from;
    while (l < to && file->error == 0) {
        uint64_t slice = 0;
        while (l < to && slice < DUMP_SLICE) {
            uint64_t size = entry_size(r, l);
            if (arrival(r, l) != WRAP) {
                const ft_chunk_header* h = (const ft_chunk_header*)(at(r, l) + 8);
                ft_sink_chunk(file, h, at(r, l) + 8 + FT_CHUNK_HEADER_SIZE);
                out->events += h->records;
                out->chunks++;
                slice += FT_CHUNK_HEADER_SIZE + h->payload_size;
            }
            l += size;
        }
        ft_sink_flush(file);
        r->pin = l;
        if (l < to && between != NULL) {
            between(arg);
        }
    }
    r->pin = NO_PIN;

    uint8_t clock[24];
    ft_put_u64(ft_put_u64(ft_put_u64(clock, now->tick), now->mono_ns), now->wall_ns);
    ft_sink_small_chunk(file, FT_CHUNK_CLOCK, clock, sizeof clock);
    ft_trailer tr = *trailer;
    tr.events = out->events;
    tr.stop_tick = now->tick;
    tr.stop_mono_ns = now->mono_ns;
    tr.stop_wall_ns = now->wall_ns;
    tr.error = 0;
    ft_sink_small_chunk(file, FT_CHUNK_TRAILER, (const uint8_t*)&tr, sizeof tr);
    out->error = file->error;
    out->error_offset = file->error_offset;
    out->bytes = file->bytes;
    ft_sink_destroy(file);
}

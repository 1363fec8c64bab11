/* ft_reader.c: decoding .ftrace files (see ft_reader.h and FORMAT.md). */
#include "ft_reader.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static int
fail(ft_read_error* e, size_t offset, const char* fmt, ...)
{
    e->offset = offset;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->reason, sizeof e->reason, fmt, ap);
    va_end(ap);
    return -1;
}

static uint32_t
get_u32(const uint8_t* p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t
get_u64(const uint8_t* p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline int
get_varint(const uint8_t** p, const uint8_t* end, uint64_t* out)
{
    const uint8_t* q = *p;
    uint64_t v = 0;
    for (int shift = 0; q < end && shift < 64; shift += 7) {
        uint8_t b = *q++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = v;
            *p = q;
            return 1;
        }
    }
    return 0;
}

static int
get_str(const uint8_t** p, const uint8_t* end, ft_str* s)
{
    uint64_t n;
    if (!get_varint(p, end, &n) || n > (uint64_t)(end - *p)) {
        return 0;
    }
    s->s = *p;
    s->n = (size_t)n;
    *p += n;
    return 1;
}

/* ---- header ------------------------------------------------------------------------------ */

#define FT_HEADER_FIXED 64

int
ft_read_header(const uint8_t* data, size_t size, ft_header* h, ft_read_error* e)
{
    memset(h, 0, sizeof *h);
    if (size == 0) {
        return fail(e, 0, "empty file");
    }
    if (size < FT_MAGIC_SIZE || memcmp(data, FT_MAGIC, FT_MAGIC_SIZE) != 0) {
        return fail(e, 0, "not a fasttrace file (bad magic)");
    }
    if (size < FT_PREAMBLE_SIZE) {
        return fail(e, size, "file ends inside the header preamble");
    }
    h->version = get_u32(data + 8);
    if (h->version < FT_FORMAT_VERSION_MIN || h->version > FT_FORMAT_VERSION_MAX) {
        return fail(e, 8,
                    "format version %u is not supported (this reader reads versions %u to %u)%s",
                    h->version, FT_FORMAT_VERSION_MIN, FT_FORMAT_VERSION_MAX,
                    h->version > FT_FORMAT_VERSION_MAX ? "; upgrade fasttrace" : "");
    }
    uint32_t body_size = get_u32(data + 12);
    if (body_size > size - FT_PREAMBLE_SIZE) {
        return fail(e, size, "file ends inside the header (%u header bytes declared)", body_size);
    }
    const uint8_t* body = data + FT_PREAMBLE_SIZE;
    if ((uint32_t)crc32(0, body, body_size) != get_u32(data + 16)) {
        return fail(e, FT_PREAMBLE_SIZE, "header checksum mismatch");
    }
    if (body_size < FT_HEADER_FIXED) {
        return fail(e, FT_PREAMBLE_SIZE, "header too short (%u bytes)", body_size);
    }
    const uint8_t* p = body;
    h->python_version_hex = get_u32(p);
    h->pid = get_u32(p + 4);
    h->mode = get_u32(p + 8);
    h->flags = get_u32(p + 12);
    h->clock_kind = get_u32(p + 16);
    h->chunk_size = get_u32(p + 20);
    h->buffer_size = get_u64(p + 24);
    h->start_tick = get_u64(p + 32);
    h->start_mono_ns = get_u64(p + 40);
    h->start_wall_ns = get_u64(p + 48);
    memcpy(&h->tick_hz, p + 56, 8);
    p += 64;
    const uint8_t* end = body + body_size;
    ft_str cmd, py;
    if (!get_str(&p, end, &cmd) || !get_str(&p, end, &py)) {
        return fail(e, (size_t)(p - data), "header strings are malformed");
    }
    h->command_line = cmd.s;
    h->command_line_size = cmd.n;
    h->python_version = py.s;
    h->python_version_size = py.n;
    if (h->version >= 2) { /* varint series_index, u64 series_id, u8 origin */
        if (!get_varint(&p, end, &h->series_index)) {
            return fail(e, (size_t)(p - data), "header series fields are malformed");
        }
        if (end - p < 9) {
            return fail(e, (size_t)(p - data) + (end - p < 8 ? 0 : 8),
                        "header series fields are malformed");
        }
        h->series_id = get_u64(p);
        h->origin = p[8];
    }
    if (h->clock_kind != 1 && h->clock_kind != 2) {
        return fail(e, FT_PREAMBLE_SIZE + 16, "unknown clock kind %u", h->clock_kind);
    }
    if (!(h->tick_hz > 0.0)) {
        return fail(e, FT_PREAMBLE_SIZE + 56, "invalid tick rate");
    }
    h->first_chunk = FT_PREAMBLE_SIZE + body_size;
    return 0;
}

/* ---- definitions ------------------------------------------------------------------------- */

/* Skips `count` varints, recording where they are. */
static int
get_varint_list(const uint8_t** p, const uint8_t* end, uint64_t count, ft_str* list)
{
    if (count > (uint64_t)(end - *p)) { /* every varint takes at least one byte */
        return 0;
    }
    const uint8_t* start = *p;
    uint64_t v;
    for (uint64_t i = 0; i < count; i++) {
        if (!get_varint(p, end, &v)) {
            return 0;
        }
    }
    list->s = start;
    list->n = (size_t)(*p - start);
    return 1;
}

size_t
ft_def_list(const ft_def* d, uint64_t* out, size_t n)
{
    const uint8_t* p = d->list.s;
    const uint8_t* end = p + d->list.n;
    size_t i = 0;
    while (i < n && i < d->count && get_varint(&p, end, &out[i])) {
        i++;
    }
    return i;
}

int
ft_next_def(const uint8_t* payload, size_t size, size_t* pos, size_t base, ft_def* d,
            ft_read_error* e)
{
    if (*pos >= size) {
        return 0;
    }
    const uint8_t* p = payload + *pos;
    const uint8_t* end = payload + size;
    memset(d, 0, sizeof *d);
    d->tag = *p++;
    int ok;
    switch (d->tag) {
    case FT_DEF_FUNCTION:
        ok = get_varint(&p, end, &d->id) && p < end;
        if (ok) {
            d->flags = *p++;
            ok = get_varint(&p, end, &d->lineno) && get_str(&p, end, &d->name) &&
                 get_str(&p, end, &d->qualname) && get_str(&p, end, &d->filename) &&
                 get_str(&p, end, &d->module);
        }
        break;
    case FT_DEF_THREAD:
        ok = get_varint(&p, end, &d->id) && get_varint(&p, end, &d->ident) &&
             get_varint(&p, end, &d->native_id) && get_str(&p, end, &d->name);
        break;
    case FT_DEF_THREAD_NAME:
        ok = get_varint(&p, end, &d->id) && get_str(&p, end, &d->name);
        break;
    case FT_DEF_STACK:
        ok = get_varint(&p, end, &d->id) && p < end;
        if (ok) {
            d->flags = *p++;
            ok = get_varint(&p, end, &d->count) && get_varint_list(&p, end, d->count, &d->list);
        }
        break;
    case FT_DEF_SAMPLING:
        ok = get_varint(&p, end, &d->rate) && p < end;
        if (ok) {
            d->clock = *p++;
            ok = get_varint(&p, end, &d->max_depth);
        }
        d->id = 1; /* no id: keep the id check below quiet */
        break;
    case FT_DEF_SAMPLER_STATS:
        ok = get_varint(&p, end, &d->count) && get_varint_list(&p, end, d->count, &d->list);
        d->id = 1;
        break;
    case FT_DEF_HOOK_LOST:
        ok = get_varint(&p, end, &d->id) && get_varint(&p, end, &d->tick) &&
             get_str(&p, end, &d->name);
        break;
    case FT_DEF_SCOPE:
        ok = get_str(&p, end, &d->name); /* the JSON text */
        d->id = 1;
        break;
    default:
        return fail(e, base + *pos, "unknown definition record 0x%02x", d->tag);
    }
    if (!ok) {
        return fail(e, base + *pos, "truncated definition record 0x%02x", d->tag);
    }
    if (d->id == 0 || d->id > 0xFFFFFFFFu) {
        return fail(e, base + *pos, "definition record with invalid id %llu",
                    (unsigned long long)d->id);
    }
    *pos = (size_t)(p - payload);
    return 1;
}

/* ---- samples ----------------------------------------------------------------------------- */

int
ft_next_sample(const uint8_t* payload, size_t size, size_t* pos, size_t base, uint64_t* tick,
               ft_sample* s, ft_read_error* e)
{
    if (*pos >= size) {
        return 0;
    }
    const uint8_t* p = payload + *pos;
    const uint8_t* end = payload + size;
    size_t offset = base + *pos;
    uint8_t tag = *p++;
    if (tag != FT_REC_SAMPLE) {
        return fail(e, offset, "unknown sample record 0x%02x", tag);
    }
    uint64_t dt, w;
    if (!get_varint(&p, end, &dt) || !get_varint(&p, end, &s->thread) ||
        !get_varint(&p, end, &s->stack) || !get_varint(&p, end, &w)) {
        return fail(e, offset, "truncated sample record");
    }
    if (s->thread == 0 || s->thread > 0xFFFFFFFFu) {
        return fail(e, offset, "sample with invalid thread id %llu", (unsigned long long)s->thread);
    }
    *tick += dt;
    s->tick = *tick;
    s->state = (uint8_t)(w & ((1u << FT_SAMPLE_STATE_BITS) - 1));
    s->weight_us = w >> FT_SAMPLE_STATE_BITS;
    *pos = (size_t)(p - payload);
    return 1;
}

/* ---- events ------------------------------------------------------------------------------ */

static int
push_event(ft_event_buf* out, uint8_t kind, uint32_t fid, uint64_t tick, uint8_t synthetic)
{
    if (out->n == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 4096;
        ft_event* grown = realloc(out->ev, cap * sizeof *grown);
        if (grown == NULL) {
            return -1;
        }
        out->ev = grown;
        out->cap = cap;
    }
    ft_event* ev = &out->ev[out->n++];
    ev->tick = tick;
    ev->aux = ev->aux2 = 0;
    ev->fid = fid;
    ev->kind = kind;
    ev->synthetic = synthetic;
    return 0;
}

static int
stack_push(ft_thread_decoder* d, uint32_t fid)
{
    if (d->depth == d->cap) {
        uint32_t cap = d->cap ? d->cap * 2 : 256;
        uint32_t* grown = realloc(d->stack, cap * sizeof *grown);
        if (grown == NULL) {
            return -1;
        }
        d->stack = grown;
        d->cap = cap;
    }
    d->stack[d->depth++] = fid;
    return 0;
}

static inline uint8_t
enter_kind(const ft_functions_view* fv, uint32_t fid)
{
    return fv->fid_kind[fid] == 1 ? FT_EV_C_CALL : FT_EV_CALL;
}

int
ft_close_open(ft_thread_decoder* d, const ft_functions_view* fv, uint64_t tick,
              ft_event_buf* out)
{
    while (d->depth > 0) {
        uint32_t fid = d->stack[--d->depth];
        if (push_event(out, enter_kind(fv, fid) + 1, fid, tick, 1) < 0) {
            return -1;
        }
    }
    return 0;
}

static int
check_fid(const ft_functions_view* fv, uint64_t fid, size_t offset, ft_read_error* e)
{
    if (fid == 0 || fid >= fv->n_fids || fv->fid_kind[fid] == 0xFF) {
        return fail(e, offset, "function id %llu is used before its definition",
                    (unsigned long long)fid);
    }
    return 0;
}

/* Reads `depth` function ids; with `open`, makes them the open stack (pushed onto it, which
 * is empty), emitting synthetic calls at `tick`; without, only checks them. */
static int
read_stack(ft_thread_decoder* d, const ft_functions_view* fv, const uint8_t** p,
           const uint8_t* end, size_t offset, uint64_t tick, int open, const char* what,
           ft_event_buf* out, ft_read_error* e)
{
    uint64_t depth, fid;
    if (!get_varint(p, end, &depth) || depth > (uint64_t)(end - *p)) {
        return fail(e, offset, "malformed %s record", what);
    }
    for (uint64_t i = 0; i < depth; i++) {
        if (!get_varint(p, end, &fid)) {
            return fail(e, offset, "malformed %s record", what);
        }
        if (check_fid(fv, fid, offset, e) < 0) {
            return -1;
        }
        if (open && (stack_push(d, (uint32_t)fid) < 0 ||
                     push_event(out, enter_kind(fv, (uint32_t)fid), (uint32_t)fid, tick, 1) < 0)) {
            return fail(e, offset, "out of memory");
        }
    }
    return 0;
}

/* Synthetic returns for the open frames at `close_tick`, then a gap [close_tick, tick]. */
static int
close_with_gap(ft_thread_decoder* d, const ft_functions_view* fv, uint64_t close_tick,
               uint64_t tick, uint64_t dropped, ft_event_buf* out)
{
    if (ft_close_open(d, fv, close_tick, out) < 0 || push_event(out, FT_EV_GAP, 0, tick, 1) < 0) {
        return -1;
    }
    out->ev[out->n - 1].aux = dropped;
    out->ev[out->n - 1].aux2 = close_tick;
    return 0;
}

void
ft_thread_decoder_break(ft_thread_decoder* d)
{
    if (d->started) {
        d->broken = 1;
    }
}

int
ft_decode_events(ft_thread_decoder* d, const ft_functions_view* fv, const uint8_t* payload,
                 size_t size, size_t base, uint64_t base_tick, uint32_t version,
                 ft_event_buf* out, ft_read_error* e)
{
    const uint8_t* p = payload;
    const uint8_t* end = payload + size;
    uint64_t tick = base_tick;
    uint8_t last_tag = version >= 2 ? FT_REC_OPEN : FT_REC_DROP;
    if (d->broken) {
        /* After a discontinuity: close what was open at the thread's last record, note a gap
         * of unknown size, and decode this chunk as the thread's first. */
        if (close_with_gap(d, fv, d->last_tick, base_tick, 0, out) < 0) {
            return fail(e, base, "out of memory");
        }
        d->broken = 0;
        d->started = 0;
    }
    while (p < end) {
        const uint8_t* rec = p;
        size_t offset = base + (size_t)(rec - payload);
        uint8_t tag = *p++;
        uint64_t fid = 0, dt, dropped = 0;
        int has_fid = tag == FT_REC_CALL || tag == FT_REC_C_CALL ||
                      tag == FT_REC_ORPHAN_RETURN || tag == FT_REC_ORPHAN_C_RETURN;
        if (tag == 0 || tag > last_tag || tag == FT_REC_SAMPLE) {
            return fail(e, offset, "unknown event record 0x%02x", tag);
        }
        if (version >= 2 && rec == payload) {
            if (tag != FT_REC_OPEN && tag != FT_REC_DROP) {
                return fail(e, offset,
                            "events chunk starts with record 0x%02x, not an open or drop record",
                            tag);
            }
        } else if (tag == FT_REC_OPEN) {
            return fail(e, offset, "open record after the start of its chunk");
        }
        if (tag == FT_REC_OPEN) {
            /* The frames open when the chunk began, at base_tick: the thread's first chunk
             * opens them; later ones find them open already. */
            if (read_stack(d, fv, &p, end, offset, tick, !d->started, "open", out, e) < 0) {
                return -1;
            }
            continue;
        }
        if (tag == FT_REC_DROP && !get_varint(&p, end, &dropped)) {
            return fail(e, offset, "truncated drop record");
        }
        if ((has_fid && !get_varint(&p, end, &fid)) || !get_varint(&p, end, &dt)) {
            return fail(e, offset, "truncated event record 0x%02x", tag);
        }
        if (has_fid && check_fid(fv, fid, offset, e) < 0) {
            return -1;
        }
        uint64_t prev = tick;
        tick += dt;
        int err = 0;
        switch (tag) {
        case FT_REC_CALL:
        case FT_REC_C_CALL:
            err = stack_push(d, (uint32_t)fid) ||
                  push_event(out, tag == FT_REC_CALL ? FT_EV_CALL : FT_EV_C_CALL, (uint32_t)fid,
                             tick, 0);
            break;
        case FT_REC_RETURN:
        case FT_REC_C_RETURN:
            if (d->depth == 0) {
                d->unmatched++; /* its frame was cut from an over-deep stack record */
                break;
            }
            fid = d->stack[--d->depth];
            err = push_event(out, tag == FT_REC_RETURN ? FT_EV_RETURN : FT_EV_C_RETURN,
                             (uint32_t)fid, tick, 0);
            break;
        case FT_REC_ORPHAN_RETURN:
        case FT_REC_ORPHAN_C_RETURN:
            err = push_event(out, tag == FT_REC_ORPHAN_RETURN ? FT_EV_RETURN : FT_EV_C_RETURN,
                             (uint32_t)fid, tick, 0);
            break;
        case FT_REC_STACK:
            if (d->depth != 0) {
                return fail(e, offset, "stack record while frames are open");
            }
            if (read_stack(d, fv, &p, end, offset, tick, 1, "stack", out, e) < 0) {
                return -1;
            }
            break;
        case FT_REC_DROP:
            /* Close what was open when the gap began, mark the gap, reopen what is open at
             * the resume point: nesting stays balanced on both sides. */
            if (close_with_gap(d, fv, prev, tick, dropped, out) < 0) {
                return fail(e, offset, "out of memory");
            }
            if (read_stack(d, fv, &p, end, offset, tick, 1, "stack", out, e) < 0) {
                return -1;
            }
            break;
        default:
            break;
        }
        if (err) {
            return fail(e, offset, "out of memory");
        }
    }
    if (size > 0) {
        d->started = 1;
    }
    d->last_tick = tick;
    return 0;
}

void
ft_thread_decoder_free(ft_thread_decoder* d)
{
    free(d->stack);
    memset(d, 0, sizeof *d);
}

void
ft_event_buf_free(ft_event_buf* b)
{
    free(b->ev);
    memset(b, 0, sizeof *b);
}

int
ft_events_last_tick(const uint8_t* payload, size_t size, uint64_t base_tick, uint32_t version,
                    uint64_t* out)
{
    const uint8_t* p = payload;
    const uint8_t* end = payload + size;
    uint64_t tick = base_tick, v, depth;
    *out = base_tick;
    while (p < end) {
        uint8_t tag = *p++;
        switch (tag) {
        case FT_REC_CALL:
        case FT_REC_C_CALL:
        case FT_REC_ORPHAN_RETURN:
        case FT_REC_ORPHAN_C_RETURN:
            if (!get_varint(&p, end, &v) || !get_varint(&p, end, &v)) {
                return -1;
            }
            break;
        case FT_REC_RETURN:
        case FT_REC_C_RETURN:
            if (!get_varint(&p, end, &v)) {
                return -1;
            }
            break;
        case FT_REC_OPEN:
        case FT_REC_STACK:
        case FT_REC_DROP: {
            uint64_t dt = 0; /* OPEN has none: its tick is base_tick */
            if (tag == FT_REC_OPEN && version < 2) {
                return -1;
            }
            if ((tag == FT_REC_DROP && !get_varint(&p, end, &v)) ||
                (tag != FT_REC_OPEN && !get_varint(&p, end, &dt)) ||
                !get_varint(&p, end, &depth) || depth > (uint64_t)(end - p)) {
                return -1;
            }
            for (uint64_t i = 0; i < depth; i++) {
                if (!get_varint(&p, end, &v)) {
                    return -1;
                }
            }
            v = dt;
            break;
        }
        default:
            return -1;
        }
        tick += v; /* the record's dt is the last varint read, except for OPEN, STACK, DROP */
        *out = tick;
    }
    return 0;
}

/* ft_sampler_remote.c: the sampler's reads of its own process's memory.  Every read is a
 * process_vm_readv on our own pid, a copy the kernel makes or refuses (a stale pointer gives
 * EFAULT, never SIGSEGV), so the sampler never dereferences interpreter memory.  Here: the read
 * plan that gathers the known thread states into few spans, the batched re-read of them all
 * once per tick, and strs copied out as UTF-8.  A single read (safe_read) and the clocks are
 * static inline in ft_sampler_state.h: the walk calls them for every frame.
 */
#define _GNU_SOURCE
#define FT_COMPAT_SAMPLER
#include "ft_compat.h"

#include "ft_sampler_state.h"

#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

/* Thread states closer than SPAN_GAP bytes are read as one span (at most SPAN_MAX bytes). */
#define SPAN_GAP 1024
#define SPAN_MAX (64 * 1024)

/* ---- safe reads ----------------------------------------------------------------------------- */

static int
by_address(const void* a, const void* b)
{
    uintptr_t x = (uintptr_t)S.known[*(const uint32_t*)a]->addr;
    uintptr_t y = (uintptr_t)S.known[*(const uint32_t*)b]->addr;
    return x < y ? -1 : x > y;
}

/* Makes the read plan for S.known (when the list changed: rarely).  0, or -1 on ENOMEM. */
int
ft_smp_plan_reads(void)
{
    uint32_t n = S.n_known;
    for (uint32_t j = 0; j < n; j++) {
        S.order[j] = j;
    }
    qsort(S.order, n, sizeof *S.order, by_address);
    S.n_spans = 0;
    size_t total = 0;
    for (uint32_t k = 0; k < n; k++) {
        const char* at = (const char*)S.known[S.order[k]]->addr;
        struct span* last = S.n_spans ? &S.spans[S.n_spans - 1] : NULL;
        /* The next state joins the span if it starts at or after the span's end, close to it
         * (a copy of a few hundred bytes costs less than pinning another page). */
        if (last != NULL && at >= last->at + last->len &&
            (size_t)(at - (last->at + last->len)) <= SPAN_GAP &&
            (size_t)(at - last->at) + sizeof(ft_raw_tstate) <= SPAN_MAX) {
            size_t len = (size_t)(at - last->at) + sizeof(ft_raw_tstate);
            total += len - last->len;
            last->len = len;
            last->count++;
        } else {
            if (S.n_spans == S.cap_spans) {
                uint32_t cap = S.cap_spans ? S.cap_spans * 2 : 64;
                struct span* grown = realloc(S.spans, cap * sizeof *grown);
                if (grown == NULL) {
                    return -1;
                }
                S.spans = grown;
                S.cap_spans = cap;
            }
            S.spans[S.n_spans++] = (struct span){at, sizeof(ft_raw_tstate), k, 1};
            total += sizeof(ft_raw_tstate);
        }
    }
    if (total > S.span_buf_len) {
        char* grown = realloc(S.span_buf, total);
        if (grown == NULL) {
            return -1;
        }
        S.span_buf = grown;
        S.span_buf_len = total;
    }
    size_t base = 0;
    for (uint32_t i = 0; i < S.n_spans; i++) {
        struct span* sp = &S.spans[i];
        for (uint32_t k = sp->first; k < sp->first + sp->count; k++) {
            uint32_t j = S.order[k];
            S.fresh_at[j] = base + (size_t)((const char*)S.known[j]->addr - sp->at);
        }
        base += sp->len;
    }
    S.known_moved = 0;
    return 0;
}

/* Re-reads every known thread state: one process_vm_readv per IOV_BATCH spans.  A call stops at
 * the first span it cannot read (it never splits one): that span's states are then read one by
 * one, and the next call starts after it. */
void
ft_smp_read_known_states(void)
{
    if (S.n_known > 0) {
        memset(S.fresh_ok, 0, S.n_known);
    }
    size_t base = 0; /* where span i's copy goes in span_buf */
    uint32_t i = 0;
    while (i < S.n_spans) {
        uint32_t n = S.n_spans - i < IOV_BATCH ? S.n_spans - i : IOV_BATCH;
        size_t to = base;
        for (uint32_t k = 0; k < n; k++) {
            const struct span* sp = &S.spans[i + k];
            S.iov_local[k] = (struct iovec){S.span_buf + to, sp->len};
            S.iov_remote[k] = (struct iovec){(void*)sp->at, sp->len};
            to += sp->len;
        }
        ssize_t got = process_vm_readv(S.pid, S.iov_local, n, S.iov_remote, n, 0);
        size_t left = got > 0 ? (size_t)got : 0;
        uint32_t k = 0;
        for (; k < n && left >= S.spans[i + k].len; k++) {
            const struct span* sp = &S.spans[i + k];
            left -= sp->len;
            base += sp->len;
            for (uint32_t m = sp->first; m < sp->first + sp->count; m++) {
                S.fresh_ok[S.order[m]] = 1;
            }
        }
        if (k < n) { /* this span failed: its thread states one by one */
            const struct span* sp = &S.spans[i + k];
            S.stat[FT_STAT_READ_FAILURES]++;
            for (uint32_t m = sp->first; m < sp->first + sp->count; m++) {
                uint32_t j = S.order[m];
                S.fresh_ok[j] = safe_read(S.span_buf + S.fresh_at[j], S.known[j]->addr,
                                          sizeof(ft_raw_tstate)) == 0;
            }
            base += sp->len;
            k++;
        }
        i += k;
    }
}

/* ---- strings -------------------------------------------------------------------------------- */

static uint8_t*
put_utf8(uint8_t* p, uint32_t c)
{
    if (c < 0x80) {
        *p++ = (uint8_t)c;
    } else if (c < 0x800) {
        *p++ = (uint8_t)(0xC0 | (c >> 6));
        *p++ = (uint8_t)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        *p++ = (uint8_t)(0xE0 | (c >> 12));
        *p++ = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        *p++ = (uint8_t)(0x80 | (c & 0x3F));
    } else {
        *p++ = (uint8_t)(0xF0 | ((c >> 18) & 0x07));
        *p++ = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
        *p++ = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        *p++ = (uint8_t)(0x80 | (c & 0x3F));
    }
    return p;
}

/* Copies the str at `addr` as UTF-8 into out (room for 4 * MAX_STR bytes).  Returns the length,
 * or -1 if it is not a readable compact str. */
int
ft_smp_read_str(const void* addr, uint8_t* out)
{
    ft_raw_str_header h;
    const void* data;
    size_t len;
    if (addr == NULL || safe_read(&h, addr, sizeof h) < 0) {
        return -1;
    }
    int kind = ft_raw_str_layout(addr, &h, &data, &len);
    if (kind == 0) {
        return -1;
    }
    if (len > MAX_STR) {
        len = MAX_STR;
    }
    uint8_t raw[4 * MAX_STR];
    if (len > 0 && safe_read(raw, data, len * (size_t)kind) < 0) {
        return -1;
    }
    if (kind == 1) { /* ASCII or Latin-1 */
        uint8_t* p = out;
        for (size_t i = 0; i < len; i++) {
            p = put_utf8(p, raw[i]);
        }
        return (int)(p - out);
    }
    uint8_t* p = out;
    for (size_t i = 0; i < len; i++) {
        uint32_t c;
        if (kind == 2) {
            uint16_t c16;
            memcpy(&c16, raw + 2 * i, 2);
            c = c16;
        } else {
            memcpy(&c, raw + 4 * i, 4);
            if (c > 0x10FFFF) {
                c = 0xFFFD;
            }
        }
        p = put_utf8(p, c);
    }
    return (int)(p - out);
}

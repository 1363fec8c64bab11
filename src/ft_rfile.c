/* ft_rfile.c: pread windows for the reader (see ft_rfile.h). */
#include "ft_rfile.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* Read-ahead: the chunk scan reads headers and payloads front to back, so one pread brings
 * in many chunks; big enough to make syscalls rare, small enough to stay cheap. */
#define FT_RFILE_WINDOW (1u << 20)

static int
fail(ft_read_error* e, uint64_t offset, const char* fmt, ...)
{
    e->offset = (size_t)offset;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->reason, sizeof e->reason, fmt, ap);
    va_end(ap);
    return -1;
}

void
ft_rfile_init(ft_rfile* f, int fd, uint64_t size)
{
    memset(f, 0, sizeof *f);
    f->fd = fd;
    f->size = size;
}

void
ft_rfile_free(ft_rfile* f)
{
    free(f->buf);
    f->buf = NULL;
    f->cap = f->win_len = 0;
}

const uint8_t*
ft_rfile_get(ft_rfile* f, uint64_t off, size_t n, int* changed, ft_read_error* e)
{
    if (changed != NULL) {
        *changed = 0;
    }
    if (off > f->size || n > f->size - off) {
        fail(e, off, "read of %zu bytes past the end of the file (%llu bytes)", n,
             (unsigned long long)f->size);
        return NULL;
    }
    if (off >= f->win_off && off + n <= f->win_off + f->win_len) {
        return f->buf + (off - f->win_off);
    }
    size_t want = n > FT_RFILE_WINDOW ? n : FT_RFILE_WINDOW;
    if (want > f->size - off) {
        want = (size_t)(f->size - off);
    }
    if (want > f->cap) {
        uint8_t* grown = realloc(f->buf, want);
        if (grown == NULL) {
            fail(e, off, "out of memory reading %zu bytes", want);
            return NULL;
        }
        f->buf = grown;
        f->cap = want;
    }
    f->win_len = 0;
    size_t got = 0;
    while (got < want) {
        ssize_t r = pread(f->fd, f->buf + got, want - got, (off_t)(off + got));
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            fail(e, off + got, "cannot read: %s", strerror(errno));
            return NULL;
        }
        if (r == 0) {
            break;
        }
        got += (size_t)r;
    }
    f->win_off = off;
    f->win_len = got;
    if (got < n) {
        if (changed != NULL) {
            *changed = 1;
        }
        fail(e, off + got,
             "the file changed while it was read: it ends at byte %llu, but was %llu bytes "
             "when it was opened",
             (unsigned long long)(off + got), (unsigned long long)f->size);
        return NULL;
    }
    return f->buf;
}

static uint32_t
get_u32(const uint8_t* p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

int
ft_rfile_header(ft_rfile* f, ft_header* h, ft_read_error* e)
{
    memset(h, 0, sizeof *h);
    if (f->size == 0) {
        return fail(e, 0, "empty file");
    }
    size_t n = f->size < FT_PREAMBLE_SIZE ? (size_t)f->size : FT_PREAMBLE_SIZE;
    const uint8_t* p = ft_rfile_get(f, 0, n, NULL, e);
    if (p == NULL) {
        return -1;
    }
    if (n == FT_PREAMBLE_SIZE && memcmp(p, FT_MAGIC, FT_MAGIC_SIZE) == 0) {
        /* The whole declared header, or as much of it as there is (ft_read_header says which
         * part is missing). */
        uint64_t body = get_u32(p + 12);
        uint64_t avail = f->size - FT_PREAMBLE_SIZE;
        n = FT_PREAMBLE_SIZE + (size_t)(body < avail ? body : avail);
        if ((p = ft_rfile_get(f, 0, n, NULL, e)) == NULL) {
            return -1;
        }
    }
    /* n is the whole file when the declared header is longer than it, so offsets past the
     * header's end are the file's end, as ft_read_header reports them. */
    return ft_read_header(p, n, h, e);
}

/* 1 if bytes [off, size) are all zero (the padding a preallocating writer leaves), 0 if not,
 * -1 if they cannot be read. */
static int
zeros_to_end(ft_rfile* f, uint64_t off, ft_read_error* e)
{
    while (off < f->size) {
        uint64_t left = f->size - off;
        size_t n = left < FT_RFILE_WINDOW ? (size_t)left : FT_RFILE_WINDOW;
        const uint8_t* p = ft_rfile_get(f, off, n, NULL, e);
        if (p == NULL) {
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            if (p[i] != 0) {
                return 0;
            }
        }
        off += n;
    }
    return 1;
}

int
ft_rfile_chunk(ft_rfile* f, uint64_t offset, ft_chunk_header* h, const uint8_t** payload,
               ft_read_error* e)
{
    int changed;
    if (offset >= f->size) {
        return FT_READ_END;
    }
    uint64_t left = f->size - offset;
    if (left < FT_CHUNK_HEADER_SIZE) {
        int z = zeros_to_end(f, offset, e);
        if (z < 0) {
            return FT_READ_CHANGED;
        }
        if (z == 0) {
            fail(e, offset, "file ends inside a chunk header (%llu of 32 bytes)",
                 (unsigned long long)left);
            return FT_READ_TRUNCATED;
        }
        return FT_READ_END;
    }
    const uint8_t* p = ft_rfile_get(f, offset, FT_CHUNK_HEADER_SIZE, &changed, e);
    if (p == NULL) {
        return changed ? FT_READ_CHANGED : FT_READ_CORRUPT;
    }
    memcpy(h, p, FT_CHUNK_HEADER_SIZE);
    if (h->magic != FT_CHUNK_MAGIC) {
        int z = zeros_to_end(f, offset, e);
        if (z < 0) {
            return FT_READ_CHANGED;
        }
        if (z == 1) {
            return FT_READ_END; /* zero padding after the last chunk */
        }
        fail(e, offset, "bad chunk magic 0x%08x", h->magic);
        return FT_READ_CORRUPT;
    }
    if (h->payload_size > left - FT_CHUNK_HEADER_SIZE) {
        fail(e, offset, "file ends inside a chunk (%u payload bytes declared, %llu present)",
             h->payload_size, (unsigned long long)(left - FT_CHUNK_HEADER_SIZE));
        return FT_READ_TRUNCATED;
    }
    p = ft_rfile_get(f, offset, FT_CHUNK_HEADER_SIZE + (size_t)h->payload_size, &changed, e);
    if (p == NULL) {
        return changed ? FT_READ_CHANGED : FT_READ_CORRUPT;
    }
    uLong crc = crc32(0, p + 12, FT_CHUNK_HEADER_SIZE - 12);
    crc = crc32(crc, p + FT_CHUNK_HEADER_SIZE, h->payload_size);
    if ((uint32_t)crc != h->crc32) {
        fail(e, offset, "chunk checksum mismatch (%u-byte chunk of type %u)", h->payload_size,
             h->type);
        return FT_READ_CORRUPT;
    }
    if (h->type < FT_CHUNK_EVENTS || h->type > FT_CHUNK_SAMPLES) {
        fail(e, offset, "unknown chunk type %u", h->type);
        return FT_READ_CORRUPT;
    }
    *payload = p + FT_CHUNK_HEADER_SIZE;
    return FT_READ_OK;
}

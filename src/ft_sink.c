/* ft_sink.c: the file header, chunk headers and the file sink (see ft_sink.h). */
#include "ft_sink.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

uint8_t*
ft_header_encode(const ft_file_info* info, size_t* n)
{
    size_t py_len = strlen(info->python_version);
    size_t cap = FT_PREAMBLE_SIZE + 128 + info->command_line_size + py_len + 40;
    uint8_t* buf = malloc(cap);
    if (buf == NULL) {
        return NULL;
    }
    uint8_t* body = buf + FT_PREAMBLE_SIZE;
    uint8_t* p = body;
    p = ft_put_u32(p, info->python_version_hex);
    p = ft_put_u32(p, info->pid);
    p = ft_put_u32(p, info->mode);
    p = ft_put_u32(p, info->flags);
    p = ft_put_u32(p, info->clock_kind);
    p = ft_put_u32(p, info->chunk_size);
    p = ft_put_u64(p, info->buffer_size);
    p = ft_put_u64(p, info->start.tick);
    p = ft_put_u64(p, info->start.mono_ns);
    p = ft_put_u64(p, info->start.wall_ns);
    memcpy(p, &info->tick_hz, 8);
    p += 8;
    p = ft_put_str(p, info->command_line, info->command_line_size);
    p = ft_put_str(p, info->python_version, py_len);
    p = ft_put_varint(p, info->series_index);
    p = ft_put_u64(p, info->series_id);
    *p++ = info->origin;
    uint32_t body_size = (uint32_t)(p - body);
    memcpy(buf, FT_MAGIC, FT_MAGIC_SIZE);
    ft_put_u32(buf + 8, FT_FORMAT_VERSION);
    ft_put_u32(buf + 12, body_size);
    ft_put_u32(buf + 16, (uint32_t)crc32(0, body, body_size));
    *n = FT_PREAMBLE_SIZE + body_size;
    return buf;
}

static int
write_all(int fd, const uint8_t* buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

int
ft_file_write_header(int fd, const ft_file_info* info, uint64_t* n)
{
    size_t size;
    uint8_t* buf = ft_header_encode(info, &size);
    if (buf == NULL) {
        return ENOMEM;
    }
    int err = write_all(fd, buf, size);
    free(buf);
    *n = size;
    return err;
}

void
ft_chunk_fill(ft_chunk_header* h, uint8_t type, uint8_t flags, uint32_t thread,
              uint32_t records, uint64_t base_tick, const uint8_t* payload, uint32_t size)
{
    h->magic = FT_CHUNK_MAGIC;
    h->payload_size = size;
    h->type = type;
    h->flags = flags;
    h->reserved = 0;
    h->thread = thread;
    h->records = records;
    h->base_tick = base_tick;
    uLong crc = crc32(0, (const Bytef*)h + 12, FT_CHUNK_HEADER_SIZE - 12);
    h->crc32 = (uint32_t)crc32(crc, payload, size);
}

void
ft_sink_small_chunk(ft_sink* s, uint8_t type, const uint8_t* payload, uint32_t size)
{
    ft_chunk_header h;
    ft_chunk_fill(&h, type, 0, 0, 0, 0, payload, size);
    ft_sink_chunk(s, &h, payload);
    ft_sink_flush(s);
}

/* ---- file sink --------------------------------------------------------------------------- */

#define FILE_BATCH 128 /* chunks per writev (two iovecs each) */

typedef struct {
    ft_sink base;
    int fd;
    int n;
    ft_chunk_header headers[FILE_BATCH];
    struct iovec iov[2 * FILE_BATCH];
} file_sink;

/* Writes the batch; keeps error_offset at the end of the last chunk written whole. */
static void
file_flush(ft_sink* s)
{
    file_sink* f = (file_sink*)s;
    struct iovec* iov = f->iov;
    int n = 2 * f->n;
    f->n = 0;
    uint64_t chunk_bytes = 0;
    int done = 0;
    while (n > 0 && s->error == 0) {
        ssize_t w = writev(f->fd, iov, n); /* n <= 2 * FILE_BATCH, below IOV_MAX (1024) */
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            s->error = errno;
            s->error_offset = s->bytes - chunk_bytes;
            return;
        }
        s->bytes += (uint64_t)w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            chunk_bytes += iov->iov_len;
            if (++done % 2 == 0) {
                chunk_bytes = 0;
            }
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t*)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
            chunk_bytes += (uint64_t)w;
        }
    }
}

static int
file_chunk(ft_sink* s, const ft_chunk_header* h, const uint8_t* payload)
{
    file_sink* f = (file_sink*)s;
    if (s->error != 0) {
        return FT_SINK_TAKEN; /* lost: the error is reported at stop */
    }
    if (f->n == FILE_BATCH) {
        file_flush(s);
    }
    f->headers[f->n] = *h;
    f->iov[2 * f->n] = (struct iovec){&f->headers[f->n], FT_CHUNK_HEADER_SIZE};
    f->iov[2 * f->n + 1] = (struct iovec){(void*)payload, h->payload_size};
    f->n++;
    s->chunks++;
    return FT_SINK_TAKEN;
}

void
ft_file_sink_finish(ft_sink* s, ft_trailer* tr)
{
    ft_sink_small_chunk(s, FT_CHUNK_TRAILER, (const uint8_t*)tr, sizeof *tr);
}

static void
file_destroy(ft_sink* s)
{
    free(s);
}

static const ft_sink_ops file_ops = {file_chunk, file_flush, ft_file_sink_finish, file_destroy};

ft_sink*
ft_file_sink_new(int fd, uint64_t offset)
{
    file_sink* f = calloc(1, sizeof *f);
    if (f == NULL) {
        return NULL;
    }
    f->base.ops = &file_ops;
    f->base.bytes = offset;
    f->fd = fd;
    return &f->base;
}

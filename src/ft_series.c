/* ft_series.c: the rotating series of files (see ft_series.h). */
#include "ft_series.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ft_defs.h"

#define RETRY_NS 1000000000ull /* after a failed file, the next one is tried this often */
/* A file ends with a CLOCK and a TRAILER chunk: room is kept for them under max_bytes. */
#define FT_TAIL_BYTES (2 * FT_CHUNK_HEADER_SIZE + 24 + sizeof(ft_trailer))

typedef struct {
    ft_sink base;
    ft_series_config cfg; /* stem and suffix owned */
    ft_file_info info;    /* strings owned */
    ft_sink* file;        /* the current file, or NULL while broken */
    int fd;
    uint64_t index;
    uint64_t file_start_ns;
    uint64_t file_events;
    uint64_t file_chunks; /* events and samples chunks in the current file */
    uint64_t file_bytes;  /* handed to the current file (its sink may not have written all) */
    uint64_t defs_seen;   /* bytes of the definitions table handed over so far */
    uint64_t retry_at_ns;
} series;

int
ft_series_path(const char* stem, const char* suffix, uint64_t index, char* buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s.%04llu%s", stem, (unsigned long long)index, suffix);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* Notes a failure the series goes past. */
static void
skip_error(series* r, int err, uint64_t offset)
{
    if (r->base.skipped_error == 0) {
        r->base.skipped_error = err;
        r->base.skipped_error_index = r->index;
        r->base.skipped_error_offset = offset;
    }
    r->base.skipped_errors++;
}

/* Ends the current file: CLOCK, TRAILER with its own counts, close. */
static void
end_file(series* r, ft_trailer* final)
{
    if (r->file == NULL) {
        return;
    }
    ft_sink* f = r->file;
    ft_clock_sync now;
    ft_clock_sample(&now);
    uint8_t clock[24];
    ft_put_u64(ft_put_u64(ft_put_u64(clock, now.tick), now.mono_ns), now.wall_ns);
    ft_sink_small_chunk(f, FT_CHUNK_CLOCK, clock, sizeof clock);
    ft_trailer tr;
    if (final != NULL) {
        tr = *final; /* stop(): the capture's drops are counted once, in the last file */
    }
    else {
        memset(&tr, 0, sizeof tr);
        r->cfg.counts(&tr);
        tr.dropped = 0;
        tr.stop_tick = now.tick;
        tr.stop_mono_ns = now.mono_ns;
        tr.stop_wall_ns = now.wall_ns;
    }
    tr.events = r->file_events;
    tr.error = (uint32_t)f->error;
    ft_file_sink_finish(f, &tr);
    ft_sink_flush(f);
    if (f->error != 0) {
        skip_error(r, f->error, f->error_offset);
    }
    r->base.bytes += f->bytes;
    ft_sink_destroy(f);
    close(r->fd);
    r->file = NULL;
    r->fd = -1;
}

/* Starts file index + 1.  On failure the series is broken until the next try. */
static void
next_file(series* r)
{
    char path[PATH_MAX];
    uint64_t index = r->index + 1;
    ft_clock_sync now;
    ft_clock_sample(&now);
    r->retry_at_ns = now.mono_ns + RETRY_NS;
    if (ft_series_path(r->cfg.stem, r->cfg.suffix, index, path, sizeof path) < 0) {
        r->index = index;
        skip_error(r, ENAMETOOLONG, 0);
        return;
    }
    r->index = index;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        skip_error(r, errno, 0);
        return;
    }
    ft_file_info info = r->info;
    info.start = now;
    info.series_index = index;
    uint64_t header_size = 0;
    int err = ft_file_write_header(fd, &info, &header_size);
    ft_sink* f = err == 0 ? ft_file_sink_new(fd, header_size) : NULL;
    if (f == NULL) {
        skip_error(r, err ? err : ENOMEM, 0);
        close(fd);
        return;
    }
    /* The definitions handed over so far (the table is append-only: a prefix is stable). */
    size_t n = 0, end = 0;
    uint8_t* defs = ft_defs_copy(0, &n, &end);
    if (n > r->defs_seen) {
        n = r->defs_seen;
    }
    if (n > 0) {
        ft_sink_small_chunk(f, FT_CHUNK_DEFS, defs, (uint32_t)n);
    }
    free(defs);
    r->file = f;
    r->fd = fd;
    r->file_bytes = header_size + (n > 0 ? FT_CHUNK_HEADER_SIZE + n : 0);
    r->file_start_ns = now.mono_ns;
    r->file_events = 0;
    r->file_chunks = 0;
    r->base.last_index = index;
    if (r->cfg.keep > 0 && index > r->cfg.keep) {
        if (ft_series_path(r->cfg.stem, r->cfg.suffix, index - r->cfg.keep, path,
                           sizeof path) == 0) {
            unlink(path); /* gone already (removed by hand): fine */
        }
        if (r->base.first_index < index - r->cfg.keep + 1) {
            r->base.first_index = index - r->cfg.keep + 1;
        }
    }
}

static int
due(series* r, const ft_chunk_header* h)
{
    if (r->file_chunks == 0) {
        return 0; /* a file holds at least one chunk of events */
    }
    if (r->cfg.max_bytes > 0 &&
        r->file_bytes + FT_CHUNK_HEADER_SIZE + h->payload_size + FT_TAIL_BYTES >
            r->cfg.max_bytes) {
        return 1;
    }
    return r->cfg.max_seconds > 0 &&
           (double)(ft_clock_mono_ns() - r->file_start_ns) >= r->cfg.max_seconds * 1e9;
}

static int
series_chunk(ft_sink* s, const ft_chunk_header* h, const uint8_t* payload)
{
    series* r = (series*)s;
    int data = h->type == FT_CHUNK_EVENTS || h->type == FT_CHUNK_SAMPLES;
    if (h->type == FT_CHUNK_DEFS) {
        r->defs_seen += h->payload_size; /* in the table whether or not a file takes it */
    }
    if (r->file != NULL && data && due(r, h)) {
        end_file(r, NULL);
        next_file(r);
    }
    else if (r->file == NULL && ft_clock_mono_ns() >= r->retry_at_ns) {
        next_file(r);
        if (h->type == FT_CHUNK_DEFS && r->file != NULL) {
            return FT_SINK_TAKEN; /* the new file's table holds it already */
        }
    }
    if (r->file == NULL) {
        if (data) {
            r->base.lost_chunks++;
        }
        return FT_SINK_TAKEN;
    }
    if (data) {
        r->file_events += h->records;
        r->file_chunks++;
    }
    s->chunks++;
    r->file_bytes += FT_CHUNK_HEADER_SIZE + h->payload_size;
    return ft_sink_chunk(r->file, h, payload);
}

static void
series_flush(ft_sink* s)
{
    series* r = (series*)s;
    if (r->file == NULL) {
        return;
    }
    ft_sink_flush(r->file);
    if (r->file->error != 0) {
        /* This file stops where it failed (what is before is readable); a later one will
         * take the chunks to come. */
        skip_error(r, r->file->error, r->file->error_offset);
        r->base.bytes += r->file->bytes;
        ft_sink_destroy(r->file);
        close(r->fd);
        r->file = NULL;
        r->fd = -1;
        r->retry_at_ns = ft_clock_mono_ns() + RETRY_NS;
    }
}

static void
series_finish(ft_sink* s, ft_trailer* tr)
{
    series* r = (series*)s;
    end_file(r, tr);
}

static void
series_destroy(ft_sink* s)
{
    series* r = (series*)s;
    if (r->file != NULL) {
        ft_sink_destroy(r->file);
        close(r->fd);
    }
    free((void*)r->cfg.stem);
    free((void*)r->cfg.suffix);
    free((void*)r->info.command_line);
    free((void*)r->info.python_version);
    free(r);
}

void
ft_series_release_fd(ft_sink* s)
{
    series* r = (series*)s;
    if (r->file != NULL) {
        ft_sink_destroy(r->file);
        r->file = NULL;
    }
    r->fd = -1;
}

static const ft_sink_ops series_ops = {series_chunk, series_flush, series_finish,
                                       series_destroy};

ft_sink*
ft_series_new(const ft_series_config* cfg, const ft_file_info* info, int fd,
              uint64_t header_size)
{
    series* r = calloc(1, sizeof *r);
    if (r == NULL) {
        return NULL;
    }
    r->base.ops = &series_ops;
    r->cfg = *cfg;
    r->info = *info;
    r->cfg.stem = strdup(cfg->stem);
    r->cfg.suffix = strdup(cfg->suffix);
    char* cl = malloc(info->command_line_size + 1);
    r->info.python_version = strdup(info->python_version);
    r->file = ft_file_sink_new(fd, header_size);
    if (r->cfg.stem == NULL || r->cfg.suffix == NULL || cl == NULL ||
        r->info.python_version == NULL || r->file == NULL) {
        free(cl);
        ft_sink_destroy(r->file);
        r->file = NULL;
        series_destroy(&r->base);
        return NULL;
    }
    memcpy(cl, info->command_line, info->command_line_size);
    r->info.command_line = cl;
    r->fd = fd;
    r->file_bytes = header_size;
    r->index = 1;
    r->base.first_index = r->base.last_index = 1;
    r->file_start_ns = info->start.mono_ns;
    return &r->base;
}

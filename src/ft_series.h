/* ft_series.h: a rotating series of files (start(path, max_bytes=, max_seconds=, keep=)).
 *
 * The writer drains into the current file until it holds max_bytes or has run max_seconds;
 * then that file gets its CLOCK and TRAILER and the next one begins with its own header
 * (series_index k, the same series_id), the whole definitions table, and chunks that open
 * with their threads' stacks: every file decodes on its own, and the series loads as one
 * trace.  Files are `<stem>.<k><suffix>` (k from 1, four digits at least); with keep=N the
 * file N places back is removed as each new one starts.
 *
 * A file that cannot be written (a full disk) is closed where it failed; the chunks that come
 * meanwhile are lost (counted), and the next file is tried once a second.  Recording goes on;
 * stop() reports it.
 */
#ifndef FT_SERIES_H
#define FT_SERIES_H

#include <stdint.h>

#include "ft_sink.h"

typedef struct {
    const char* stem;   /* the path up to the index: "out/trace" */
    const char* suffix; /* after it: ".ftrace" */
    uint64_t max_bytes; /* 0: no size limit */
    double max_seconds; /* 0: no time limit */
    uint32_t keep;      /* 0: keep every file */
    void (*counts)(ft_trailer* tr); /* threads, functions, lost threads for each trailer */
} ft_series_config;

/* The first file (index 1) is `fd`, whose header (`info`, origin SERIES, index 1) is written
 * (header_size bytes); the sink closes it and every later one.  NULL out of memory. */
ft_sink* ft_series_new(const ft_series_config* cfg, const ft_file_info* info, int fd,
                       uint64_t header_size);

/* start() failed after ft_series_new: the first file's descriptor goes back to the caller
 * (destroying the sink then leaves it open). */
void ft_series_release_fd(ft_sink* s);

/* The path of file `index` (into buf, of cap bytes); 0, or -1 if it does not fit. */
int ft_series_path(const char* stem, const char* suffix, uint64_t index, char* buf,
                   size_t cap);

#endif /* FT_SERIES_H */

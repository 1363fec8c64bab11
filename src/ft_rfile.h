/* ft_rfile.h: where the reader's bytes come from.
 *
 * The reader used to map the file.  A mapped file that shrinks under its reader (another
 * `fasttrace run -o same.ftrace`, a user's truncate) turns the next access into SIGBUS, which
 * kills the process.  So every read is a pread into a buffer the reader owns: a file that
 * changes gives a short read or a checksum mismatch, which become errors with an offset, and
 * memory stays bounded by the largest chunk rather than the file.
 *
 * A cursor is a read-ahead window over one file descriptor; several cursors may share the
 * descriptor (pread has no file position), so each iterator has its own.  No Python calls.
 */
#ifndef FT_RFILE_H
#define FT_RFILE_H

#include <stddef.h>
#include <stdint.h>

#include "ft_reader.h"

typedef struct {
    int fd;
    uint64_t size;     /* the file's size when it was opened: nothing beyond it is read */
    uint8_t* buf;
    size_t cap;
    uint64_t win_off;  /* file offset of buf[0] */
    size_t win_len;    /* valid bytes in buf */
} ft_rfile;

/* A cursor over `fd` (not owned) whose size was `size` at open. */
void ft_rfile_init(ft_rfile* f, int fd, uint64_t size);
void ft_rfile_free(ft_rfile* f);

/* Bytes [off, off + n) of the file, valid until the next call on this cursor; NULL with `e`
 * filled when they lie beyond the size at open, cannot be read (the file shrank, an I/O
 * error) or do not fit in memory.  `*changed` (if given) is set to 1 for a short read. */
const uint8_t* ft_rfile_get(ft_rfile* f, uint64_t off, size_t n, int* changed,
                            ft_read_error* e);

/* Reads and checks the header (FORMAT.md §1-2).  Strings in `h` point into the cursor's
 * window: copy them before the next read.  Returns 0, or -1 with `e` filled. */
int ft_rfile_header(ft_rfile* f, ft_header* h, ft_read_error* e);

/* Reads the chunk at `offset` and checks it (FORMAT.md §7).  Returns an ft_chunk_status;
 * FT_READ_CHANGED when the file is now shorter than it was at open.  On FT_READ_OK, *payload
 * is valid until the next call on this cursor. */
enum { FT_READ_CHANGED = -3 };
int ft_rfile_chunk(ft_rfile* f, uint64_t offset, ft_chunk_header* h, const uint8_t** payload,
                   ft_read_error* e);

#endif /* FT_RFILE_H */

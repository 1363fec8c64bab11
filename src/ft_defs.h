/* ft_defs.h: the capture's definitions table (functions, threads, sampled stacks: FORMAT.md
 * section 5), kept whole from start to stop.
 *
 * It is an append-only log of def records in their file encoding.  Producers (hooks' slow
 * paths, the sampler, start/stop) append under its lock; the writer thread copies out what it
 * has not written yet.  Because nothing is dropped once written, any sink can write the table
 * again in full at any point: a flight-recorder dump and each file of a rotated series open
 * with it, so that they decode on their own.  Its size grows with the distinct functions,
 * threads and sampled stacks of the program, not with time.
 */
#ifndef FT_DEFS_H
#define FT_DEFS_H

#include <stddef.h>
#include <stdint.h>

/* Empties the table (start()).  The previous capture's table, if any, is freed. */
void ft_defs_reset(void);
/* Frees the table (after stop()). */
void ft_defs_free(void);
/* In a forked child: forget the table without touching its lock (a thread that is gone may
 * hold it).  The memory is leaked on purpose. */
void ft_defs_abandon(void);

/* Returns room for `size` bytes at the end of the table, with the lock taken; ft_defs_end
 * commits the bytes up to `end` and releases it.  NULL means out of memory (no lock held):
 * the def is lost, and a reader reports the id it lacks. */
uint8_t* ft_defs_begin(size_t size);
void ft_defs_end(uint8_t* end);

/* Bytes in the table so far. */
size_t ft_defs_size(void);
/* A malloc'd copy of the table's bytes [from, current end); *n gets their count and *end the
 * end offset to pass as `from` next time.  NULL when there is nothing new (*n = 0) or out of
 * memory (*n = 0, *end = from: tried again next time). */
uint8_t* ft_defs_copy(size_t from, size_t* n, size_t* end);

/* ---- the records ---- */

typedef struct {
    const char* s;
    size_t n;
} ft_def_str;

/* FUNCTION: strs are name, qualname, filename, module (UTF-8).  0, or -1 out of memory. */
int ft_defs_put_function(uint32_t fid, uint8_t flags, int lineno, const ft_def_str strs[4]);
void ft_defs_put_thread(uint32_t id, uint64_t ident, uint64_t native_id, const char* name);
void ft_defs_put_thread_name(uint32_t id, const char* name);
void ft_defs_put_hook_lost(uint32_t thread, uint64_t tick, const char* what);
/* SCOPE: the capture's scope as JSON (UTF-8, n bytes). */
void ft_defs_put_scope(const char* json, size_t n);

#endif /* FT_DEFS_H */

/* ft_fold.h: folding decoded events (or samples) into per-thread call trees and timeline
 * slices with a level-of-detail pyramid (docs/viewer-design.md).  Pure C, no Python: the
 * reader decodes a chunk into ft_events, ft_fold_events() folds them.
 *
 * A call tree is a trie of the stacks seen: node 0 is the thread's root (no frame open);
 * a node's self time is the time its stack was open as the innermost one.  Slices are the
 * calls themselves (start, end, node), per depth in start order; level k of the pyramid
 * merges runs of slices shorter than width(k) into one entry, so that a range query at a
 * resolution of r ns per pixel returns a few entries per pixel and depth at most.
 *
 * The pyramid is built as the events stream by (never the raw slices first), and keeps only
 * the coarsest levels that fit a memory budget.  A query finer than the finest level kept
 * decodes its range from the file again (ft_replay), starting at a chunk boundary, where the
 * fold noted the reader's state and the open frames' start and end times. */
#ifndef FT_FOLD_H
#define FT_FOLD_H

#include <stddef.h>
#include <stdint.h>

#include "ft_reader.h"

typedef struct {
    int64_t start;
    int64_t end;
    uint32_t node;  /* a node of the thread's tree (lane 0: a state, or events dropped) */
    uint32_t count; /* calls this entry stands for: 1, or n > 1 for a merged run */
} ft_slice;

typedef struct {
    ft_slice* v;
    size_t n, cap;
} ft_slice_vec;

enum { FT_FOLD_STATES = 3 }; /* sampled: running, waiting for the GIL, waiting in a call */
enum { FT_FOLD_LEVELS = 24 }; /* level k >= 1 merges below 1 us * 4^(k-1); 4^23 us: ~2 years */
enum { FT_FOLD_TOO_MANY = -2 }; /* a query's answer would exceed its limit */

/* Frames open on a thread: nodes, start times and (for the fold) the first chunk boundary
 * each spans. */
typedef struct {
    uint32_t* node;
    int64_t* start;
    size_t* bnd;
    uint8_t* counted; /* the fold counted this frame's call (min_ns may uncount it) */
    size_t top, cap;
} ft_frames;

/* A run of short entries being merged at one level and depth. */
typedef struct {
    ft_slice run;
    int64_t longest;
    int have;
} ft_merge;

/* One level of a thread's pyramid: per depth, the entries kept (if the level is kept) and
 * the run being merged. */
typedef struct {
    ft_slice_vec* lanes;
    ft_merge* merges;
} ft_level;

/* Where a thread's chunk began (trace mode), so that a query can decode from there again:
 * the reader's state (`fids`, ...) and the fold's open frames with their start and end. */
typedef struct {
    size_t at;        /* offset of this boundary's frames in the flat arrays */
    uint32_t top;     /* the fold's open frames */
    uint32_t d_depth; /* the decoder's stack */
    uint64_t d_last_tick, d_unmatched;
    uint8_t d_started, d_broken;
} ft_boundary;

typedef struct {
    /* the call tree, node 0 = root */
    int64_t* parent;
    int64_t* fid;
    int64_t* depth;
    int64_t* self_ns;
    int64_t* calls;
    int64_t* state_ns[FT_FOLD_STATES]; /* sampled only: self_ns split by state */
    size_t n, cap;
    uint64_t* hkeys; /* (parent << 32 | fid) -> node, open addressing; UINT64_MAX = empty */
    uint32_t* hvals;
    size_t hcap;
    ft_frames open; /* the stack open now */
    int64_t first_ns, last_ns;
    int seen;
    int64_t gap_ns;
    uint64_t gaps, dropped;
    ft_slice_vec gap_list; /* start, end, node = events dropped (min'd to 2^32-1) */
    /* sampled: stack id -> leaf node + 1 (0: not walked yet) */
    uint32_t* leaf;
    size_t n_leaf;
    /* the pyramid: lane 0 holds a sampled thread's states, lanes d >= 1 depth d's slices */
    ft_level levels[FT_FOLD_LEVELS];
    size_t n_depths;
    int64_t max_depth;
    uint64_t n_slices;
    /* chunk boundaries (trace mode) */
    ft_boundary* bnd;
    size_t n_bnd, bnd_cap;
    uint32_t* b_node; /* flat: the open frames of each boundary, outermost first */
    int64_t* b_start;
    int64_t* b_end;
    uint32_t* b_fid; /* the decoder's stack */
    size_t b_n, b_cap, bf_n, bf_cap;
} ft_fold_thread;

typedef struct {
    ft_fold_thread* threads; /* index = thread id (or slot) */
    size_t n_threads;
    int slices;  /* record slices */
    int sampled; /* state_ns arrays */
    uint64_t start_tick;
    double ns_per_tick;
    int64_t w0, w1; /* time window: only time in [w0, w1] counts (INT64_MIN/MAX: all) */
    /* `convert --min-duration` for the trees (collapsed, pprof): a call shorter than this
     * (its return's time minus its call's, as the trace shows them) is taken out, its time
     * going to its caller's self time and its call uncounted.  0: none.  Not with slices. */
    int64_t min_ns;
    uint64_t events;
    size_t finest;   /* levels below this one are not kept: queries finer decode again */
    size_t kept;     /* bytes of pyramid entries kept */
    size_t budget;   /* ... at most (0: no limit) */
} ft_fold;

/* Level k >= 1 merges runs of entries shorter than this (ns); level 0 is the raw slices. */
int64_t ft_fold_level_width(size_t k);

/* Returns 0, or -1 (ENOMEM). budget: bytes of pyramid to keep at most (0: all). */
int ft_fold_init(ft_fold* f, size_t n_threads, int slices, int sampled, uint64_t start_tick,
                 double ns_per_tick, int64_t w0, int64_t w1, size_t budget);
void ft_fold_free(ft_fold* f);

/* Folds one thread's decoded events, in order.  Returns 0, or -1 (ENOMEM). */
int ft_fold_events(ft_fold* f, uint32_t tid, const ft_event* ev, size_t n);

/* Notes that thread tid's next chunk starts now, with the reader in state `d`; returns the
 * boundary's index, or -1 (ENOMEM). */
int64_t ft_fold_boundary(ft_fold* f, uint32_t tid, const ft_thread_decoder* d);

/* Drops the finest kept levels while the pyramid is over budget. */
void ft_fold_enforce_budget(ft_fold* f);

/* Folds one sample: `fids` its stack root first (fid 0 below the root: the truncation
 * marker), `stack` its stack id (the leaf is cached per id), `state` 0 running, 1 waiting
 * for the GIL, 2 waiting in a call.  Returns 0, or -1 (ENOMEM). */
int ft_fold_sample(ft_fold* f, uint32_t tid, int64_t ts, uint64_t stack, const int64_t* fids,
                   size_t n, int64_t weight_ns, int state);

/* The node for `fid` under `parent` in thread `tid`'s tree, created if missing; -1 on ENOMEM
 * or a bad parent. */
int64_t ft_fold_child(ft_fold* f, uint32_t tid, int64_t parent, int64_t fid);

/* Timeline slices fed from outside (sampled traces): opens `node` at ts / closes the innermost
 * open slice at ts; states lane entries.  Return 0, or -1 (ENOMEM). */
int ft_fold_slice_open(ft_fold* f, uint32_t tid, uint32_t node, int64_t ts);
int ft_fold_slice_close(ft_fold* f, uint32_t tid, int64_t ts);
int ft_fold_add_state(ft_fold* f, uint32_t tid, int64_t start, int64_t end, int state);

/* Per-function totals of thread th, added into arrays indexed by function id (n_fids of
 * them): calls (sampled: samples with the function on the stack), self time, total time
 * (its outermost frames' inclusive time); seen[fid] = 1 for every function with a node.
 * Returns 0, or -1 (ENOMEM). */
int ft_fold_functions(const ft_fold* f, const ft_fold_thread* th, int64_t* calls,
                      int64_t* self_ns, int64_t* total_ns, uint8_t* seen, size_t n_fids);

/* After the last event: flushes the pyramid's runs.  Returns 0, or -1 (ENOMEM). */
int ft_fold_finish(ft_fold* f);

/* The entries of `th` that overlap [t0, t1] at resolution `res` ns, appended to `out`:
 * depths >= 1 (slices), or the states lane alone.  Returns 0; 1 if that resolution is finer
 * than the finest level kept (decode again: ft_replay); -1 (ENOMEM); FT_FOLD_TOO_MANY if
 * there are more than `limit` of them (0: no limit). */
int ft_fold_query(const ft_fold* f, const ft_fold_thread* th, int64_t t0, int64_t t1,
                  int64_t res, int states, size_t limit, ft_slice_vec* out);

/* ---- decoding a range again (queries finer than the kept pyramid) ---- */

typedef struct {
    ft_frames open;
    ft_slice_vec* lanes; /* per depth: the entries of `level` */
    ft_merge* merges;    /* [j * n_depths + d]: level j's run at depth d, j = 1..level */
    size_t n_depths;
    size_t level;
    size_t limit, kept; /* entries at most (0: no limit), and so far */
    int64_t t0, t1, last;
} ft_replay;

/* Window folds from a boundary: thread tid of fold `w` (a window fold) starts as the fold
 * `th` came from stood at its boundary b, at_ns the start of b's chunk: the frames open there
 * and, in `d` (zeroed), the reader's state.  The window fold then needs only the chunks from
 * b on.  Returns 0, or -1 (ENOMEM). */
int ft_fold_resume(ft_fold* w, uint32_t tid, const ft_fold_thread* th, size_t b, int64_t at_ns,
                   ft_thread_decoder* d);

/* The level a query at res ns per pixel reads: the coarsest whose width is at most res. */
size_t ft_fold_level_for(int64_t res);

/* Starts a replay of thread th from boundary b, giving the entries of `level` (merged as the
 * pyramid merges them) over [t0, t1]: `d` (zeroed) becomes the reader's state there.
 * Returns 0, or -1 (ENOMEM). */
int ft_replay_begin(ft_replay* r, const ft_fold_thread* th, size_t b, ft_thread_decoder* d,
                    int64_t t0, int64_t t1, size_t level, size_t limit);
/* Before decoding boundary b's chunk with `d`: a discontinuity the fold met there breaks `d`
 * too. */
void ft_replay_enter(const ft_fold_thread* th, size_t b, ft_thread_decoder* d);
/* The events of the next chunk, as decoded with `d`.  Returns 0, -1 (ENOMEM) or
 * FT_FOLD_TOO_MANY (over the limit; so can ft_replay_end). */
int ft_replay_events(ft_replay* r, const ft_fold* f, const ft_fold_thread* th,
                     const ft_event* ev, size_t n);
/* Ends the replay at boundary b (the next chunk's, or the thread's last): frames still open
 * end where the fold saw them end.  Appends the entries to `out`. */
int ft_replay_end(ft_replay* r, const ft_fold_thread* th, size_t b, ft_slice_vec* out);
void ft_replay_free(ft_replay* r);

void ft_slice_vec_free(ft_slice_vec* v);

#endif /* FT_FOLD_H */

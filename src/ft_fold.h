/* ft_fold.h: folding decoded events (or samples) into per-thread call trees and timeline
 * slices with a level-of-detail pyramid (docs/viewer-design.md).  Pure C, no Python: the
 * reader decodes a chunk into ft_events, ft_fold_events() folds them.
 *
 * A call tree is a trie of the stacks seen: node 0 is the thread's root (no frame open);
 * a node's self time is the time its stack was open as the innermost one.  Slices are the
 * calls themselves (start, end, node), per depth in start order; level k of the pyramid
 * merges runs of slices shorter than width(k) into one entry, so that a range query at a
 * resolution of r ns per pixel returns a few entries per pixel and depth at most. */
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
    /* the stack open now: nodes and their start times (slices) */
    uint32_t* open;
    int64_t* open_ts;
    size_t top, open_cap;
    int64_t first_ns, last_ns;
    int seen;
    int64_t gap_ns;
    uint64_t gaps, dropped;
    /* sampled: stack id -> leaf node + 1 (0: not walked yet) */
    uint32_t* leaf;
    size_t n_leaf;
    /* slices: levels[k][d], d >= 1 the depth; lane d = 0 holds a sampled trace's states, or a
     * traced one's gaps (start, end, node = events dropped).  Level 0 is raw. */
    ft_slice_vec** levels;
    size_t n_levels;
    size_t n_depths; /* depths allocated in every level */
    int64_t max_depth;
    uint64_t n_slices;
} ft_fold_thread;

typedef struct {
    ft_fold_thread* threads; /* index = thread id */
    size_t n_threads;
    int slices;  /* record slices */
    int sampled; /* state_ns arrays */
    uint64_t start_tick;
    double ns_per_tick;
    int64_t w0, w1; /* time window: only time in [w0, w1] counts (INT64_MIN/MAX: all) */
    uint64_t events;
} ft_fold;

/* Level k >= 1 merges runs of entries shorter than this (ns); level 0 is the raw slices. */
int64_t ft_fold_level_width(size_t k);

/* Returns 0, or -1 (ENOMEM). */
int ft_fold_init(ft_fold* f, size_t n_threads, int slices, int sampled, uint64_t start_tick,
                 double ns_per_tick, int64_t w0, int64_t w1);
void ft_fold_free(ft_fold* f);

/* Folds one thread's decoded events, in order.  Returns 0, or -1 (ENOMEM). */
int ft_fold_events(ft_fold* f, uint32_t tid, const ft_event* ev, size_t n);

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

/* After the last event: builds every thread's pyramid.  Returns 0, or -1 (ENOMEM). */
int ft_fold_finish(ft_fold* f);

/* The entries of `th` that overlap [t0, t1] at resolution `res` ns, appended to `out`:
 * depths >= 1 (slices), or the states lane alone.  Returns 0, or -1 (ENOMEM). */
int ft_fold_query(const ft_fold_thread* th, int64_t t0, int64_t t1, int64_t res, int states,
                  ft_slice_vec* out);

void ft_slice_vec_free(ft_slice_vec* v);

#endif /* FT_FOLD_H */

/* ft_fold.c: call trees and timeline slices from decoded events (see ft_fold.h). */
#include "ft_fold.h"

#include <stdlib.h>
#include <string.h>

#define EMPTY_KEY UINT64_MAX
#define FIRST_WIDTH 1000 /* ns: level 1 merges runs of sub-microsecond calls */
#define WIDTH_STEP 4     /* each level's width is this many times the one below */
#define MAX_LEVELS 24    /* 1 us * 4^23: about 2 years */
#define MAX_THREAD_ID (1u << 20)

int64_t
ft_fold_level_width(size_t k)
{
    if (k == 0) {
        return 0;
    }
    int64_t w = FIRST_WIDTH;
    while (--k) {
        w *= WIDTH_STEP;
    }
    return w;
}

static int
grow(void** p, size_t* cap, size_t need, size_t size)
{
    if (need <= *cap) {
        return 0;
    }
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        n *= 2;
    }
    void* q = realloc(*p, n * size);
    if (q == NULL) {
        return -1;
    }
    *p = q;
    *cap = n;
    return 0;
}

static int
vec_push(ft_slice_vec* v, int64_t start, int64_t end, uint32_t node, uint32_t count)
{
    if (v->n == v->cap && grow((void**)&v->v, &v->cap, v->n + 1, sizeof(ft_slice)) < 0) {
        return -1;
    }
    ft_slice* s = &v->v[v->n++];
    s->start = start;
    s->end = end;
    s->node = node;
    s->count = count;
    return 0;
}

void
ft_slice_vec_free(ft_slice_vec* v)
{
    free(v->v);
    v->v = NULL;
    v->n = v->cap = 0;
}

/* ---- the call tree ---- */

static inline uint64_t
hash_key(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return k;
}

static int
rehash(ft_fold_thread* th, size_t cap)
{
    uint64_t* keys = malloc(cap * sizeof *keys);
    uint32_t* vals = malloc(cap * sizeof *vals);
    if (keys == NULL || vals == NULL) {
        free(keys);
        free(vals);
        return -1;
    }
    memset(keys, 0xFF, cap * sizeof *keys);
    for (size_t i = 0; i < th->hcap; i++) {
        if (th->hkeys[i] != EMPTY_KEY) {
            size_t j = hash_key(th->hkeys[i]) & (cap - 1);
            while (keys[j] != EMPTY_KEY) {
                j = (j + 1) & (cap - 1);
            }
            keys[j] = th->hkeys[i];
            vals[j] = th->hvals[i];
        }
    }
    free(th->hkeys);
    free(th->hvals);
    th->hkeys = keys;
    th->hvals = vals;
    th->hcap = cap;
    return 0;
}

static int
new_node(ft_fold_thread* th, int sampled, int64_t parent, int64_t fid, int64_t depth)
{
    if (th->n == th->cap) {
        size_t cap = th->cap ? th->cap * 2 : 64;
        int64_t** arrays[] = {&th->parent, &th->fid, &th->depth, &th->self_ns, &th->calls,
                              &th->state_ns[0], &th->state_ns[1], &th->state_ns[2]};
        size_t n_arrays = sampled ? 8 : 5;
        for (size_t i = 0; i < n_arrays; i++) {
            int64_t* q = realloc(*arrays[i], cap * sizeof(int64_t));
            if (q == NULL) {
                return -1;
            }
            *arrays[i] = q;
        }
        th->cap = cap;
    }
    size_t n = th->n++;
    th->parent[n] = parent;
    th->fid[n] = fid;
    th->depth[n] = depth;
    th->self_ns[n] = th->calls[n] = 0;
    if (sampled) {
        th->state_ns[0][n] = th->state_ns[1][n] = th->state_ns[2][n] = 0;
    }
    if (depth > th->max_depth) {
        th->max_depth = depth;
    }
    return 0;
}

/* The child of `parent` for `fid`, made if missing: one hash probe per call. */
static int64_t
child(ft_fold_thread* th, int sampled, uint32_t parent, uint64_t fid)
{
    if ((th->n + 1) * 2 > th->hcap && rehash(th, th->hcap ? th->hcap * 2 : 256) < 0) {
        return -1;
    }
    uint64_t key = (uint64_t)parent << 32 | (fid & 0xFFFFFFFFu);
    size_t j = hash_key(key) & (th->hcap - 1);
    while (th->hkeys[j] != EMPTY_KEY) {
        if (th->hkeys[j] == key) {
            return th->hvals[j];
        }
        j = (j + 1) & (th->hcap - 1);
    }
    if (th->n >= UINT32_MAX ||
        new_node(th, sampled, parent, (int64_t)fid, th->depth[parent] + 1) < 0) {
        return -1;
    }
    th->hkeys[j] = key;
    th->hvals[j] = (uint32_t)(th->n - 1);
    return (int64_t)(th->n - 1);
}

static ft_fold_thread*
thread_of(ft_fold* f, uint32_t tid)
{
    if (tid >= f->n_threads) { /* a thread met in samples only: ids are small and dense */
        if (tid >= MAX_THREAD_ID) {
            return NULL;
        }
        ft_fold_thread* q = realloc(f->threads, ((size_t)tid + 1) * sizeof *q);
        if (q == NULL) {
            return NULL;
        }
        memset(q + f->n_threads, 0, ((size_t)tid + 1 - f->n_threads) * sizeof *q);
        f->threads = q;
        f->n_threads = (size_t)tid + 1;
    }
    ft_fold_thread* th = &f->threads[tid];
    if (th->n == 0 && new_node(th, f->sampled, -1, 0, 0) < 0) {
        return NULL;
    }
    return th;
}

int
ft_fold_init(ft_fold* f, size_t n_threads, int slices, int sampled, uint64_t start_tick,
             double ns_per_tick, int64_t w0, int64_t w1)
{
    memset(f, 0, sizeof *f);
    f->threads = calloc(n_threads ? n_threads : 1, sizeof *f->threads);
    if (f->threads == NULL) {
        return -1;
    }
    f->n_threads = n_threads;
    f->slices = slices;
    f->sampled = sampled;
    f->start_tick = start_tick;
    f->ns_per_tick = ns_per_tick;
    f->w0 = w0;
    f->w1 = w1;
    return 0;
}

static void
free_levels(ft_fold_thread* th)
{
    for (size_t k = 0; k < th->n_levels; k++) {
        for (size_t d = 0; d < th->n_depths; d++) {
            ft_slice_vec_free(&th->levels[k][d]);
        }
        free(th->levels[k]);
    }
    free(th->levels);
    th->levels = NULL;
    th->n_levels = th->n_depths = 0;
}

void
ft_fold_free(ft_fold* f)
{
    for (size_t t = 0; t < f->n_threads; t++) {
        ft_fold_thread* th = &f->threads[t];
        free(th->parent);
        free(th->fid);
        free(th->depth);
        free(th->self_ns);
        free(th->calls);
        for (int s = 0; s < FT_FOLD_STATES; s++) {
            free(th->state_ns[s]);
        }
        free(th->hkeys);
        free(th->hvals);
        free(th->open);
        free(th->open_ts);
        free(th->leaf);
        free_levels(th);
    }
    free(f->threads);
    memset(f, 0, sizeof *f);
}

/* ---- slices ---- */

/* The raw lane at depth `d` (0: states), allocating depths as they are reached. */
static ft_slice_vec*
raw_lane(ft_fold_thread* th, size_t d)
{
    if (th->n_levels == 0) {
        th->levels = calloc(1, sizeof *th->levels);
        if (th->levels == NULL) {
            return NULL;
        }
        th->n_levels = 1;
    }
    if (d >= th->n_depths) {
        size_t n = th->n_depths ? th->n_depths : 8;
        while (n <= d) {
            n *= 2;
        }
        ft_slice_vec* q = realloc(th->levels[0], n * sizeof *q);
        if (q == NULL) {
            return NULL;
        }
        memset(q + th->n_depths, 0, (n - th->n_depths) * sizeof *q);
        th->levels[0] = q;
        th->n_depths = n;
    }
    return &th->levels[0][d];
}

static int
open_push(ft_fold_thread* th, uint32_t node, int64_t ts)
{
    if (th->top == th->open_cap) {
        size_t cap = th->open_cap;
        if (grow((void**)&th->open, &cap, th->top + 1, sizeof *th->open) < 0) {
            return -1;
        }
        cap = th->open_cap;
        if (grow((void**)&th->open_ts, &cap, th->top + 1, sizeof *th->open_ts) < 0) {
            return -1;
        }
        th->open_cap = cap;
    }
    th->open[th->top] = node;
    th->open_ts[th->top] = ts;
    th->top++;
    return 0;
}

/* Closes the innermost open frame at ts; its slice goes to its depth's raw lane. */
static int
open_pop(ft_fold_thread* th, int slices, int64_t ts)
{
    th->top--;
    if (!slices) {
        return 0;
    }
    uint32_t node = th->open[th->top];
    ft_slice_vec* lane = raw_lane(th, (size_t)th->depth[node]);
    if (lane == NULL || vec_push(lane, th->open_ts[th->top], ts, node, 1) < 0) {
        return -1;
    }
    th->n_slices++;
    return 0;
}

int
ft_fold_slice_open(ft_fold* f, uint32_t tid, uint32_t node, int64_t ts)
{
    ft_fold_thread* th = thread_of(f, tid);
    if (th == NULL || node >= th->n) {
        return -1;
    }
    return open_push(th, node, ts);
}

int
ft_fold_slice_close(ft_fold* f, uint32_t tid, int64_t ts)
{
    ft_fold_thread* th = thread_of(f, tid);
    if (th == NULL) {
        return -1;
    }
    return th->top ? open_pop(th, 1, ts) : 0;
}

int
ft_fold_add_state(ft_fold* f, uint32_t tid, int64_t start, int64_t end, int state)
{
    ft_fold_thread* th = thread_of(f, tid);
    ft_slice_vec* lane = th == NULL ? NULL : raw_lane(th, 0);
    if (lane == NULL) {
        return -1;
    }
    return vec_push(lane, start, end, (uint32_t)state, 1);
}

/* ---- folding ---- */

static inline int64_t
tick_ns(const ft_fold* f, uint64_t tick)
{
    /* exactly as _core's _tick_ns, so that times agree with Event.ts to the ns */
    int64_t delta = (int64_t)(tick - f->start_tick);
    return (int64_t)((double)delta * f->ns_per_tick);
}

/* The part of [a, b] inside the window. */
static inline int64_t
clipped(const ft_fold* f, int64_t a, int64_t b)
{
    if (a < f->w0) {
        a = f->w0;
    }
    if (b > f->w1) {
        b = f->w1;
    }
    return b > a ? b - a : 0;
}

int
ft_fold_events(ft_fold* f, uint32_t tid, const ft_event* ev, size_t n)
{
    ft_fold_thread* th = thread_of(f, tid);
    if (th == NULL) {
        return -1;
    }
    int whole = f->w0 == INT64_MIN && f->w1 == INT64_MAX;
    int slices = f->slices;
    int64_t last = th->last_ns;
    uint32_t top = th->top ? th->open[th->top - 1] : 0;
    for (size_t i = 0; i < n; i++) {
        const ft_event* e = &ev[i];
        int64_t ts = tick_ns(f, e->tick);
        if (!th->seen) {
            th->seen = 1;
            th->first_ns = last = ts;
        }
        th->self_ns[top] += whole ? ts - last : clipped(f, last, ts);
        last = ts;
        switch (e->kind) {
        case FT_EV_CALL:
        case FT_EV_C_CALL: {
            int64_t node = child(th, f->sampled, top, e->fid);
            if (node < 0 || open_push(th, (uint32_t)node, ts) < 0) {
                th->last_ns = last;
                return -1;
            }
            if (!e->synthetic && (whole || (ts >= f->w0 && ts <= f->w1))) {
                th->calls[node]++;
            }
            top = (uint32_t)node;
            break;
        }
        case FT_EV_RETURN:
        case FT_EV_C_RETURN:
            if (th->top) { /* else an orphan return: nothing is open */
                if (open_pop(th, slices, ts) < 0) {
                    th->last_ns = last;
                    return -1;
                }
                top = th->top ? th->open[th->top - 1] : 0;
            }
            break;
        case FT_EV_GAP: {
            /* the reader closed every frame at the gap's start (aux2) */
            int64_t start = tick_ns(f, e->aux2);
            int64_t lost = whole ? ts - start : clipped(f, start, ts);
            if (whole || lost > 0) {
                th->gaps++;
                th->dropped += e->aux;
            }
            th->gap_ns += lost;
            /* the timeline marks it: trace mode has no states, so gaps use that lane */
            if (slices) {
                ft_slice_vec* lane = raw_lane(th, 0);
                uint64_t dropped = e->aux > UINT32_MAX ? UINT32_MAX : e->aux;
                if (lane == NULL || vec_push(lane, start, ts, (uint32_t)dropped, 1) < 0) {
                    th->last_ns = last;
                    return -1;
                }
            }
            break;
        }
        default:
            break;
        }
    }
    th->last_ns = last;
    f->events += n;
    return 0;
}

int64_t
ft_fold_child(ft_fold* f, uint32_t tid, int64_t parent, int64_t fid)
{
    ft_fold_thread* th = thread_of(f, tid);
    if (th == NULL || parent < 0 || (size_t)parent >= th->n || fid < 0) {
        return -1;
    }
    return child(th, f->sampled, (uint32_t)parent, (uint64_t)fid);
}

int
ft_fold_sample(ft_fold* f, uint32_t tid, int64_t ts, uint64_t stack, const int64_t* fids,
               size_t n, int64_t weight_ns, int state)
{
    ft_fold_thread* th = thread_of(f, tid);
    if (th == NULL || state < 0 || state >= FT_FOLD_STATES) {
        return -1;
    }
    if (!th->seen) {
        th->seen = 1;
        th->first_ns = ts;
    }
    th->last_ns = ts;
    f->events++;
    if (ts < f->w0 || ts > f->w1) {
        return 0;
    }
    if (stack >= th->n_leaf) {
        size_t old = th->n_leaf;
        if (grow((void**)&th->leaf, &th->n_leaf, (size_t)stack + 1, sizeof *th->leaf) < 0) {
            return -1;
        }
        memset(th->leaf + old, 0, (th->n_leaf - old) * sizeof *th->leaf);
    }
    uint32_t node = th->leaf[stack];
    if (node == 0) { /* first sample of this stack on this thread: walk it */
        int64_t at = 0;
        for (size_t i = 0; i < n; i++) {
            at = child(th, 1, (uint32_t)at, (uint64_t)fids[i]);
            if (at < 0) {
                return -1;
            }
        }
        node = (uint32_t)at + 1;
        th->leaf[stack] = node;
    }
    node--;
    th->self_ns[node] += weight_ns;
    th->state_ns[state][node] += weight_ns;
    th->calls[node]++;
    return 0;
}

/* ---- the level-of-detail pyramid ---- */

static int
merge_level(const ft_slice_vec* in, ft_slice_vec* out, int64_t width)
{
    int have = 0;
    ft_slice run = {0, 0, 0, 0};
    int64_t longest = 0;
    for (size_t i = 0; i < in->n; i++) {
        const ft_slice* s = &in->v[i];
        int64_t dur = s->end - s->start;
        if (dur >= width) { /* wide enough to draw on its own */
            if ((have && vec_push(out, run.start, run.end, run.node, run.count) < 0) ||
                vec_push(out, s->start, s->end, s->node, s->count) < 0) {
                return -1;
            }
            have = 0;
            continue;
        }
        if (have && s->start - run.end < width) {
            run.end = s->end;
            uint64_t count = (uint64_t)run.count + s->count;
            run.count = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
            if (dur > longest) {
                longest = dur;
                run.node = s->node;
            }
            continue;
        }
        if (have && vec_push(out, run.start, run.end, run.node, run.count) < 0) {
            return -1;
        }
        run = *s;
        longest = dur;
        have = 1;
    }
    if (have && vec_push(out, run.start, run.end, run.node, run.count) < 0) {
        return -1;
    }
    return 0;
}

/* A lane keeps what it holds, not the doubling slack. */
static void
shrink(ft_slice_vec* v)
{
    if (v->n && v->n < v->cap) {
        ft_slice* q = realloc(v->v, v->n * sizeof *q);
        if (q != NULL) {
            v->v = q;
            v->cap = v->n;
        }
    }
}

static int
build_pyramid(ft_fold_thread* th)
{
    if (th->n_levels == 0) {
        return 0;
    }
    int64_t span = th->last_ns - th->first_ns;
    size_t want = 1;
    while (want < MAX_LEVELS && ft_fold_level_width(want) / WIDTH_STEP <= span) {
        want++;
    }
    ft_slice_vec** levels = realloc(th->levels, want * sizeof *levels);
    if (levels == NULL) {
        return -1;
    }
    th->levels = levels;
    for (size_t k = 0; k < want; k++) {
        if (k > 0) {
            levels[k] = calloc(th->n_depths, sizeof **levels);
            if (levels[k] == NULL) {
                return -1;
            }
            th->n_levels = k + 1;
        }
        for (size_t d = 0; d < th->n_depths; d++) {
            if (k > 0 &&
                merge_level(&levels[k - 1][d], &levels[k][d], ft_fold_level_width(k)) < 0) {
                return -1;
            }
            shrink(&levels[k][d]);
        }
    }
    return 0;
}

int
ft_fold_finish(ft_fold* f)
{
    for (size_t t = 0; t < f->n_threads; t++) {
        if (build_pyramid(&f->threads[t]) < 0) {
            return -1;
        }
    }
    return 0;
}

/* First entry of a lane whose end is at or after t (ends grow with starts: a lane's entries
 * do not overlap). */
static size_t
first_ending_after(const ft_slice_vec* lane, int64_t t)
{
    size_t lo = 0, hi = lane->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (lane->v[mid].end < t) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

int
ft_fold_query(const ft_fold_thread* th, int64_t t0, int64_t t1, int64_t res, int states,
              ft_slice_vec* out)
{
    if (th->n_levels == 0) {
        return 0;
    }
    size_t k = 0;
    while (k + 1 < th->n_levels && ft_fold_level_width(k + 1) <= res) {
        k++;
    }
    size_t d0 = states ? 0 : 1;
    size_t d1 = states ? 1 : th->n_depths;
    for (size_t d = d0; d < d1 && d < th->n_depths; d++) {
        const ft_slice_vec* lane = &th->levels[k][d];
        for (size_t i = first_ending_after(lane, t0); i < lane->n && lane->v[i].start <= t1;
             i++) {
            const ft_slice* s = &lane->v[i];
            if (vec_push(out, s->start, s->end, s->node, s->count) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

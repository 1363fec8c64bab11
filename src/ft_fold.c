/* ft_fold.c: call trees and timeline slices from decoded events (see ft_fold.h). */
#include "ft_fold.h"

#include <stdlib.h>
#include <string.h>

#define EMPTY_KEY UINT64_MAX
#define FIRST_WIDTH 1000 /* ns: level 1 merges runs of sub-microsecond calls */
#define WIDTH_STEP 4     /* each level's width is this many times the one below */
#define MAX_THREAD_ID (1u << 20)
#define NO_NODE UINT32_MAX

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

/* Depths are allocated in powers of two: the count that holds depth d. */
static size_t
depths_for(size_t have, size_t d)
{
    size_t n = have ? have : 8;
    while (n <= d) {
        n *= 2;
    }
    return n;
}

/* *p (n_old items of `size`) reallocated to n items, the new ones zeroed. */
static int
grow_zeroed(void** p, size_t n_old, size_t n, size_t size)
{
    char* q = realloc(*p, n * size);
    if (q == NULL) {
        return -1;
    }
    memset(q + n_old * size, 0, (n - n_old) * size);
    *p = q;
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

/* The slot of (parent, fid) in the thread's table: where it is, or the empty slot where it
 * would go (the table is never full: it is kept at most half full). */
static size_t
probe(const ft_fold_thread* th, uint32_t parent, uint64_t fid)
{
    uint64_t key = (uint64_t)parent << 32 | (fid & 0xFFFFFFFFu);
    size_t j = hash_key(key) & (th->hcap - 1);
    while (th->hkeys[j] != EMPTY_KEY && th->hkeys[j] != key) {
        j = (j + 1) & (th->hcap - 1);
    }
    return j;
}

/* The child of `parent` for `fid`, made if missing: one hash probe per call. */
static int64_t
child(ft_fold_thread* th, int sampled, uint32_t parent, uint64_t fid)
{
    if ((th->n + 1) * 2 > th->hcap && rehash(th, th->hcap ? th->hcap * 2 : 256) < 0) {
        return -1;
    }
    size_t j = probe(th, parent, fid);
    if (th->hkeys[j] != EMPTY_KEY) {
        return th->hvals[j];
    }
    if (th->n >= UINT32_MAX ||
        new_node(th, sampled, parent, (int64_t)fid, th->depth[parent] + 1) < 0) {
        return -1;
    }
    th->hkeys[j] = (uint64_t)parent << 32 | (fid & 0xFFFFFFFFu);
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

/* Child lookup that never creates (replays run beside other queries, read-only). */
static int64_t
find_child(const ft_fold_thread* th, uint32_t parent, uint64_t fid)
{
    if (th->hcap == 0) {
        return -1;
    }
    size_t j = probe(th, parent, fid);
    return th->hkeys[j] == EMPTY_KEY ? -1 : (int64_t)th->hvals[j];
}

int
ft_fold_init(ft_fold* f, size_t n_threads, int slices, int sampled, uint64_t start_tick,
             double ns_per_tick, int64_t w0, int64_t w1, size_t budget)
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
    f->budget = budget;
    return 0;
}

static int
frames_push(ft_frames* fr, uint32_t node, int64_t ts, size_t bnd)
{
    if (fr->top == fr->cap) {
        size_t cap = fr->cap ? fr->cap * 2 : 32;
        uint32_t* n = realloc(fr->node, cap * sizeof *n);
        if (n == NULL) {
            return -1;
        }
        fr->node = n;
        int64_t* t = realloc(fr->start, cap * sizeof *t);
        if (t == NULL) {
            return -1;
        }
        fr->start = t;
        size_t* b = realloc(fr->bnd, cap * sizeof *b);
        if (b == NULL) {
            return -1;
        }
        fr->bnd = b;
        uint8_t* c = realloc(fr->counted, cap);
        if (c == NULL) {
            return -1;
        }
        fr->counted = c;
        fr->cap = cap;
    }
    fr->node[fr->top] = node;
    fr->start[fr->top] = ts;
    fr->bnd[fr->top] = bnd;
    fr->counted[fr->top] = 0;
    fr->top++;
    return 0;
}

static void
frames_free(ft_frames* fr)
{
    free(fr->node);
    free(fr->start);
    free(fr->bnd);
    free(fr->counted);
    memset(fr, 0, sizeof *fr);
}

static void
free_level(ft_level* l, size_t n_depths)
{
    if (l->lanes != NULL) {
        for (size_t d = 0; d < n_depths; d++) {
            ft_slice_vec_free(&l->lanes[d]);
        }
    }
    free(l->lanes);
    free(l->merges);
    l->lanes = NULL;
    l->merges = NULL;
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
        frames_free(&th->open);
        free(th->leaf);
        ft_slice_vec_free(&th->gap_list);
        for (size_t k = 0; k < FT_FOLD_LEVELS; k++) {
            free_level(&th->levels[k], th->n_depths);
        }
        free(th->bnd);
        free(th->b_node);
        free(th->b_start);
        free(th->b_end);
        free(th->b_fid);
    }
    free(f->threads);
    memset(f, 0, sizeof *f);
}

/* ---- the pyramid, built as slices close ---- */

/* Makes room for depth d in every level (lanes and merges start zeroed). */
static int
reach_depth(ft_fold_thread* th, size_t d)
{
    if (d < th->n_depths) {
        return 0;
    }
    size_t n = depths_for(th->n_depths, d);
    for (size_t k = 0; k < FT_FOLD_LEVELS; k++) {
        ft_level* l = &th->levels[k];
        if (grow_zeroed((void**)&l->lanes, th->n_depths, n, sizeof *l->lanes) < 0 ||
            grow_zeroed((void**)&l->merges, th->n_depths, n, sizeof *l->merges) < 0) {
            return -1;
        }
    }
    th->n_depths = n;
    return 0;
}

static int feed(ft_fold* f, ft_fold_thread* th, size_t k, size_t d, const ft_slice* s);

/* Entry s of level k at depth d: kept if the level is, and fed to the level above. */
static int
put(ft_fold* f, ft_fold_thread* th, size_t k, size_t d, const ft_slice* s)
{
    if (k >= f->finest) {
        ft_slice_vec* lane = &th->levels[k].lanes[d];
        size_t cap = lane->cap;
        if (vec_push(lane, s->start, s->end, s->node, s->count) < 0) {
            return -1;
        }
        f->kept += (lane->cap - cap) * sizeof(ft_slice);
    }
    return k + 1 < FT_FOLD_LEVELS ? feed(f, th, k + 1, d, s) : 0;
}

/* One merge step at `width`: s is kept apart if that wide, else joins the run when close
 * enough to it; a finished run or s goes out through emit. */
typedef int (*emit_fn)(void* ctx, size_t d, const ft_slice* s);

static int
merge_step(ft_merge* m, int64_t width, size_t d, const ft_slice* s, emit_fn emit, void* ctx)
{
    int64_t dur = s->end - s->start;
    if (dur >= width) { /* wide enough to draw on its own */
        if (m->have) {
            m->have = 0;
            int rc = emit(ctx, d, &m->run);
            if (rc < 0) {
                return rc;
            }
        }
        return emit(ctx, d, s);
    }
    if (m->have && s->start - m->run.end < width) {
        m->run.end = s->end;
        uint64_t count = (uint64_t)m->run.count + s->count;
        m->run.count = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
        if (dur > m->longest) {
            m->longest = dur;
            m->run.node = s->node;
        }
        return 0;
    }
    if (m->have) {
        m->have = 0;
        int rc = emit(ctx, d, &m->run);
        if (rc < 0) {
            return rc;
        }
    }
    m->run = *s;
    m->longest = dur;
    m->have = 1;
    return 0;
}

typedef struct {
    ft_fold* f;
    ft_fold_thread* th;
    size_t k;
} put_ctx;

static int
put_emit(void* ctx, size_t d, const ft_slice* s)
{
    put_ctx* c = ctx;
    return put(c->f, c->th, c->k, d, s);
}

static int
feed(ft_fold* f, ft_fold_thread* th, size_t k, size_t d, const ft_slice* s)
{
    put_ctx c = {f, th, k};
    return merge_step(&th->levels[k].merges[d], ft_fold_level_width(k), d, s, put_emit, &c);
}

/* A closed slice (or a state run) at depth d enters the pyramid at level 0. */
static int
add_slice(ft_fold* f, ft_fold_thread* th, size_t d, int64_t start, int64_t end, uint32_t node)
{
    if (reach_depth(th, d) < 0) {
        return -1;
    }
    ft_slice s = {start, end, node, 1};
    if (d > 0) {
        th->n_slices++;
    }
    return put(f, th, 0, d, &s);
}

void
ft_fold_enforce_budget(ft_fold* f)
{
    while (f->budget && f->kept > f->budget && f->finest + 1 < FT_FOLD_LEVELS) {
        for (size_t t = 0; t < f->n_threads; t++) {
            ft_fold_thread* th = &f->threads[t];
            ft_level* l = &th->levels[f->finest];
            for (size_t d = 0; d < th->n_depths; d++) {
                f->kept -= l->lanes[d].cap * sizeof(ft_slice);
                ft_slice_vec_free(&l->lanes[d]);
            }
        }
        f->finest++;
    }
}

/* ---- the open stack ---- */

/* A frame opens on the fold's thread; the first boundary it will span is the next one. */
static int
open_push(ft_fold_thread* th, uint32_t node, int64_t ts)
{
    return frames_push(&th->open, node, ts, th->n_bnd);
}

/* Closes the innermost open frame at ts: its slice enters the pyramid, and the boundaries
 * it spans learn its end. */
static int
open_pop(ft_fold* f, ft_fold_thread* th, int64_t ts)
{
    size_t i = --th->open.top;
    for (size_t b = th->open.bnd[i]; b < th->n_bnd; b++) {
        th->b_end[th->bnd[b].at + i] = ts;
    }
    if (!f->slices) {
        return 0;
    }
    uint32_t node = th->open.node[i];
    return add_slice(f, th, (size_t)th->depth[node], th->open.start[i], ts, node);
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
    return th->open.top ? open_pop(f, th, ts) : 0;
}

int
ft_fold_add_state(ft_fold* f, uint32_t tid, int64_t start, int64_t end, int state)
{
    ft_fold_thread* th = thread_of(f, tid);
    if (th == NULL) {
        return -1;
    }
    return add_slice(f, th, 0, start, end, (uint32_t)state);
}

/* ---- chunk boundaries ---- */

int64_t
ft_fold_boundary(ft_fold* f, uint32_t tid, const ft_thread_decoder* d)
{
    ft_fold_thread* th = thread_of(f, tid);
    if (th == NULL ||
        (th->n_bnd == th->bnd_cap &&
         grow((void**)&th->bnd, &th->bnd_cap, th->n_bnd + 1, sizeof *th->bnd) < 0)) {
        return -1;
    }
    size_t need = th->b_n + th->open.top;
    if (need > th->b_cap) {
        size_t cap = th->b_cap, cap2 = th->b_cap, cap3 = th->b_cap;
        if (grow((void**)&th->b_node, &cap, need, sizeof *th->b_node) < 0 ||
            grow((void**)&th->b_start, &cap2, need, sizeof *th->b_start) < 0 ||
            grow((void**)&th->b_end, &cap3, need, sizeof *th->b_end) < 0) {
            return -1;
        }
        th->b_cap = cap;
    }
    if (grow((void**)&th->b_fid, &th->bf_cap, th->bf_n + d->depth + 1, sizeof *th->b_fid) < 0) {
        return -1;
    }
    ft_boundary* b = &th->bnd[th->n_bnd];
    b->at = th->b_n;
    b->top = (uint32_t)th->open.top;
    b->d_depth = d->depth;
    b->d_last_tick = d->last_tick;
    b->d_unmatched = d->unmatched;
    b->d_started = d->started;
    b->d_broken = d->broken;
    for (size_t i = 0; i < th->open.top; i++) {
        th->b_node[th->b_n + i] = th->open.node[i];
        th->b_start[th->b_n + i] = th->open.start[i];
        th->b_end[th->b_n + i] = th->last_ns; /* until it closes: the fold's last word */
    }
    th->b_n += th->open.top;
    if (d->depth) { /* (an empty stack may have no array at all) */
        memcpy(th->b_fid + th->bf_n, d->stack, d->depth * sizeof *th->b_fid);
    }
    th->bf_n += d->depth;
    return (int64_t)th->n_bnd++;
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

/* min_ns: the innermost open call returns at ts; if it is shorter than min_ns, its node
 * gives back what this call added to it (every call it made was shorter still, so already
 * moved into its self time: its whole, clipped, duration) to its parent's self time, and its
 * call is uncounted. */
static void
drop_if_short(ft_fold* f, ft_fold_thread* th, int64_t ts, int whole)
{
    size_t i = th->open.top - 1;
    int64_t start = th->open.start[i];
    if (ts - start >= f->min_ns) {
        return;
    }
    uint32_t node = th->open.node[i];
    int64_t moved = whole ? ts - start : clipped(f, start, ts);
    th->self_ns[node] -= moved;
    th->self_ns[th->parent[node] < 0 ? 0 : th->parent[node]] += moved;
    if (th->open.counted[i]) {
        th->calls[node]--;
    }
}

int
ft_fold_events(ft_fold* f, uint32_t tid, const ft_event* ev, size_t n)
{
    ft_fold_thread* th = thread_of(f, tid);
    if (th == NULL) {
        return -1;
    }
    int whole = f->w0 == INT64_MIN && f->w1 == INT64_MAX;
    int64_t last = th->last_ns;
    uint32_t top = th->open.top ? th->open.node[th->open.top - 1] : 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
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
                rc = -1;
                break;
            }
            if (!e->synthetic && (whole || (ts >= f->w0 && ts <= f->w1))) {
                th->calls[node]++;
                th->open.counted[th->open.top - 1] = 1;
            }
            top = (uint32_t)node;
            break;
        }
        case FT_EV_RETURN:
        case FT_EV_C_RETURN:
            if (th->open.top) { /* else an orphan return: nothing is open */
                if (f->min_ns > 0) {
                    drop_if_short(f, th, ts, whole);
                }
                rc = open_pop(f, th, ts);
                top = th->open.top ? th->open.node[th->open.top - 1] : 0;
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
            if (f->slices) {
                uint64_t dropped = e->aux > UINT32_MAX ? UINT32_MAX : e->aux;
                rc = vec_push(&th->gap_list, start, ts, (uint32_t)dropped, 1);
            }
            break;
        }
        default:
            break;
        }
    }
    th->last_ns = last;
    f->events += n;
    return rc;
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

/* ---- per-function totals ---- */

int
ft_fold_functions(const ft_fold* f, const ft_fold_thread* th, int64_t* calls, int64_t* self_ns,
                  int64_t* total_ns, uint8_t* seen, size_t n_fids)
{
    size_t n = th->n;
    int64_t* incl = malloc((n ? n : 1) * sizeof *incl);
    int64_t* incl_calls = malloc((n ? n : 1) * sizeof *incl_calls);
    if (incl == NULL || incl_calls == NULL) {
        free(incl);
        free(incl_calls);
        return -1;
    }
    /* a child's index is above its parent's: one backward pass sums the subtrees */
    memcpy(incl, th->self_ns, n * sizeof *incl);
    memcpy(incl_calls, th->calls, n * sizeof *incl_calls);
    for (size_t i = n; i-- > 1;) {
        int64_t p = th->parent[i];
        incl[p] += incl[i];
        incl_calls[p] += incl_calls[i];
    }
    for (size_t i = 1; i < n; i++) {
        int64_t fid = th->fid[i];
        if (fid < 0 || (size_t)fid >= n_fids) {
            continue;
        }
        seen[fid] = 1;
        self_ns[fid] += th->self_ns[i];
        if (!f->sampled) {
            calls[fid] += th->calls[i];
        }
        /* outermost: no ancestor runs the same function (recursion is counted once) */
        int64_t p = th->parent[i];
        while (p > 0 && th->fid[p] != fid) {
            p = th->parent[p];
        }
        if (p <= 0) {
            total_ns[fid] += incl[i];
            if (f->sampled) {
                calls[fid] += incl_calls[i]; /* samples with it on the stack, once each */
            }
        }
    }
    free(incl);
    free(incl_calls);
    return 0;
}

/* A lane keeps what it holds, not the doubling slack. */
static void
shrink(ft_fold* f, ft_slice_vec* v)
{
    if (v->n < v->cap) {
        ft_slice* q = v->n ? realloc(v->v, v->n * sizeof *q) : NULL;
        if (q != NULL || v->n == 0) {
            f->kept -= (v->cap - v->n) * sizeof *q;
            if (v->n == 0) {
                free(v->v);
            }
            v->v = q;
            v->cap = v->n;
        }
    }
}

int
ft_fold_finish(ft_fold* f)
{
    for (size_t t = 0; t < f->n_threads; t++) {
        ft_fold_thread* th = &f->threads[t];
        /* runs still open go up, level by level: a flush feeds the level above, flushed next */
        for (size_t k = 1; k < FT_FOLD_LEVELS; k++) {
            for (size_t d = 0; d < th->n_depths; d++) {
                ft_merge* m = &th->levels[k].merges[d];
                if (m->have) {
                    m->have = 0;
                    if (put(f, th, k, d, &m->run) < 0) {
                        return -1;
                    }
                }
            }
        }
        for (size_t k = 0; k < FT_FOLD_LEVELS; k++) {
            for (size_t d = 0; d < th->n_depths; d++) {
                shrink(f, &th->levels[k].lanes[d]);
            }
        }
    }
    ft_fold_enforce_budget(f);
    return 0;
}

/* ---- queries ---- */

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

size_t
ft_fold_level_for(int64_t res)
{
    size_t k = 0;
    while (k + 1 < FT_FOLD_LEVELS && ft_fold_level_width(k + 1) <= res) {
        k++;
    }
    return k;
}

int
ft_fold_query(const ft_fold* f, const ft_fold_thread* th, int64_t t0, int64_t t1, int64_t res,
              int states, size_t limit, ft_slice_vec* out)
{
    size_t k = ft_fold_level_for(res);
    if (k < f->finest) {
        if (!states && !f->sampled) {
            return 1; /* decode again */
        }
        k = f->finest;
    }
    size_t d0 = states ? 0 : 1;
    size_t d1 = states ? 1 : th->n_depths;
    for (size_t d = d0; d < d1 && d < th->n_depths; d++) {
        const ft_slice_vec* lane = &th->levels[k].lanes[d];
        for (size_t i = first_ending_after(lane, t0); i < lane->n && lane->v[i].start <= t1;
             i++) {
            const ft_slice* s = &lane->v[i];
            if (limit && out->n >= limit) {
                return FT_FOLD_TOO_MANY;
            }
            if (vec_push(out, s->start, s->end, s->node, s->count) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* ---- replays ---- */

/* Room for depth d in the replay's lanes and in each of its levels' merges. */
static int
replay_depth(ft_replay* r, size_t d)
{
    if (d < r->n_depths) {
        return 0;
    }
    size_t n = depths_for(r->n_depths, d);
    if (grow_zeroed((void**)&r->lanes, r->n_depths, n, sizeof *r->lanes) < 0) {
        return -1;
    }
    ft_merge* merges = realloc(r->merges, n * (r->level + 1) * sizeof *merges);
    if (merges == NULL) {
        return -1;
    }
    /* merges[j * n + d]: level j's run at depth d; move the old rows to their new stride */
    for (size_t j = r->level + 1; j-- > 0;) {
        memmove(merges + j * n, merges + j * r->n_depths, r->n_depths * sizeof *merges);
        memset(merges + j * n + r->n_depths, 0, (n - r->n_depths) * sizeof *merges);
    }
    r->merges = merges;
    r->n_depths = n;
    return 0;
}

typedef struct {
    ft_replay* r;
    size_t j;
} replay_ctx;

/* Level j's entry: kept at the query's level, else merged into level j + 1 -- the same
 * cascade the fold builds its pyramid with, so that the answer is what a kept level holds. */
static int
replay_put(void* ctx, size_t d, const ft_slice* s)
{
    replay_ctx* c = ctx;
    ft_replay* r = c->r;
    if (c->j == r->level) {
        if (r->limit && r->kept >= r->limit) {
            return FT_FOLD_TOO_MANY;
        }
        r->kept++;
        return vec_push(&r->lanes[d], s->start, s->end, s->node, s->count);
    }
    replay_ctx up = {r, c->j + 1};
    return merge_step(&r->merges[up.j * r->n_depths + d], ft_fold_level_width(up.j), d, s,
                      replay_put, &up);
}

/* A slice the replay closed: kept if it overlaps the range. */
static int
replay_slice(ft_replay* r, const ft_fold_thread* th, uint32_t node, int64_t start, int64_t end)
{
    if (node == NO_NODE || end < r->t0 || start > r->t1) {
        return 0;
    }
    size_t d = (size_t)th->depth[node];
    if (replay_depth(r, d) < 0) {
        return -1;
    }
    ft_slice s = {start, end, node, 1};
    replay_ctx c = {r, 0};
    return replay_put(&c, d, &s);
}

/* `d` (zeroed) becomes the reader's state at boundary b of th. */
static int
prime_decoder(const ft_fold_thread* th, size_t b, ft_thread_decoder* d)
{
    const ft_boundary* bd = &th->bnd[b];
    /* its stack's function ids follow those of the boundaries before */
    size_t fids_at = 0;
    for (size_t i = 0; i < b; i++) {
        fids_at += th->bnd[i].d_depth;
    }
    memset(d, 0, sizeof *d);
    if (bd->d_depth) {
        d->stack = malloc(bd->d_depth * sizeof *d->stack);
        if (d->stack == NULL) {
            return -1;
        }
        memcpy(d->stack, th->b_fid + fids_at, bd->d_depth * sizeof *d->stack);
    }
    d->depth = d->cap = bd->d_depth;
    d->last_tick = bd->d_last_tick;
    d->unmatched = bd->d_unmatched;
    d->started = bd->d_started;
    d->broken = bd->d_broken;
    return 0;
}

int
ft_replay_begin(ft_replay* r, const ft_fold_thread* th, size_t b, ft_thread_decoder* d,
                int64_t t0, int64_t t1, size_t level, size_t limit)
{
    memset(r, 0, sizeof *r);
    r->limit = limit;
    r->t0 = t0;
    r->t1 = t1;
    r->level = level < FT_FOLD_LEVELS ? level : FT_FOLD_LEVELS - 1;
    const ft_boundary* bd = &th->bnd[b];
    for (size_t i = 0; i < bd->top; i++) {
        if (frames_push(&r->open, th->b_node[bd->at + i], th->b_start[bd->at + i], 0) < 0) {
            return -1;
        }
    }
    return prime_decoder(th, b, d);
}

int
ft_fold_resume(ft_fold* w, uint32_t tid, const ft_fold_thread* th, size_t b, int64_t at_ns,
               ft_thread_decoder* d)
{
    ft_fold_thread* wt = thread_of(w, tid);
    if (wt == NULL || prime_decoder(th, b, d) < 0) {
        return -1;
    }
    if (b == 0) { /* the thread's start: nothing was open, nothing seen */
        return 0;
    }
    /* what the whole fold had when it reached this boundary: its first event, the frames
     * open (as nodes of this fold's own tree) and the time, no later than the chunk's start */
    wt->seen = 1;
    wt->first_ns = th->first_ns;
    wt->last_ns = at_ns;
    const ft_boundary* bd = &th->bnd[b];
    uint32_t top = 0;
    for (size_t i = 0; i < bd->top; i++) {
        uint32_t node = th->b_node[bd->at + i];
        int64_t mine = child(wt, w->sampled, top, (uint64_t)th->fid[node]);
        if (mine < 0 || open_push(wt, (uint32_t)mine, th->b_start[bd->at + i]) < 0) {
            return -1;
        }
        top = (uint32_t)mine;
    }
    return 0;
}

void
ft_replay_enter(const ft_fold_thread* th, size_t b, ft_thread_decoder* d)
{
    if (b < th->n_bnd && th->bnd[b].d_broken && !d->broken) {
        ft_thread_decoder_break(d);
    }
}

int
ft_replay_events(ft_replay* r, const ft_fold* f, const ft_fold_thread* th, const ft_event* ev,
                 size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const ft_event* e = &ev[i];
        int64_t ts = tick_ns(f, e->tick);
        r->last = ts;
        switch (e->kind) {
        case FT_EV_CALL:
        case FT_EV_C_CALL: {
            uint32_t top = r->open.top ? r->open.node[r->open.top - 1] : 0;
            int64_t node = top == NO_NODE ? -1 : find_child(th, top, e->fid);
            if (frames_push(&r->open, node < 0 ? NO_NODE : (uint32_t)node, ts, 0) < 0) {
                return -1;
            }
            break;
        }
        case FT_EV_RETURN:
        case FT_EV_C_RETURN:
            if (r->open.top) {
                r->open.top--;
                int rc = replay_slice(r, th, r->open.node[r->open.top],
                                      r->open.start[r->open.top], ts);
                if (rc < 0) {
                    return rc;
                }
            }
            break;
        default:
            break;
        }
    }
    return 0;
}

int
ft_replay_end(ft_replay* r, const ft_fold_thread* th, size_t b, ft_slice_vec* out)
{
    const ft_boundary* bd = b < th->n_bnd ? &th->bnd[b] : NULL;
    while (r->open.top) {
        size_t i = --r->open.top;
        /* still open at boundary b: it ends where the fold saw it end */
        int64_t end = bd != NULL && i < bd->top && th->b_node[bd->at + i] == r->open.node[i]
                          ? th->b_end[bd->at + i]
                          : r->last;
        int rc = replay_slice(r, th, r->open.node[i], r->open.start[i], end);
        if (rc < 0) {
            return rc;
        }
    }
    /* runs still open go up level by level, as ft_fold_finish does */
    for (size_t j = 1; j <= r->level; j++) {
        for (size_t d = 0; d < r->n_depths; d++) {
            ft_merge* m = &r->merges[j * r->n_depths + d];
            if (m->have) {
                m->have = 0;
                replay_ctx c = {r, j};
                int rc = replay_put(&c, d, &m->run);
                if (rc < 0) {
                    return rc;
                }
            }
        }
    }
    for (size_t d = 0; d < r->n_depths; d++) {
        ft_slice_vec* lane = &r->lanes[d];
        for (size_t i = 0; i < lane->n; i++) {
            if (vec_push(out, lane->v[i].start, lane->v[i].end, lane->v[i].node,
                         lane->v[i].count) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

void
ft_replay_free(ft_replay* r)
{
    for (size_t d = 0; d < r->n_depths; d++) {
        ft_slice_vec_free(&r->lanes[d]);
    }
    free(r->lanes);
    free(r->merges);
    frames_free(&r->open);
    memset(r, 0, sizeof *r);
}

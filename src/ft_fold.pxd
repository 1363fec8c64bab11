# Declarations of ft_fold.h for the Cython boundary (no logic here).
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from ft_reader cimport ft_event, ft_thread_decoder

cdef extern from "ft_fold.h" nogil:
    ctypedef struct ft_slice:
        int64_t start
        int64_t end
        uint32_t node
        uint32_t count

    ctypedef struct ft_slice_vec:
        ft_slice* v
        size_t n
        size_t cap

    ctypedef struct ft_fold_thread:
        int64_t* parent
        int64_t* fid
        int64_t* depth
        int64_t* self_ns
        int64_t* calls
        int64_t* state_ns[3]
        size_t n
        int64_t first_ns
        int64_t last_ns
        int seen
        int64_t gap_ns
        uint64_t gaps
        uint64_t dropped
        int64_t max_depth
        uint64_t n_slices
        ft_slice_vec gap_list

    ctypedef struct ft_fold:
        ft_fold_thread* threads
        size_t n_threads
        int sampled
        int64_t min_ns
        uint64_t events
        size_t finest
        size_t kept

    ctypedef struct ft_replay:
        pass

    int ft_fold_init(ft_fold* f, size_t n_threads, int slices, int sampled, uint64_t start_tick,
                     double ns_per_tick, int64_t w0, int64_t w1, size_t budget)
    int64_t ft_fold_boundary(ft_fold* f, uint32_t tid, const ft_thread_decoder* d)
    void ft_fold_enforce_budget(ft_fold* f)
    void ft_fold_free(ft_fold* f)
    int ft_fold_events(ft_fold* f, uint32_t tid, const ft_event* ev, size_t n)
    int ft_fold_sample(ft_fold* f, uint32_t tid, int64_t ts, uint64_t stack, const int64_t* fids,
                       size_t n, int64_t weight_ns, int state)
    int64_t ft_fold_child(ft_fold* f, uint32_t tid, int64_t parent, int64_t fid)
    int ft_fold_slice_open(ft_fold* f, uint32_t tid, uint32_t node, int64_t ts)
    int ft_fold_slice_close(ft_fold* f, uint32_t tid, int64_t ts)
    int ft_fold_add_state(ft_fold* f, uint32_t tid, int64_t start, int64_t end, int state)
    int ft_fold_finish(ft_fold* f)
    int ft_fold_functions(const ft_fold* f, const ft_fold_thread* th, int64_t* calls,
                          int64_t* self_ns, int64_t* total_ns, uint8_t* seen, size_t n_fids)
    enum:
        FT_FOLD_TOO_MANY
    int ft_fold_query(const ft_fold* f, const ft_fold_thread* th, int64_t t0, int64_t t1,
                      int64_t res, int states, size_t limit, ft_slice_vec* out)
    size_t ft_fold_level_for(int64_t res)
    int ft_fold_resume(ft_fold* w, uint32_t tid, const ft_fold_thread* th, size_t b,
                       int64_t at_ns, ft_thread_decoder* d)
    int ft_replay_begin(ft_replay* r, const ft_fold_thread* th, size_t b, ft_thread_decoder* d,
                        int64_t t0, int64_t t1, size_t level, size_t limit)
    void ft_replay_enter(const ft_fold_thread* th, size_t b, ft_thread_decoder* d)
    int ft_replay_events(ft_replay* r, const ft_fold* f, const ft_fold_thread* th,
                         const ft_event* ev, size_t n)
    int ft_replay_end(ft_replay* r, const ft_fold_thread* th, size_t b, ft_slice_vec* out)
    void ft_replay_free(ft_replay* r)
    void ft_slice_vec_free(ft_slice_vec* v)

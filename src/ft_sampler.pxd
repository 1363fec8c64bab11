# Declarations of ft_sampler.h for the Cython boundary (no logic here).
from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef extern from "ft_sampler.h":
    ctypedef struct ft_sampler_config:
        double rate_hz
        int clock
        const uint8_t* call_opcodes
        const void* const* stop_codes
        int n_stop_codes
        int scope_patterns
        int trim_stacks
        uint32_t max_depth

    ctypedef struct ft_sampler_stats:
        uint64_t values[16]
        double rate_hz
        int clock

    enum:
        FT_SAMPLER_MAX_STOP_CODES
        FT_SAMPLER_ELAYOUT

    int ft_sampler_start(const ft_sampler_config* cfg)
    int ft_sampler_check_layout(char* msg, size_t cap)
    const char* ft_sampler_layout_error()
    const char* ft_sampler_layout_field(int i)
    int ft_sampler_running()
    void ft_sampler_set_thread_name(uint64_t ident, const char* name, uint64_t native_id,
                                    int force, uint64_t min_uid)
    void ft_sampler_release()
    uint64_t ft_sampler_last_thread_uid()
    void ft_sampler_fork_defer()
    void ft_sampler_fork_resume()
    void ft_sampler_stop(ft_sampler_stats* out) nogil
    void ft_sampler_halt() nogil
    void ft_sampler_abandon()
    void ft_sampler_scope_expect()
    int ft_sampler_scope_enter(uint64_t ident)
    int ft_sampler_scope_wait(uint32_t* first, uint32_t* end) nogil
    const char* ft_sampler_scope_file(uint32_t i, size_t* len)
    void ft_sampler_scope_decide(uint32_t i, int inside)
    void ft_sampler_scope_taken(uint32_t end)
    void ft_sampler_scope_exit()
    void ft_sampler_scope_join() nogil
    int ft_sampler_scope_pause() nogil
    void ft_sampler_scope_pending(uint32_t* first, uint32_t* end)

# Declarations of ft_sampler.h for the Cython boundary (no logic here).
from libc.stdint cimport uint8_t, uint64_t

cdef extern from "ft_sampler.h":
    ctypedef struct ft_sampler_config:
        double rate_hz
        int clock
        const uint8_t* call_opcodes
        const void* const* stop_codes
        int n_stop_codes

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
    void ft_sampler_abandon()

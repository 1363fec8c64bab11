# Declarations of ft_session.h for the Cython boundary (no logic here).
from libc.stdint cimport uint32_t, uint64_t

cdef extern from "ft_session.h" nogil:
    ctypedef struct ft_config:
        const char* path
        int fd
        int sink
        uint64_t flight_max_bytes
        double flight_seconds
        const char* series_stem
        const char* series_suffix
        uint64_t series_max_bytes
        double series_max_seconds
        uint32_t series_keep
        int c_calls
        int hook
        int hook_fallback
        int mode
        uint32_t chunk_size
        uint32_t n_chunks
        const char* command_line
        size_t command_line_size
        const char* python_version
        uint32_t python_version_hex

    ctypedef struct ft_summary:
        uint64_t events
        uint64_t dropped
        uint64_t bytes
        uint64_t duration_ns
        uint32_t threads
        uint32_t functions
        uint32_t lost_threads
        uint32_t hook_lost_threads
        int error
        uint64_t error_offset
        uint64_t sampler[16]
        uint64_t first_index
        uint64_t last_index
        int skipped_error
        uint64_t skipped_error_index
        uint64_t skipped_error_offset
        uint64_t skipped_errors
        uint64_t lost_chunks

    int ft_session_start(const ft_config* cfg)
    void ft_session_quiesce()
    void ft_session_finish(ft_summary* out)
    void ft_session_abandon()
    void ft_session_flush_threads()
    enum:
        FT_SINK_FILE
        FT_SINK_FLIGHT
        FT_SINK_SERIES
    void ft_session_set_thread_name(uint64_t ident, const char* name)


cdef extern from "ft_writer.h" nogil:
    ctypedef struct ft_flight_dump_result:
        int error
        uint64_t error_offset
        uint64_t bytes
        uint64_t events
        uint64_t chunks
        uint64_t start_tick
        uint64_t end_tick
        uint64_t duration_ns
        uint32_t threads
        uint32_t functions

    int ft_writer_dump(int fd, ft_flight_dump_result* out)
    int ft_writer_is_flight()
    void ft_writer_fork_defer()
    void ft_writer_fork_resume()

# Declarations of ft_reader.h and ft_format.h for the Cython boundary (no logic here).
from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef extern from "ft_format.h" nogil:
    ctypedef struct ft_chunk_header:
        uint32_t magic
        uint32_t payload_size
        uint32_t crc32
        uint8_t type
        uint8_t flags
        uint32_t thread
        uint32_t records
        uint64_t base_tick

    ctypedef struct ft_trailer:
        uint64_t events
        uint64_t dropped
        uint64_t stop_tick
        uint64_t stop_mono_ns
        uint64_t stop_wall_ns
        uint32_t threads
        uint32_t functions
        uint32_t error
        uint32_t lost_threads

    enum:
        FT_CHUNK_EVENTS
        FT_CHUNK_DEFS
        FT_CHUNK_CLOCK
        FT_CHUNK_TRAILER
        FT_CHUNK_SAMPLES
        FT_DEF_STACK
        FT_DEF_SAMPLING
        FT_DEF_SAMPLER_STATS
        FT_DEF_HOOK_LOST
        FT_DEF_SCOPE
        FT_STACK_TRUNCATED
        FT_SAMPLE_IDLE
        FT_SAMPLE_IN_CALL
        FT_SAMPLE_TORN
        FT_CLOCK_WALL
        FT_CLOCK_CPU
        FT_STAT_COUNT
        FT_SAMPLE_MAX_DEPTH
        FT_CHUNK_HEADER_SIZE
        FT_CHUNK_LAST_OF_THREAD
        FT_DEF_FUNCTION
        FT_DEF_THREAD
        FT_DEF_THREAD_NAME
        FT_FUNC_IS_C
        FT_MODE_TRACE
        FT_MODE_SAMPLE
        FT_HEADER_C_CALLS
        FT_HEADER_HOOK_SHIFT
        FT_HEADER_HOOK_FALLBACK
        FT_HOOK_PROFILE
        FT_HOOK_MONITORING
        FT_HOOK_EVAL_FRAME
        FT_HOOK_SAMPLER
        FT_FORMAT_VERSION
        FT_FORMAT_VERSION_MIN
        FT_FORMAT_VERSION_MAX
        FT_ORIGIN_CAPTURE
        FT_ORIGIN_FLIGHT
        FT_ORIGIN_SERIES

cdef extern from "ft_reader.h" nogil:
    ctypedef struct ft_read_error:
        size_t offset
        char reason[240]

    ctypedef struct ft_header:
        uint32_t version
        uint32_t python_version_hex
        uint32_t pid
        uint32_t mode
        uint32_t flags
        uint32_t clock_kind
        uint32_t chunk_size
        uint64_t buffer_size
        uint64_t start_tick
        uint64_t start_mono_ns
        uint64_t start_wall_ns
        double tick_hz
        const uint8_t* command_line
        size_t command_line_size
        const uint8_t* python_version
        size_t python_version_size
        uint64_t series_index
        uint64_t series_id
        uint8_t origin
        size_t first_chunk

    int ft_read_header(const uint8_t* data, size_t size, ft_header* h, ft_read_error* e)

    enum:
        FT_READ_OK
        FT_READ_END
        FT_READ_TRUNCATED
        FT_READ_CORRUPT

    ctypedef struct ft_str:
        const uint8_t* s
        size_t n

    ctypedef struct ft_def:
        uint8_t tag
        uint64_t id
        uint8_t flags
        uint64_t lineno
        uint64_t ident
        uint64_t native_id
        ft_str name
        ft_str qualname
        ft_str filename
        ft_str module
        uint64_t count
        ft_str list
        uint64_t rate
        uint64_t clock
        uint64_t max_depth
        uint64_t tick

    size_t ft_def_list(const ft_def* d, uint64_t* out, size_t n)

    ctypedef struct ft_sample:
        uint64_t tick
        uint64_t thread
        uint64_t stack
        uint64_t weight_us
        uint8_t state

    int ft_next_sample(const uint8_t* payload, size_t size, size_t* pos, size_t base,
                       uint64_t* tick, ft_sample* s, ft_read_error* e)

    int ft_next_def(const uint8_t* payload, size_t size, size_t* pos, size_t base, ft_def* d,
                    ft_read_error* e)

    enum:
        FT_EV_CALL
        FT_EV_RETURN
        FT_EV_C_CALL
        FT_EV_C_RETURN
        FT_EV_GAP

    ctypedef struct ft_event:
        uint64_t tick
        uint64_t aux
        uint64_t aux2
        uint32_t fid
        uint8_t kind
        uint8_t synthetic

    ctypedef struct ft_event_buf:
        ft_event* ev
        size_t n
        size_t cap

    ctypedef struct ft_thread_decoder:
        uint32_t depth
        uint64_t last_tick
        uint64_t unmatched

    ctypedef struct ft_functions_view:
        const uint8_t* fid_kind
        uint32_t n_fids

    int ft_decode_events(ft_thread_decoder* d, const ft_functions_view* fv,
                         const uint8_t* payload, size_t size, size_t base, uint64_t base_tick,
                         uint32_t version, ft_event_buf* out, ft_read_error* e)
    void ft_thread_decoder_break(ft_thread_decoder* d)
    int ft_close_open(ft_thread_decoder* d, const ft_functions_view* fv, uint64_t tick,
                      ft_event_buf* out)
    void ft_thread_decoder_free(ft_thread_decoder* d)
    void ft_event_buf_free(ft_event_buf* b)
    int ft_events_last_tick(const uint8_t* payload, size_t size, uint64_t base_tick,
                            uint32_t version, uint64_t* out)

cdef extern from "ft_rfile.h" nogil:
    ctypedef struct ft_rfile:
        int fd
        uint64_t size

    enum:
        FT_READ_CHANGED

    void ft_rfile_init(ft_rfile* f, int fd, uint64_t size)
    void ft_rfile_free(ft_rfile* f)
    int ft_rfile_header(ft_rfile* f, ft_header* h, ft_read_error* e)
    int ft_rfile_chunk(ft_rfile* f, uint64_t offset, ft_chunk_header* h, const uint8_t** payload,
                       ft_read_error* e)

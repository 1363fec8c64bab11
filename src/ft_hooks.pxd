# Declarations of ft_hooks.h and ft_intern.h for the Cython boundary (no logic here).
cdef extern from "ft_hooks.h":
    int FT_USE_MONITORING
    int FT_FORK_COUNTS_AFTER_HOOKS
    int ft_hooks_init() except -1
    void ft_hooks_retain(object threading_active, object disable, object marker)
    void ft_hooks_release()
    unsigned long ft_hooks_find_profiled_thread()
    void ft_hooks_snapshot_threads(int skip_current)
    # Only one of these two groups does anything in a given build (ft_hooks.h stubs the
    # other); _core.pyx picks by FT_USE_MONITORING.
    object ft_hooks_monitoring_callbacks()
    void ft_hooks_install_legacy()
    void ft_hooks_remove_legacy()
    object ft_hooks_legacy_bootstrap()
    int FT_USE_EVAL_FRAME
    int ft_hooks_install_eval_frame()
    void ft_hooks_remove_eval_frame()
    int ft_hooks_eval_frame_taken()
    void ft_hooks_check()
    void ft_hooks_lose_all(const char* what)
    object ft_hooks_run_unmuted_function()
    void ft_hooks_mute_returns(unsigned int returns)

cdef extern from "ft_spawn.h":
    object ft_spawn_wrap(object original, object thread_class, int install_hook)

cdef extern from "ft_sigterm.h":
    int ft_sigterm_guard(int signum)
    void ft_sigterm_taken()

cdef extern from "ft_siglisten.h":
    long ft_siglisten_open(int signum)
    int ft_siglisten_wait(long generation) nogil
    void ft_siglisten_close()

from cpython.ref cimport PyObject
from libc.stdint cimport uint32_t, uint64_t

cdef extern from "ft_intern.h":
    void ft_intern_set_scope(PyObject* code_pred, PyObject* code_cache, PyObject* c_pred,
                             PyObject* c_cache)
    void ft_intern_reset()
    int ft_intern_set_own_files(object files) except -1

cdef extern from "ft_thread.h":
    uint32_t ft_thread_max_depth
    uint64_t ft_thread_min_ns

cdef extern from "ft_defs.h":
    void ft_defs_put_scope(const char* json, size_t n)

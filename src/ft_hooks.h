/* ft_hooks.h: the interpreter callbacks and their installation.  Everything here runs with
 * the GIL held. */
#ifndef FT_HOOKS_H
#define FT_HOOKS_H

#include "ft_compat.h"

/* Once per process.  Returns 0, or -1 with an exception set. */
int ft_hooks_init(void);

/* Keeps strong references until ft_hooks_release: threading._active (thread names),
 * sys.monitoring.DISABLE (3.12+, else None) and the object sys.getprofile() shows. */
void ft_hooks_retain(PyObject* threading_active, PyObject* disable, PyObject* marker);
void ft_hooks_release(void);

/* threading.get_ident() of a thread with a profile function set, or 0. */
unsigned long ft_hooks_find_profiled_thread(void);

/* Records every thread's current Python stack for its first event to open with.  The calling
 * thread's innermost frames that are fasttrace's own (start() and what it calls) are left out
 * and muted: neither they, their returns nor what they call are recorded.  With skip_current
 * all the calling thread's frames are muted that way: `fasttrace run` starts from inside its
 * own runner, whose frames are not the program's; it runs the program with
 * ft_hooks_run_unmuted. */
void ft_hooks_snapshot_threads(int skip_current);
/* Trace mode: the calling thread's next `returns` returns that have no call in the trace are
 * not recorded, nor what runs before them (a muted region that ends with them).  For calls
 * already in progress when the trace started whose return will still be reported: a forked
 * child's capture starts inside os.fork(), whose C return comes under the hooks of 3.9-3.11
 * and 3.12+ (the parent's trace had the call site hooked) and would close the caller's frame.
 * Nothing when no trace-mode session runs. */
void ft_hooks_mute_returns(uint32_t returns);
/* Evaluates `code` in `globals` (borrowed) with the calling thread's muted region suspended.
 * Returns a new reference, or NULL with an exception set. */
PyObject* ft_hooks_run_unmuted(PyObject* code, PyObject* globals);
/* New reference: ft_hooks_run_unmuted as a builtin function (METH_FASTCALL). */
PyObject* ft_hooks_run_unmuted_function(void);

/* Looks for threads whose hook another tool replaced (3.9-3.11: their profile function;
 * 3.11: the frame evaluator) and marks each with a HOOK_LOST def.  Runs at every chunk
 * hand-off and at stop().  GIL held. */
void ft_hooks_check(void);
/* Marks every live thread's hook as lost (3.12+: stop() found fasttrace's sys.monitoring
 * tool id or events changed by someone else). */
void ft_hooks_lose_all(const char* what);

#if FT_USE_MONITORING
/* New reference: (enter, exit, call, c_exit) callables for sys.monitoring.register_callback:
 *   enter  <- PY_START, PY_RESUME, PY_THROW
 *   exit   <- PY_RETURN, PY_YIELD, PY_UNWIND
 *   call   <- CALL (C functions only; returns DISABLE for Python callees)
 *   c_exit <- C_RETURN, C_RAISE */
PyObject* ft_hooks_monitoring_callbacks(void);
/* The legacy group does not exist here; these keep the Cython layer version-neutral. */
static inline void ft_hooks_install_legacy(void) {}
static inline void ft_hooks_remove_legacy(void) {}
static inline PyObject* ft_hooks_legacy_bootstrap(void) { Py_RETURN_NONE; }
static inline void ft_hooks_install_legacy_current(void) {}
#else
/* Installs the C profile function on every existing thread of the interpreter. */
void ft_hooks_install_legacy(void);
/* Removes it from every thread where it is still ours. */
void ft_hooks_remove_legacy(void);
/* New reference: the callable for threading.setprofile that swaps in the C hook on a new
 * thread's first event. */
PyObject* ft_hooks_legacy_bootstrap(void);
/* Installs the C hook on the calling thread if a trace runs and no profile function is set
 * (a thread started with _thread.start_new_thread, see ft_spawn.c). */
void ft_hooks_install_legacy_current(void);
static inline PyObject* ft_hooks_monitoring_callbacks(void) { Py_RETURN_NONE; }
#endif

/* 3.11: install and remove the PEP 523 frame-evaluation function (see ft_compat.h).  Install
 * returns 0, or -1 if another tool already replaced the frame evaluator.  Elsewhere they do
 * nothing and install returns -2. */
int ft_hooks_install_eval_frame(void);
/* Nonzero if a tool other than CPython replaced the frame evaluator (3.11; 0 elsewhere). */
int ft_hooks_eval_frame_taken(void);
void ft_hooks_remove_eval_frame(void);

#endif /* FT_HOOKS_H */

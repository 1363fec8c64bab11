/* ft_spawn.h: threads started while fasttrace runs.
 *
 * One C wrapper of CPython's thread starters serves two needs, and being C it puts no Python
 * frame of fasttrace's on the caller's stack while the starter blocks (a Python wrapper took
 * the sampled self time of Thread.start):
 *  - trace mode with the profile function (3.9-3.11): threading.setprofile only reaches
 *    threading.Thread; a thread started with _thread.start_new_thread gets the C hook here,
 *    before its first Python call;
 *  - sampling mode: the sampler cannot call Python, so the new thread is named as it starts.
 * GIL held throughout.
 */
#ifndef FT_SPAWN_H
#define FT_SPAWN_H

#include "ft_compat.h"

/* New reference: a callable that calls `original` (a thread starter whose first argument is
 * the function the thread runs) with the same arguments.  With `install_hook`, that function
 * runs under fasttrace's profile function in the new thread.  If `after` is not None it is
 * called as after(function, result, uid) once the thread is started, where uid is
 * ft_sampler_last_thread_uid() from before the start; an exception there is reported as
 * unraisable, since the thread is running by then.  All arguments are borrowed. */
PyObject* ft_spawn_wrap(PyObject* original, PyObject* after, int install_hook);

#endif /* FT_SPAWN_H */

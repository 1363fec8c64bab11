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
 * runs under fasttrace's profile function in the new thread.  If `thread_class`
 * (threading.Thread) is not None, a thread that runs a bound method of an instance of it is
 * named for the sampler once started.  All arguments are borrowed. */
PyObject* ft_spawn_wrap(PyObject* original, PyObject* thread_class, int install_hook);

#endif /* FT_SPAWN_H */

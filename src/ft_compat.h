/* ft_compat.h: every CPython version difference that fasttrace's C code sees.
 *
 * Supported: CPython 3.9 to 3.13, GIL builds, 64-bit.  Nothing outside this header tests
 * PY_VERSION_HEX; the rest of the core calls the ft_py_* helpers below.
 *
 *   3.9-3.11   hook = C Py_tracefunc via PyEval_SetProfile (one thread at a time)
 *   3.12+      hook = sys.monitoring with METH_FASTCALL C callbacks (interpreter-wide)
 */
#ifndef FT_COMPAT_H
#define FT_COMPAT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <stdint.h>

#if PY_VERSION_HEX < 0x03090000
#error "fasttrace needs CPython 3.9 or newer"
#endif
#ifdef Py_GIL_DISABLED
#error "fasttrace does not support free-threaded CPython builds yet"
#endif
#if UINTPTR_MAX != 0xFFFFFFFFFFFFFFFFu
#error "fasttrace needs a 64-bit platform (function ids share the co_extra word with a generation tag)"
#endif

#define FT_USE_MONITORING (PY_VERSION_HEX >= 0x030C0000)

/* 3.11 only: a PEP 523 frame-evaluation function sees Python entries and exits without
 * switching the specializing interpreter off, which any profile function does on 3.11
 * (bench/pep523/README.md: ~5x less overhead on call-dense code, none on loops).  It cannot
 * see C calls, so it serves c_calls=False.  3.12+ has sys.monitoring; before 3.11 the profile
 * hook is cheap. */
#define FT_USE_EVAL_FRAME (PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000)

#if FT_USE_EVAL_FRAME
#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE
typedef _PyInterpreterFrame ft_py_iframe;
static inline PyCodeObject*
ft_py_iframe_code(ft_py_iframe* f)
{
    return f->f_code;
}
/* Calling a generator or coroutine function runs its frame just long enough to create the
 * generator (RETURN_GENERATOR); the profile hook reports no call for that, so neither do we.
 * Later resumes run on a frame the generator owns. */
static inline int
ft_py_iframe_creates_generator(ft_py_iframe* f)
{
    return (f->f_code->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR)) &&
           f->owner != FRAME_OWNED_BY_GENERATOR;
}
#endif

/* ---- code objects ----------------------------------------------------------------------- */

/* The co_extra block's layout (internal/pycore_code.h) has been the same from 3.6 to 3.13.  We
 * read it inline because the hook does this lookup on every call; writes still go through the
 * API. */
typedef struct {
    Py_ssize_t ce_size;
    void* ce_extras[1];
} ft_code_extra;

static inline void*
ft_py_code_extra_get(PyCodeObject* co, Py_ssize_t index)
{
    ft_code_extra* extra = (ft_code_extra*)co->co_extra;
    if (extra == NULL || index >= extra->ce_size) {
        return NULL;
    }
    return extra->ce_extras[index];
}

#if PY_VERSION_HEX >= 0x030C0000
#define ft_py_code_extra_set PyUnstable_Code_SetExtra
#define ft_py_request_extra_index PyUnstable_Eval_RequestCodeExtraIndex
#else
#define ft_py_code_extra_set _PyCode_SetExtra
#define ft_py_request_extra_index _PyEval_RequestCodeExtraIndex
#endif

/* Borrowed reference.  Before 3.11 code objects have no qualified name; co_name stands in and
 * FORMAT.md says so. */
static inline PyObject*
ft_py_code_qualname(PyCodeObject* co)
{
#if PY_VERSION_HEX >= 0x030B0000
    return co->co_qualname;
#else
    return co->co_name;
#endif
}

/* ---- threads ---------------------------------------------------------------------------- */

static inline unsigned long
ft_py_tstate_ident(PyThreadState* ts)
{
    return ts->thread_id;
}

/* Nonzero when a legacy profile function is set on this thread.  On 3.12+ that is cProfile of
 * an older release, pyinstrument, yappi or anything else using PyEval_SetProfile. */
static inline int
ft_py_tstate_has_profile(PyThreadState* ts)
{
    return ts->c_profilefunc != NULL;
}

#if !FT_USE_MONITORING
static inline Py_tracefunc
ft_py_tstate_profilefunc(PyThreadState* ts)
{
    return ts->c_profilefunc;
}
#endif

/* Borrowed code object of a frame.  The frame holds its code, so the reference
 * PyFrame_GetCode returns on 3.11 can be dropped at once. */
static inline PyCodeObject*
ft_py_frame_code(PyFrameObject* frame)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyCodeObject* co = PyFrame_GetCode(frame);
    Py_DECREF(co);
    return co;
#else
    return frame->f_code;
#endif
}

/* ---- exceptions: slow paths that call the C API keep the caller's exception intact -------- */

#if PY_VERSION_HEX >= 0x030C0000
typedef struct {
    PyObject* exc;
} ft_py_err_state;
static inline void
ft_py_err_save(ft_py_err_state* s)
{
    s->exc = PyErr_GetRaisedException();
}
static inline void
ft_py_err_restore(ft_py_err_state* s)
{
    PyErr_Clear();
    PyErr_SetRaisedException(s->exc);
}
#else
typedef struct {
    PyObject *type, *value, *tb;
} ft_py_err_state;
static inline void
ft_py_err_save(ft_py_err_state* s)
{
    PyErr_Fetch(&s->type, &s->value, &s->tb);
}
static inline void
ft_py_err_restore(ft_py_err_state* s)
{
    PyErr_Clear();
    PyErr_Restore(s->type, s->value, s->tb);
}
#endif

/* ---- frames (start-up stack snapshots only; never on the hot path) ----------------------- */

/* New reference or NULL. */
static inline PyFrameObject*
ft_py_tstate_frame(PyThreadState* ts)
{
    return PyThreadState_GetFrame(ts);
}

#endif /* FT_COMPAT_H */

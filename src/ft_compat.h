/* ft_compat.h: every CPython version difference that fasttrace's C code sees.
 *
 * Supported: CPython 3.9 to 3.15, GIL builds, 64-bit.  Nothing outside this header tests
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

/* 3.11 and 3.12: a PEP 523 frame-evaluation function sees Python entries and exits; it cannot
 * see C calls, so it serves c_calls=False.  On 3.11 it keeps the specializing interpreter on,
 * which any profile function switches off (~5x less overhead on call-dense code); on 3.12 it
 * costs 7-18 % less than sys.monitoring's dispatch.  Before 3.11 the profile hook is cheap.
 * Not on 3.13+ (bench/README.md, "The fastest hook on every version"):
 *  - 3.13's CALL_ALLOC_AND_ENTER_INIT (a class call specialized for a Python __init__) pushes
 *    the __init__ frame without asking the evaluator: those calls would be lost;
 *  - 3.14 and 3.15 close a suspended generator without running its frame when no tool watches
 *    PY_UNWIND, so the evaluator would miss a call cProfile counts; and there it is no faster
 *    than sys.monitoring. */
#define FT_USE_EVAL_FRAME (PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000)

#if FT_USE_EVAL_FRAME
#define Py_BUILD_CORE 1
#if PY_VERSION_HEX >= 0x030C0000
#undef _PyGC_FINALIZED /* 3.12: the public and internal headers both define it */
#endif
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE
typedef _PyInterpreterFrame ft_py_iframe;
/* Borrowed: the frame holds its code until its caller pops it. */
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
    return (ft_py_iframe_code(f)->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR)) &&
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

/* 3.11+ thread states carry the kernel thread id; before, the sampler learns it from
 * threading (Thread.native_id), which sets it in the new thread just before Thread.start()
 * returns. */
#define FT_TSTATE_HAS_NATIVE_ID (PY_VERSION_HEX >= 0x030B0000)

/* os.fork() counts the process's threads for its "multi-threaded" warning after the Python
 * after-fork hooks on 3.13 (3.12: before them; 3.14: before fork()), so there fasttrace's
 * threads restart once os.fork() has returned (ft_fork.h). */
#define FT_FORK_COUNTS_AFTER_HOOKS (PY_VERSION_HEX >= 0x030D0000 && PY_VERSION_HEX < 0x030E0000)

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

/* ---- sampler: interpreter structures read from another thread, without the GIL --------
 *
 * Only the sampler's files (ft_sampler*.c) define FT_COMPAT_SAMPLER.  They are several, so the
 * functions below are static inline, and the one table, ft_layout_checks, is static const:
 * only ft_sampler.c uses it, and the compiler drops the other files' copies.  The sampler never
 * dereferences interpreter memory: it copies bytes with process_vm_readv and decodes the copies
 * with the helpers below, so a stale pointer costs a failed read, never a crash.  Layouts come
 * from the internal headers of the exact version being built, so no offset is written by hand.
 *
 *   thread list       3.9-3.10 interp->tstate_head; 3.11+ interp->threads.head
 *   GIL               3.9-3.11 _PyRuntime.ceval.gil (embedded); 3.12+ interp->ceval.gil (pointer)
 *   top frame slot    3.9-3.10 tstate->frame (PyFrameObject*); 3.11-3.12 tstate->cframe ->
 *                     current_frame (_PyInterpreterFrame*); 3.13 tstate->current_frame
 *   frame             3.9-3.10 f_back, f_code, f_lasti (bytes / code units);
 *                     3.11+ previous, f_code (3.13 f_executable, 3.14 a _PyStackRef),
 *                     prev_instr (3.13 instr_ptr), owner (3.12-3.13 FRAME_OWNED_BY_CSTACK,
 *                     3.14+ >= FRAME_OWNED_BY_INTERPRETER = shim frame, skipped)
 *   native thread id  3.11+ tstate->native_thread_id; before, 0 (naming fills it in)
 */
#ifdef FT_COMPAT_SAMPLER
#include <stddef.h>
#define Py_BUILD_CORE 1
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
#undef _PyGC_FINALIZED /* 3.12: the public and internal headers both define it */
#endif
#include "internal/pycore_interp.h"
#include "internal/pycore_runtime.h"
#if PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_frame.h"
#endif
#if PY_VERSION_HEX >= 0x030E0000
#include "internal/pycore_stackref.h" /* 3.14: frames hold tagged stack references */
#endif
#undef Py_BUILD_CORE

#define FT_RAW_FRAMES_INLINE (PY_VERSION_HEX >= 0x030B0000) /* frames live in data stacks */

typedef PyThreadState ft_raw_tstate;
typedef struct _gil_runtime_state ft_raw_gil;

static inline PyThreadState* const*
ft_raw_threads_head(PyInterpreterState* interp)
{
#if PY_VERSION_HEX >= 0x030B0000
    return (PyThreadState* const*)&interp->threads.head;
#else
    return (PyThreadState* const*)&interp->tstate_head;
#endif
}

/* Address of the GIL state; GIL held by the caller, stable for the interpreter's life. */
static inline const ft_raw_gil*
ft_raw_gil_addr(PyInterpreterState* interp)
{
#if PY_VERSION_HEX >= 0x030C0000
    return interp->ceval.gil;
#else
    (void)interp;
    return &_PyRuntime.ceval.gil;
#endif
}

static inline int
ft_raw_gil_held_by(const ft_raw_gil* g, const PyThreadState* addr)
{
#if PY_VERSION_HEX >= 0x030D0000
    return g->locked && g->last_holder == addr;
#else
    return g->locked._value && (const PyThreadState*)g->last_holder._value == addr;
#endif
}

static inline uint64_t
ft_raw_tstate_native_id(const ft_raw_tstate* t)
{
#if PY_VERSION_HEX >= 0x030B0000
    return t->native_thread_id;
#else
    (void)t;
    return 0;
#endif
}

/* Where the innermost frame pointer is.  3.11-3.12 keep it in the _PyCFrame that
 * tstate->cframe points at: a struct on the thread's C stack that changes whenever the thread
 * enters or leaves a nested eval loop (a class call running __init__, a dunder in C, ...), and
 * whose old address is soon reused by other C frames.  So the cframe pointer is read fresh,
 * just before the frame pointer, and checked unchanged after (a stale cframe from the thread
 * state copy gave garbage in ~7 % of the samples of raytrace).  Elsewhere the frame pointer is
 * a field of the thread state itself. */
#define FT_RAW_TOP_FRAME_INDIRECT (PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000)

#if FT_RAW_TOP_FRAME_INDIRECT
static inline void* const*
ft_raw_cframe_field(PyThreadState* addr)
{
    return (void* const*)&addr->cframe;
}

static inline void* const*
ft_raw_cframe_top_slot(const void* cframe)
{
    return (void* const*)((const char*)cframe + offsetof(_PyCFrame, current_frame));
}
#else
static inline void* const*
ft_raw_top_frame_slot(PyThreadState* addr)
{
#if PY_VERSION_HEX >= 0x030D0000
    return (void* const*)&addr->current_frame;
#else
    return (void* const*)&addr->frame;
#endif
}
#endif

/* The live part of the thread's current data-stack chunk, [lo, hi): frames that run on the
 * thread are copied from here in one read.  Both NULL before 3.11. */
static inline void
ft_raw_datastack(const ft_raw_tstate* t, const char** lo, const char** hi)
{
#if FT_RAW_FRAMES_INLINE
    *lo = (const char*)t->datastack_chunk;
    *hi = (const char*)t->datastack_top;
#else
    (void)t;
    *lo = *hi = NULL;
#endif
}

#if FT_RAW_FRAMES_INLINE
typedef _PyInterpreterFrame ft_raw_frame_struct;
#define FT_RAW_FRAME_SIZE (offsetof(_PyInterpreterFrame, owner) + 1)
#else
typedef PyFrameObject ft_raw_frame_struct;
/* Through the field that says whether the frame still runs (see ft_raw_frame.done). */
#if PY_VERSION_HEX >= 0x030A0000
#define FT_RAW_FRAME_SIZE (offsetof(PyFrameObject, f_state) + sizeof(PyFrameState))
#else
#define FT_RAW_FRAME_SIZE (offsetof(PyFrameObject, f_executing) + 1)
#endif
#endif

typedef struct {
    const void* code;  /* code object (unchecked) */
    const void* back;  /* the caller's frame */
    const void* instr; /* 3.11+: the current instruction; before: NULL, see lasti */
    int lasti;         /* 3.9-3.10: offset of the current instruction in co_code, in bytes */
    int skip;          /* a shim frame with no code of its own */
    int bad;           /* the bytes cannot be a frame: the stack moved under the reader */
    /* 3.9-3.10: the frame does not run.  A caller always does; the innermost frame not for
     * a few instructions as it is entered and left.  Any other has returned: its object may
     * be on the frame free list, whose link is f_back (a walk would go on through frames of
     * earlier calls, or end there), and its code may be freed.  Always 0 from 3.11. */
    int done;
} ft_raw_frame;

/* Decodes a copy of FT_RAW_FRAME_SIZE bytes. */
static inline void
ft_raw_frame_decode(const void* bytes, ft_raw_frame* out)
{
    const ft_raw_frame_struct* f = (const ft_raw_frame_struct*)bytes;
    memset(out, 0, sizeof *out);
#if PY_VERSION_HEX >= 0x030E0000
    /* Entry frames are owned by the interpreter (3.14 also keeps FRAME_OWNED_BY_CSTACK, 3.15
     * has no more): skipped, or 93 % of the samples of call-dense code came out torn.  The
     * code is a tagged stack reference; the tag bits are masked by hand, since the header's
     * accessor asserts on tags a torn copy can hold. */
    out->back = f->previous;
#if PY_VERSION_HEX >= 0x030F0000
    out->bad = f->owner < 0 || f->owner > FRAME_OWNED_BY_INTERPRETER;
#else
    out->bad = f->owner < 0 || f->owner > FRAME_OWNED_BY_CSTACK;
#endif
    out->skip = f->owner >= FRAME_OWNED_BY_INTERPRETER;
    out->code = (const void*)(f->f_executable.bits & ~(uintptr_t)Py_TAG_BITS);
    out->instr = f->instr_ptr;
#elif PY_VERSION_HEX >= 0x030C0000
    out->back = f->previous;
    out->bad = f->owner < 0 || f->owner > FRAME_OWNED_BY_CSTACK;
    out->skip = f->owner == FRAME_OWNED_BY_CSTACK;
#if PY_VERSION_HEX >= 0x030D0000
    out->code = f->f_executable;
    out->instr = f->instr_ptr;
#else
    out->code = f->f_code;
    out->instr = f->prev_instr;
#endif
#elif PY_VERSION_HEX >= 0x030B0000
    out->back = f->previous;
    out->bad = f->owner < 0 || f->owner > FRAME_OWNED_BY_FRAME_OBJECT;
    out->code = f->f_code;
    out->instr = f->prev_instr;
#else
    out->back = f->f_back;
    out->code = f->f_code;
#if PY_VERSION_HEX >= 0x030A0000
    out->lasti = f->f_lasti * (int)sizeof(_Py_CODEUNIT);
#else
    out->lasti = f->f_lasti;
#endif
    out->bad = out->lasti < -1;
#if PY_VERSION_HEX >= 0x030A0000
    out->done = f->f_state != FRAME_EXECUTING && f->f_state != FRAME_UNWINDING;
#else
    out->done = !f->f_executing;
#endif
#endif
}

/* Code objects: the fixed part is copied once per code object the sampler meets. */
#if PY_VERSION_HEX >= 0x030B0000
#define FT_RAW_CODE_SIZE offsetof(PyCodeObject, co_code_adaptive)
#else
#define FT_RAW_CODE_SIZE sizeof(PyCodeObject)
#endif

typedef struct {
    const void* name;
    const void* qualname;
    const void* filename;
    const void* bytecode; /* 3.9-3.10: the co_code bytes' data; NULL after (instr is absolute) */
    int firstlineno;
} ft_raw_code;

static inline void
ft_raw_code_decode(const void* bytes, ft_raw_code* out)
{
    const PyCodeObject* co = (const PyCodeObject*)bytes;
    out->name = co->co_name;
    out->filename = co->co_filename;
    out->firstlineno = co->co_firstlineno;
#if PY_VERSION_HEX >= 0x030B0000
    out->qualname = co->co_qualname;
    out->bytecode = NULL;
#else
    out->qualname = co->co_name;
    out->bytecode = co->co_code == NULL ? NULL
                                        : (const char*)co->co_code + offsetof(PyBytesObject, ob_sval);
#endif
}

/* Strings: only compact str objects (all identifiers and file names of code objects) are
 * read; the header copy says where the characters are and how wide they are. */
typedef PyCompactUnicodeObject ft_raw_str_header;

/* 0 if not a readable compact str; else the character width (1, 2, 4) with *data and *len. */
static inline int
ft_raw_str_layout(const void* addr, const ft_raw_str_header* h, const void** data, size_t* len)
{
    const PyASCIIObject* a = &h->_base;
    if (Py_TYPE((const PyObject*)a) != &PyUnicode_Type || !a->state.compact) {
        return 0;
    }
    *len = (size_t)a->length;
    if (a->state.ascii) {
        *data = (const char*)addr + sizeof(PyASCIIObject);
        return 1;
    }
    *data = (const char*)addr + sizeof(PyCompactUnicodeObject);
    int kind = (int)a->state.kind; /* a torn copy can hold any 3 bits here */
    return kind == 1 || kind == 2 || kind == 4 ? kind : 0;
}

static inline int
ft_raw_is_code_type(const PyObject* header_copy)
{
    return Py_TYPE(header_copy) == &PyCode_Type;
}

/* GIL held: tstate->id of the next thread state to be made is above this. */
static inline uint64_t
ft_raw_last_thread_uid(PyInterpreterState* interp)
{
#if PY_VERSION_HEX >= 0x030B0000
    return interp->threads.next_unique_id;
#else
    return interp->tstate_next_unique_id;
#endif
}

#if PY_VERSION_HEX >= 0x030C0000
#define FT_HAVE_CODE_WATCHERS 1 /* PyCode_AddWatcher: we hear of every code object's death */
#else
#define FT_HAVE_CODE_WATCHERS 0
#endif

/* ---- the running interpreter's own description of its layout (3.13+) ----------------------
 *
 * Every offset and size above is compiled in from the headers of the CPython this fasttrace
 * was built against, while the extension loads into any interpreter of the same minor
 * version.  CPython keeps these structs stable only between final patch releases of one
 * minor version; a pre-release, a distribution's patched build or a future patch release that
 * breaks the promise would have the sampler decode the wrong words: never a crash (every read
 * is a copy), but wrong stacks with nothing to say so.
 *
 * 3.13+ publishes its layout for out-of-process tools in _PyRuntime.debug_offsets
 * (_Py_DebugOffsets: the cookie "xdebugpy", PY_VERSION_HEX, then offsets and sizes by struct).
 * So ft_sampler_start, before any file or thread exists (fasttrace's Python side calls the
 * same check before it opens the output), copies it and compares every entry of
 * ft_layout_checks below with the value this build uses, and refuses to sample on the first
 * difference, naming the field and both values.  The table holds exactly the offsets and sizes
 * the ft_raw_* helpers above rely on, each expected value being offsetof/sizeof on the very
 * struct those helpers decode.  What _Py_DebugOffsets does not describe cannot be checked
 * this way: tstate->id and datastack_top, the GIL's switch_number, interp->threads'
 * next_unique_id, the str state bits.
 *
 * The description's own shape changes between minor versions and between pre-releases, so
 * its fields are read with this build's definition only after the cookie matched and the
 * version said the shape is this build's (ft_sampler.c, layout_readable).  The copy itself is
 * always in bounds: the struct opens _PyRuntime, which is far larger in every version.
 *
 * Test hook: FASTTRACE_DEBUG_OFFSETS_SKEW=NAME (a name below, or "cookie" or "version") skews
 * that field of the copy before the comparison, so that tests can take the refusal path. */
#if PY_VERSION_HEX >= 0x030D0000
#define FT_HAVE_DEBUG_OFFSETS 1
typedef _Py_DebugOffsets ft_debug_offsets;

enum { FT_LAYOUT_OFFSET, FT_LAYOUT_SIZE, FT_LAYOUT_VALUE };

typedef struct {
    const char* name;  /* "section.field", as in _Py_DebugOffsets */
    size_t at;         /* where the field is in _Py_DebugOffsets */
    uint64_t expected; /* what this build uses */
    int kind;          /* FT_LAYOUT_*: how the message words it */
} ft_layout_check;

#define FT_LAYOUT_(sec, fld, value, kind) \
    {#sec "." #fld, offsetof(_Py_DebugOffsets, sec.fld), (uint64_t)(value), kind}
#define FT_LAYOUT_OFF(sec, fld, type, member) \
    FT_LAYOUT_(sec, fld, offsetof(type, member), FT_LAYOUT_OFFSET)
#define FT_LAYOUT_SIZE(sec, fld, type) FT_LAYOUT_(sec, fld, sizeof(type), FT_LAYOUT_SIZE)

static const ft_layout_check ft_layout_checks[] = {
    /* this build reads GIL builds only */
    {"free_threaded", offsetof(_Py_DebugOffsets, free_threaded), 0, FT_LAYOUT_VALUE},
    /* the thread list and the GIL (ft_raw_threads_head, ft_raw_gil_addr, ft_raw_gil_held_by) */
    FT_LAYOUT_OFF(interpreter_state, threads_head, PyInterpreterState, threads.head),
    FT_LAYOUT_OFF(interpreter_state, ceval_gil, PyInterpreterState, ceval.gil),
    FT_LAYOUT_OFF(interpreter_state, gil_runtime_state_locked, PyInterpreterState, _gil.locked),
    FT_LAYOUT_OFF(interpreter_state, gil_runtime_state_holder, PyInterpreterState,
                  _gil.last_holder),
    /* thread states: copied whole (ft_raw_tstate), then decoded */
    FT_LAYOUT_SIZE(thread_state, size, PyThreadState),
    FT_LAYOUT_OFF(thread_state, next, PyThreadState, next),
    FT_LAYOUT_OFF(thread_state, interp, PyThreadState, interp),
    FT_LAYOUT_OFF(thread_state, current_frame, PyThreadState, current_frame),
    FT_LAYOUT_OFF(thread_state, thread_id, PyThreadState, thread_id),
    FT_LAYOUT_OFF(thread_state, native_thread_id, PyThreadState, native_thread_id),
    FT_LAYOUT_OFF(thread_state, datastack_chunk, PyThreadState, datastack_chunk),
    /* frames (ft_raw_frame_decode; FT_RAW_FRAME_SIZE ends at owner) */
    FT_LAYOUT_OFF(interpreter_frame, previous, _PyInterpreterFrame, previous),
    FT_LAYOUT_OFF(interpreter_frame, executable, _PyInterpreterFrame, f_executable),
    FT_LAYOUT_OFF(interpreter_frame, instr_ptr, _PyInterpreterFrame, instr_ptr),
    FT_LAYOUT_OFF(interpreter_frame, owner, _PyInterpreterFrame, owner),
    /* code objects (ft_raw_code_decode; FT_RAW_CODE_SIZE is co_code_adaptive) */
    FT_LAYOUT_OFF(code_object, filename, PyCodeObject, co_filename),
    FT_LAYOUT_OFF(code_object, name, PyCodeObject, co_name),
    FT_LAYOUT_OFF(code_object, qualname, PyCodeObject, co_qualname),
    FT_LAYOUT_OFF(code_object, firstlineno, PyCodeObject, co_firstlineno),
    FT_LAYOUT_OFF(code_object, co_code_adaptive, PyCodeObject, co_code_adaptive),
    /* the type check of code objects and strs (ft_raw_is_code_type, ft_raw_str_layout) */
    FT_LAYOUT_OFF(pyobject, ob_type, PyObject, ob_type),
    /* strs (ft_raw_str_layout: where the characters start) */
    FT_LAYOUT_OFF(unicode_object, state, PyASCIIObject, state),
    FT_LAYOUT_OFF(unicode_object, length, PyASCIIObject, length),
    FT_LAYOUT_SIZE(unicode_object, asciiobject_size, PyASCIIObject),
#if PY_VERSION_HEX >= 0x030F0000 /* 3.13 and 3.14 describe no such entry */
    FT_LAYOUT_SIZE(unicode_object, compactunicodeobject_size, PyCompactUnicodeObject),
#endif
};
#define FT_LAYOUT_N_CHECKS (sizeof ft_layout_checks / sizeof ft_layout_checks[0])

/* GIL held.  A copy of the running interpreter's description (see above: always in bounds). */
static inline void
ft_raw_debug_offsets_copy(ft_debug_offsets* out)
{
    memcpy(out, &_PyRuntime.debug_offsets, sizeof *out);
}
#else
#define FT_HAVE_DEBUG_OFFSETS 0 /* before 3.13 the interpreter does not describe its layout */
#endif
#endif /* FT_COMPAT_SAMPLER */

#endif /* FT_COMPAT_H */

/* ft_hooks.c: what runs on every call and return.
 *
 * The hot path of an event: one TLS generation compare, one tick read, a co_extra word read
 * (or a table probe for C functions), a bounds compare, a few byte stores and a shadow-stack
 * store.  No locks, no Python allocations, no exceptions.  The slow paths (first event of a
 * thread, first sight of a function, a full chunk) live in ft_thread.c, ft_intern.c and
 * ft_session.c.
 */
#include "ft_hooks.h"

#include <pthread.h>
#include <string.h>

#include "ft_intern.h"
#include "ft_sampler.h"
#include "ft_session.h"
#include "ft_writer.h"
#include "ft_thread.h"

/* initial-exec: the TLS block is reached with one %fs-relative load instead of a call to
 * __tls_get_addr (memray does the same). */
#define FT_TLS __thread __attribute__((tls_model("initial-exec")))

static FT_TLS uint32_t tls_gen;
static FT_TLS ft_thread* tls_thread;
static FT_TLS int tls_lost; /* this thread's ring could not be allocated in session tls_gen */

static pthread_key_t g_exit_key;
static int g_ready;
static PyObject* g_threading_active; /* strong */
static PyObject* g_disable;          /* strong */
static PyObject* g_marker;           /* strong */

/* ---- per-thread state ------------------------------------------------------------------ */

static void
on_thread_exit(void* value)
{
    uintptr_t v = (uintptr_t)value;
    ft_session_thread_exit((uint32_t)(v >> 32), (uint32_t)v);
}

static int try_name(ft_thread* t);

static ft_thread*
attach_slow(void)
{
    uint32_t gen = atomic_load_explicit(&ft_active_gen, memory_order_relaxed);
    if (gen == FT_GEN_NONE) {
        return NULL;
    }
    /* Cache the generation first: if attaching fails the thread stays untraced instead of
     * retrying on every event. */
    tls_gen = gen;
    tls_thread = NULL;
    ft_py_err_state err;
    ft_py_err_save(&err);
    ft_thread* t = ft_session_attach_thread(PyThread_get_thread_ident(),
                                            PyThread_get_thread_native_id(), NULL);
    tls_lost = t == NULL;
    if (t != NULL) {
        /* The key holds (generation, id) as an integer, never a pointer, so a late exit of a
         * thread from an earlier session cannot reach freed memory. */
        pthread_setspecific(g_exit_key, (void*)(((uintptr_t)gen << 32) | t->id));
        if (try_name(t)) {
            ft_thread_named(t);
        }
    }
    ft_py_err_restore(&err);
    tls_thread = t;
    return t;
}

static inline ft_thread*
current_thread(void)
{
    if (FT_LIKELY(tls_gen == atomic_load_explicit(&ft_active_gen, memory_order_relaxed))) {
        return tls_thread;
    }
    return attach_slow();
}

/* An event current_thread() had no buffer for.  If the session is running, the thread's ring
 * could not be allocated: count the event as lost, so that nothing is lost silently. */
static void
note_untraced(void)
{
    if (tls_lost && tls_gen == atomic_load_explicit(&ft_active_gen, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&ft_S.lost_events, 1, memory_order_relaxed);
    }
}

/* ---- fasttrace's own code ---------------------------------------------------------------- */

/* ft_intern.c calls this when the code being interned is fasttrace's own (start(), stop()):
 * the event about to be emitted, and everything under it, is not recorded. */
static void
mute_own_code(void)
{
    if (tls_thread != NULL &&
        tls_gen == atomic_load_explicit(&ft_active_gen, memory_order_relaxed)) {
        ft_thread_mute(tls_thread, 0);
    }
}

/* Looks the thread's name up in threading._active and records it (ft_thread_try_name). */
static int
try_name(ft_thread* t)
{
    if (g_threading_active == NULL || !PyDict_Check(g_threading_active)) {
        return 1;
    }
    int done = 0;
    ft_py_err_state err;
    ft_py_err_save(&err);
    PyObject* key = PyLong_FromUnsignedLongLong(t->ident);
    PyObject* thread = key ? PyDict_GetItemWithError(g_threading_active, key) : NULL; /* borrowed */
    Py_XDECREF(key);
    if (thread != NULL) {
        /* Read Thread._name from the instance dict: no property or __getattr__ of the
         * application can run inside the hook. */
        PyObject* dict = PyObject_GenericGetDict(thread, NULL); /* new */
        PyObject* name = dict ? PyDict_GetItemString(dict, "_name") : NULL; /* borrowed */
        const char* utf8 = (name && PyUnicode_Check(name)) ? PyUnicode_AsUTF8(name) : NULL;
        if (utf8 != NULL) {
            ft_session_name_thread(t, utf8);
            done = 1;
        }
        Py_XDECREF(dict);
    }
    ft_py_err_restore(&err);
    return done;
}

/* ---- record emitters ------------------------------------------------------------------- */

static inline uint64_t
tick_after(ft_thread* t)
{
    uint64_t now = ft_ticks();
    /* A thread that migrates between cores must not see time go back. */
    return FT_LIKELY(now >= t->last_tick) ? now : t->last_tick;
}

/* A call at depth >= depth_limit (ft_thread.h): 1 if it is dealt with (pending under
 * min_duration), 0 if the ordinary path goes on (past max_depth it was just muted, and that
 * path skips it, as it does fasttrace's own code). */
static int __attribute__((noinline))
enter_scoped(ft_thread* t, uint8_t tag, uint32_t fid, uint64_t now)
{
    if (t->depth >= t->max_depth) {
        ft_thread_mute(t, 0);
        return 0;
    }
    if (t->min_ticks == 0 || t->muted || t->mute_next) {
        return 0;
    }
    if (FT_UNLIKELY(t->name_pending)) {
        ft_thread_unwritten_event(t);
    }
    if (t->depth >= FT_MAX_DEPTH) {
        t->excess++;
        return 1;
    }
    t->stack[t->depth] = fid;
    t->enter_ticks[t->depth] = now << 1 | (tag == FT_REC_C_CALL);
    t->depth++;
    return 1;
}

/* min_duration: a return (of the frame at depth - 1, if any).  1 if it is dealt with (a
 * pending call shorter than min_duration: nothing is written); 0 if the ordinary path writes
 * it (after the pending calls it needs were written). */
static int __attribute__((noinline))
exit_pending(ft_thread* t, uint64_t now)
{
    if (t->muted || t->mute_next || t->depth == 0) {
        return 0; /* a muted region, or an orphan return: as always */
    }
    if (t->excess > 0) {
        t->excess--;
        return 1;
    }
    uint32_t i = t->depth - 1;
    if (i < t->written) {
        return 0;
    }
    if (now - (t->enter_ticks[i] >> 1) < t->min_ticks) {
        t->depth = i; /* never written: its time stays in its caller's self time */
        return 1;
    }
    ft_thread_flush_pending(t, i + 1);
    return 0;
}

static inline void
emit_enter(ft_thread* t, uint8_t tag, uint32_t fid)
{
    uint64_t now = tick_after(t);
    int room = FT_ROOM_WRITE;
    if (FT_UNLIKELY(t->depth >= t->depth_limit) && enter_scoped(t, tag, fid, now)) {
        return;
    }
    if (FT_UNLIKELY(t->pos > t->limit)) {
        room = ft_thread_make_room(t, now, 1);
        if (room == FT_ROOM_SKIP) {
            return; /* fasttrace's own frame, or one past max_depth */
        }
    }
    if (FT_UNLIKELY(room == FT_ROOM_DROP)) {
        t->dropped++;
    }
    else {
        uint8_t* p = t->pos;
        *p++ = tag;
        p = ft_put_varint(p, fid);
        p = ft_put_varint(p, now - t->last_tick);
        t->pos = p;
        t->last_tick = now;
        t->records++;
    }
    if (FT_LIKELY(t->depth < FT_MAX_DEPTH)) {
        t->stack[t->depth++] = fid;
    }
    else {
        t->excess++;
    }
}

/* `orphan_fid` is nonzero only when nothing is open (then `tag` is an ORPHAN_* tag). */
static inline void
emit_exit_written(ft_thread* t, uint8_t tag, uint32_t orphan_fid, uint64_t now)
{
    int room = FT_ROOM_WRITE;
    if (FT_UNLIKELY(t->pos > t->limit)) {
        room = ft_thread_make_room(t, now, 0);
        if (room == FT_ROOM_SKIP) {
            return;
        }
    }
    if (FT_UNLIKELY(room == FT_ROOM_DROP)) {
        t->dropped++;
    }
    else {
        uint8_t* p = t->pos;
        *p++ = tag;
        if (FT_UNLIKELY(orphan_fid != 0)) {
            p = ft_put_varint(p, orphan_fid);
        }
        p = ft_put_varint(p, now - t->last_tick);
        t->pos = p;
        t->last_tick = now;
        t->records++;
    }
    if (FT_UNLIKELY(t->excess > 0)) {
        t->excess--;
    }
    else if (FT_LIKELY(t->depth > 0)) {
        t->depth--;
    }
}

static inline void
emit_exit(ft_thread* t, uint8_t tag, uint32_t orphan_fid)
{
    uint64_t now = tick_after(t);
    if (FT_UNLIKELY(t->min_ticks != 0)) {
        if (exit_pending(t, now)) {
            return;
        }
        emit_exit_written(t, tag, orphan_fid, now);
        if (t->written > t->depth) {
            t->written = t->depth; /* the frame that returned was in the file */
        }
        return;
    }
    emit_exit_written(t, tag, orphan_fid, now);
}

static inline int
nothing_open(ft_thread* t)
{
    return t->depth == 0 && t->excess == 0;
}

static inline void
on_py_exit(ft_thread* t, PyCodeObject* co)
{
    if (FT_UNLIKELY(nothing_open(t))) {
        emit_exit(t, FT_REC_ORPHAN_RETURN, ft_intern_code(co));
    }
    else {
        emit_exit(t, FT_REC_RETURN, 0);
    }
}

static inline void
on_c_exit(ft_thread* t, PyObject* callable)
{
    if (FT_UNLIKELY(nothing_open(t))) {
        int muted = t->muted || t->mute_next; /* skipped as muted: no id needed */
        uint32_t fid = muted ? 0 : ft_intern_cfunc(callable);
        if (fid != 0 || muted) {
            emit_exit(t, FT_REC_ORPHAN_C_RETURN, fid);
        }
    }
    else {
        emit_exit(t, FT_REC_C_RETURN, 0);
    }
}

static inline int
is_c_function(PyObject* callable)
{
    return PyCFunction_Check(callable) || Py_IS_TYPE(callable, &PyMethodDescr_Type);
}

/* ---- the capture's scope (ft_intern.h) ------------------------------------------------- */

/* The id of code `co` for an event of thread *t (not NULL).  First sight of the code may
 * call the scope's Python predicate, which may let other threads run, and one of them stop
 * the trace: *t is looked up again (NULL: nothing to record).  FT_FID_OUT: out of scope. */
static inline uint32_t
code_fid(PyCodeObject* co, ft_thread** t)
{
    uintptr_t v = (uintptr_t)ft_py_code_extra_get(co, ft_code_extra_index);
    if (FT_LIKELY((v >> 32) == ft_S.gen)) {
        return (uint32_t)v;
    }
    uint32_t fid = ft_intern_code_slow(co);
    *t = current_thread();
    return fid;
}

/* Inside a muted region (fasttrace's own code and what it calls, or past max_depth).  A
 * muted thread's limit is below pos: one compare decides in the common case. */
static inline int
muted_now(const ft_thread* t)
{
    return FT_UNLIKELY(t->pos > t->limit) && (t->muted || t->mute_next);
}

/* As code_fid, for a C function (0: not one fasttrace records).  A C call made inside a
 * muted region returns inside it (and one made outside returns outside it): its call and
 * return are skipped as muted, and it is neither defined nor decided.  (Python code is still
 * decided there: on 3.12+ an out-of-scope function's PY_START is disabled everywhere once
 * decided, so its returns must be recognised as out of scope, muted or not.) */
static inline uint32_t
cfunc_fid(PyObject* callable, ft_thread** t)
{
    if (muted_now(*t)) {
        return 0;
    }
    uint32_t fid = ft_intern_cfunc(callable);
    if (FT_UNLIKELY(ft_scope_patterns)) {
        *t = current_thread(); /* the predicate may have run on first sight */
    }
    return fid;
}

/* At an exit, with a scope of patterns: whether the frame's code is out of scope (then its
 * call was not recorded either).  Own code is never interned here (that would mute). */
static int
code_out_at_exit(PyCodeObject* co, ft_thread** t)
{
    uintptr_t v = (uintptr_t)ft_py_code_extra_get(co, ft_code_extra_index);
    if (FT_LIKELY((v >> 32) == ft_S.gen)) {
        return (uint32_t)v == FT_FID_OUT;
    }
    if (ft_intern_is_own(co)) {
        return 0;
    }
    uint32_t fid = ft_intern_code_slow(co); /* a frame that began before the trace */
    *t = current_thread();
    return fid == FT_FID_OUT;
}

/* A Python frame's exit on thread t (not NULL): nothing if it is out of scope. */
static inline void
py_exit(ft_thread* t, PyCodeObject* co)
{
    if (FT_UNLIKELY(ft_scope_patterns) && (code_out_at_exit(co, &t) || t == NULL)) {
        return;
    }
    on_py_exit(t, co);
}

/* A C function's exit on thread t (not NULL): nothing if it is out of scope. */
static inline void
c_exit(ft_thread* t, PyObject* callable)
{
    if (FT_UNLIKELY(ft_scope_patterns) &&
        (cfunc_fid(callable, &t) == FT_FID_OUT || t == NULL)) {
        return;
    }
    on_c_exit(t, callable);
}

#if FT_USE_MONITORING
/* ---- sys.monitoring callbacks (3.12+) --------------------------------------------------- */
/* Each returns a new reference: None, or DISABLE to stop CALL events at a call site. */

/* PY_START, PY_RESUME (disable: 1) and PY_THROW (0: not a local event, which CPython
 * refuses to disable).  Out of scope, a local event is disabled for this tool at this code
 * location until restart_events() (the next start): the function then runs unhooked. */
static inline PyObject*
mon_enter_impl(PyObject* const* args, Py_ssize_t nargs, int disable)
{
    ft_thread* t = current_thread();
    if (FT_LIKELY(t != NULL && nargs >= 1)) {
        uint32_t fid = code_fid((PyCodeObject*)args[0], &t);
        if (FT_UNLIKELY(fid == FT_FID_OUT)) {
            if (disable) {
                Py_INCREF(g_disable);
                return g_disable;
            }
        }
        else if (FT_LIKELY(t != NULL)) {
            emit_enter(t, FT_REC_CALL, fid);
        }
    }
    else if (t == NULL) {
        note_untraced();
    }
    Py_RETURN_NONE;
}

static PyObject*
mon_enter(PyObject* self, PyObject* const* args, Py_ssize_t nargs)
{
    (void)self;
    return mon_enter_impl(args, nargs, 1);
}

static PyObject*
mon_throw(PyObject* self, PyObject* const* args, Py_ssize_t nargs)
{
    (void)self;
    return mon_enter_impl(args, nargs, 0);
}

/* PY_RETURN, PY_YIELD (disable: 1) and PY_UNWIND (0: not a local event). */
static inline PyObject*
mon_exit_impl(PyObject* const* args, Py_ssize_t nargs, int disable)
{
    ft_thread* t = current_thread();
    if (FT_LIKELY(t != NULL && nargs >= 1)) {
        PyCodeObject* co = (PyCodeObject*)args[0];
        if (FT_UNLIKELY(ft_scope_patterns)) {
            if (code_out_at_exit(co, &t)) {
                if (disable) {
                    Py_INCREF(g_disable);
                    return g_disable;
                }
                Py_RETURN_NONE;
            }
            if (t == NULL) {
                Py_RETURN_NONE;
            }
        }
        on_py_exit(t, co);
    }
    else if (t == NULL) {
        note_untraced();
    }
    Py_RETURN_NONE;
}

static PyObject*
mon_exit(PyObject* self, PyObject* const* args, Py_ssize_t nargs)
{
    (void)self;
    return mon_exit_impl(args, nargs, 1);
}

static PyObject*
mon_unwind(PyObject* self, PyObject* const* args, Py_ssize_t nargs)
{
    (void)self;
    return mon_exit_impl(args, nargs, 0);
}

static PyObject*
mon_call(PyObject* self, PyObject* const* args, Py_ssize_t nargs)
{
    (void)self;
    if (FT_UNLIKELY(nargs < 3)) {
        Py_RETURN_NONE;
    }
    PyObject* callable = args[2];
    if (is_c_function(callable)) {
        ft_thread* t = current_thread();
        if (FT_LIKELY(t != NULL)) {
            uint32_t fid = cfunc_fid(callable, &t);
            if (FT_UNLIKELY(fid == FT_FID_OUT)) {
                /* Out of scope: this site stops paying for its CALL events (the caveat
                 * below applies: a later in-scope C callee of this site is missed). */
                Py_INCREF(g_disable);
                return g_disable;
            }
            if (FT_LIKELY(t != NULL)) {
                emit_enter(t, FT_REC_C_CALL, fid);
            }
        }
        else {
            note_untraced();
        }
        Py_RETURN_NONE;
    }
    /* A site that calls a Python function, a bound method or a class almost always does so
     * on every call: stop paying for its CALL events.  A site that later calls a C function
     * misses it (documented in FORMAT.md); restart_events() at the next start re-arms it. */
    if (PyFunction_Check(callable) || PyMethod_Check(callable) || PyType_Check(callable)) {
        Py_INCREF(g_disable);
        return g_disable;
    }
    Py_RETURN_NONE;
}

/* C_RETURN, C_RAISE: never disabled (CPython refuses; they follow CALL). */
static PyObject*
mon_c_exit(PyObject* self, PyObject* const* args, Py_ssize_t nargs)
{
    (void)self;
    if (FT_LIKELY(nargs >= 3) && is_c_function(args[2])) {
        ft_thread* t = current_thread();
        if (FT_LIKELY(t != NULL)) {
            c_exit(t, args[2]);
        }
        else {
            note_untraced();
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef g_mon_defs[] = {
    {"fasttrace_enter", (PyCFunction)(void (*)(void))mon_enter, METH_FASTCALL, NULL},
    {"fasttrace_exit", (PyCFunction)(void (*)(void))mon_exit, METH_FASTCALL, NULL},
    {"fasttrace_call", (PyCFunction)(void (*)(void))mon_call, METH_FASTCALL, NULL},
    {"fasttrace_c_exit", (PyCFunction)(void (*)(void))mon_c_exit, METH_FASTCALL, NULL},
    {"fasttrace_throw", (PyCFunction)(void (*)(void))mon_throw, METH_FASTCALL, NULL},
    {"fasttrace_unwind", (PyCFunction)(void (*)(void))mon_unwind, METH_FASTCALL, NULL},
};

PyObject*
ft_hooks_monitoring_callbacks(void)
{
    PyObject* out = PyTuple_New(6);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < 6; i++) {
        PyObject* f = PyCFunction_New(&g_mon_defs[i], NULL);
        if (f == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, f); /* steals f */
    }
    return out;
}

#else
/* ---- legacy profile function (3.9-3.11) ------------------------------------------------- */

static int
legacy_profile(PyObject* obj, PyFrameObject* frame, int what, PyObject* arg)
{
    (void)obj;
    ft_thread* t = current_thread();
    if (FT_UNLIKELY(t == NULL)) {
        note_untraced();
        return 0;
    }
    switch (what) {
    case PyTrace_CALL: {
        uint32_t fid = code_fid(ft_py_frame_code(frame), &t);
        if (FT_LIKELY(fid != FT_FID_OUT && t != NULL)) {
            emit_enter(t, FT_REC_CALL, fid);
        }
        break;
    }
    case PyTrace_RETURN:
        py_exit(t, ft_py_frame_code(frame));
        break;
    case PyTrace_C_CALL:
        if (ft_S.c_calls && is_c_function(arg)) {
            uint32_t fid = cfunc_fid(arg, &t);
            if (FT_LIKELY(fid != FT_FID_OUT && t != NULL)) {
                emit_enter(t, FT_REC_C_CALL, fid);
            }
        }
        break;
    case PyTrace_C_RETURN:
    case PyTrace_C_EXCEPTION:
        if (ft_S.c_calls && is_c_function(arg)) {
            c_exit(t, arg);
        }
        break;
    default:
        break;
    }
    return 0;
}

void
ft_hooks_install_legacy(void)
{
    PyThreadState* ts = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(
        PyThreadState_Get()));
    for (; ts != NULL; ts = PyThreadState_Next(ts)) {
        if (_PyEval_SetProfile(ts, legacy_profile, g_marker) < 0) {
            PyErr_Clear(); /* an audit hook said no: that thread stays untraced */
        }
    }
}

void
ft_hooks_remove_legacy(void)
{
    PyThreadState* ts = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(
        PyThreadState_Get()));
    for (; ts != NULL; ts = PyThreadState_Next(ts)) {
        if (ft_py_tstate_profilefunc(ts) == legacy_profile &&
            _PyEval_SetProfile(ts, NULL, NULL) < 0) {
            PyErr_Clear();
        }
    }
}

void
ft_hooks_install_legacy_current(void)
{
    if (atomic_load_explicit(&ft_active_gen, memory_order_relaxed) != FT_GEN_NONE &&
        !ft_py_tstate_has_profile(PyThreadState_Get())) {
        PyEval_SetProfile(legacy_profile, g_marker);
        PyErr_Clear(); /* an audit hook said no: this thread stays untraced */
    }
}

/* A thread we follow whose profile function is no longer ours: sys.setprofile(),
 * cProfile.enable() or another profiler replaced it (or removed it) on that thread.  Its
 * last record is where the gap begins.  GIL held. */
/* Whether another thread state than `ts` has its ident and our hook.  A thread being started
 * has a state before it runs, and until then (3.9-3.11) the state carries the ident of the
 * thread that starts it: that state is not a thread that lost its hook. */
static int
ident_taken_by_ours(PyInterpreterState* interp, PyThreadState* ts)
{
    uint64_t ident = ft_py_tstate_ident(ts);
    for (PyThreadState* o = PyInterpreterState_ThreadHead(interp); o != NULL;
         o = PyThreadState_Next(o)) {
        if (o != ts && ft_py_tstate_ident(o) == ident &&
            ft_py_tstate_profilefunc(o) == legacy_profile) {
            return 1;
        }
    }
    return 0;
}

static void
check_legacy_hooks(void)
{
    PyInterpreterState* interp = PyThreadState_GetInterpreter(PyThreadState_Get());
    PyThreadState* ts = PyInterpreterState_ThreadHead(interp);
    for (; ts != NULL; ts = PyThreadState_Next(ts)) {
        if (ft_py_tstate_profilefunc(ts) == legacy_profile || ident_taken_by_ours(interp, ts)) {
            continue;
        }
        /* A thread that has not had its first event yet has no buffer: nothing to lose. */
        ft_thread* t = ft_session_find_thread(ft_py_tstate_ident(ts));
        if (t != NULL && !t->hook_lost) {
            ft_session_hook_lost(t, ft_py_tstate_profilefunc(ts) == NULL
                                        ? "its profile function was removed (sys.setprofile)"
                                        : "another profile function replaced fasttrace's "
                                          "(sys.setprofile, cProfile or another profiler)");
        }
    }
}

/* Audit hook: "sys.setprofile" is raised by every change of a thread's profile function
 * (sys.setprofile, threading's bootstrap, cProfile.enable, PyEval_SetProfile), on the thread
 * that makes it, before the change.  A thread we follow that changes it was not changed by us
 * (we install ours on threads before their first event, or while the trace is quiesced): its
 * hook is about to be replaced.  This catches threads that end before the next check.  Cheap
 * for every other audit event: one string compare. */
static int
audit_hook(const char* event, PyObject* args, void* data)
{
    (void)args;
    (void)data;
    if (ft_S.hook == FT_HOOK_PROFILE && strcmp(event, "sys.setprofile") == 0 &&
        tls_thread != NULL &&
        tls_gen == atomic_load_explicit(&ft_active_gen, memory_order_relaxed) &&
        !tls_thread->hook_lost) {
        ft_session_hook_lost(tls_thread, "its profile function was replaced or removed "
                                         "(sys.setprofile, cProfile or another profiler)");
    }
    return 0;
}

/* threading.setprofile() target: (frame, event, arg).  Installs the C hook on this new
 * thread and hands it the event that woke us. */
static PyObject*
legacy_bootstrap(PyObject* self, PyObject* args)
{
    (void)self;
    PyObject *frame, *arg;
    const char* event;
    if (!PyArg_ParseTuple(args, "OsO", &frame, &event, &arg)) {
        return NULL;
    }
    PyEval_SetProfile(legacy_profile, g_marker);
    int what = -1;
    if (strcmp(event, "call") == 0) {
        what = PyTrace_CALL;
    }
    else if (strcmp(event, "return") == 0) {
        what = PyTrace_RETURN;
    }
    else if (strcmp(event, "c_call") == 0) {
        what = PyTrace_C_CALL;
    }
    else if (strcmp(event, "c_return") == 0) {
        what = PyTrace_C_RETURN;
    }
    else if (strcmp(event, "c_exception") == 0) {
        what = PyTrace_C_EXCEPTION;
    }
    if (what >= 0 && PyFrame_Check(frame)) {
        legacy_profile(NULL, (PyFrameObject*)frame, what, arg);
    }
    Py_RETURN_NONE;
}

static PyMethodDef g_bootstrap_def = {"fasttrace_bootstrap", legacy_bootstrap, METH_VARARGS,
                                      NULL};

PyObject*
ft_hooks_legacy_bootstrap(void)
{
    return PyCFunction_New(&g_bootstrap_def, NULL);
}
#endif

#if FT_USE_EVAL_FRAME
/* ---- PEP 523 frame evaluation (3.11, 3.12; c_calls=False) -------------------------------- */

#if FT_USE_MONITORING
#define FT_PLAIN_HOOK_NAME "monitoring"
#else
#define FT_PLAIN_HOOK_NAME "profile"
#endif

/* Every Python frame, and every resume of a generator or coroutine, runs through here; an
 * exit by return, yield or exception comes back through here too.  Frames that were already
 * running at start() never do, so this mode records no start-up stack. */
/* With a frame evaluator installed, CPython no longer runs a Python call inside its caller's
 * C frame: every Python call nests a C call of the evaluator, so a recursion that plain
 * Python runs in a few MB of its own frames runs out of the thread's C stack.  Before the
 * stack is gone (a crash), the call raises RecursionError. */
#define FT_STACK_MARGIN (256u * 1024u)
static FT_TLS uintptr_t tls_stack_low; /* lowest safe address; 0 until known */

static uintptr_t
stack_low_slow(void)
{
    pthread_attr_t attr;
    void* addr;
    size_t size;
    uintptr_t low = 1; /* unknown: never "nearly full" */
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
            low = (uintptr_t)addr + FT_STACK_MARGIN;
        }
        pthread_attr_destroy(&attr);
    }
    tls_stack_low = low;
    return low;
}

static inline int
stack_nearly_full(void)
{
    char here;
    uintptr_t low = tls_stack_low;
    if (FT_UNLIKELY(low == 0)) {
        low = stack_low_slow();
    }
    return FT_UNLIKELY((uintptr_t)&here < low);
}

static PyObject*
eval_frame(PyThreadState* ts, ft_py_iframe* frame, int throwflag)
{
    if (FT_UNLIKELY(ft_py_iframe_creates_generator(frame))) {
        return _PyEval_EvalFrameDefault(ts, frame, throwflag);
    }
    if (stack_nearly_full()) {
        /* Raised into the frame as gen.throw() does into a new generator: the evaluator
         * unwinds it and pops it, so nothing leaks. */
        PyErr_SetString(PyExc_RecursionError,
                        "maximum recursion depth exceeded: with c_calls=False fasttrace's frame "
                        "evaluator uses C stack for every Python call (FASTTRACE_HOOK="
                        FT_PLAIN_HOOK_NAME " traces this program without it)");
        return _PyEval_EvalFrameDefault(ts, frame, 1);
    }
    PyCodeObject* co = ft_py_iframe_code(frame); /* the frame holds it until its caller pops it */
    ft_thread* t = current_thread();
    if (FT_LIKELY(t != NULL)) {
        if (FT_UNLIKELY(ft_scope_deciding)) {
            return _PyEval_EvalFrameDefault(ts, frame, throwflag); /* the scope's predicate */
        }
        uint32_t fid = code_fid(co, &t);
        if (FT_UNLIKELY(fid == FT_FID_OUT)) {
            return _PyEval_EvalFrameDefault(ts, frame, throwflag); /* out of scope */
        }
        if (FT_LIKELY(t != NULL)) {
            emit_enter(t, FT_REC_CALL, fid);
        }
    }
    else {
        note_untraced();
    }
    PyObject* result = _PyEval_EvalFrameDefault(ts, frame, throwflag);
    /* Look the thread up again: the trace may have stopped, or stopped and started again,
     * inside this frame.  In a new session nothing of this frame is open, so its exit is an
     * orphan return with an id of that session, exactly as the other hooks record it. */
    t = current_thread();
    if (FT_LIKELY(t != NULL)) {
        py_exit(t, co);
    }
    else {
        note_untraced();
    }
    return result;
}

int
ft_hooks_eval_frame_taken(void)
{
    return _PyInterpreterState_GetEvalFrameFunc(PyInterpreterState_Get()) !=
           _PyEval_EvalFrameDefault;
}

static void
lose_eval_frame(ft_thread* t, void* arg)
{
    (void)arg;
    if (!t->hook_lost) {
        ft_session_hook_lost(t, "another tool (a debugger or a JIT) replaced fasttrace's "
                                "frame evaluator (PEP 523)");
    }
}

static int g_eval_frame_installed;

int
ft_hooks_install_eval_frame(void)
{
    PyInterpreterState* interp = PyInterpreterState_Get();
    if (ft_hooks_eval_frame_taken()) {
        return -1;
    }
    _PyInterpreterState_SetEvalFrameFunc(interp, eval_frame);
    g_eval_frame_installed = 1;
    return 0;
}

void
ft_hooks_remove_eval_frame(void)
{
    PyInterpreterState* interp = PyInterpreterState_Get();
    if (_PyInterpreterState_GetEvalFrameFunc(interp) == eval_frame) {
        _PyInterpreterState_SetEvalFrameFunc(interp, _PyEval_EvalFrameDefault);
    }
    g_eval_frame_installed = 0;
}

static void
check_eval_frame(void)
{
    if (g_eval_frame_installed &&
        _PyInterpreterState_GetEvalFrameFunc(PyInterpreterState_Get()) != eval_frame) {
        ft_session_each_thread(lose_eval_frame, NULL);
    }
}
#else
static void
check_eval_frame(void)
{
}

int
ft_hooks_eval_frame_taken(void)
{
    return 0;
}

int
ft_hooks_install_eval_frame(void)
{
    return -2;
}

void
ft_hooks_remove_eval_frame(void)
{
}
#endif

/* ---- another tool took the hook ----------------------------------------------------------- */

void
ft_hooks_check(void)
{
    if (atomic_load_explicit(&ft_active_gen, memory_order_relaxed) == FT_GEN_NONE) {
        return;
    }
#if !FT_USE_MONITORING
    if (ft_S.hook == FT_HOOK_PROFILE) {
        check_legacy_hooks();
    }
#endif
    check_eval_frame();
}

static void
lose_all(ft_thread* t, void* what)
{
    if (!t->hook_lost) {
        ft_session_hook_lost(t, (const char*)what);
    }
}

void
ft_hooks_lose_all(const char* what)
{
    ft_session_each_thread(lose_all, (void*)what);
}

/* ---- set-up ----------------------------------------------------------------------------- */

/* In a forked child the writer thread is gone and the session's locks may be held by threads
 * that no longer exist: stop recording before any Python code (after-fork hooks included) can
 * reach a slow path that would take one.  fasttrace/_recorder.py then abandons the session. */
static void
on_fork_child(void)
{
    atomic_store(&ft_active_gen, FT_GEN_NONE);
}

static void
on_fork_prepare(void)
{
    ft_writer_fork_prepare();
}

static void
on_fork_parent(void)
{
    ft_writer_fork_parent();
}

/* Py_AtExit: the sampler (if any) first, so that its last chunk goes out with the rest. */
static void
at_exit(void)
{
    if (ft_S.running) {
        ft_sampler_stats unused;
        ft_sampler_stop(&unused);
    }
    ft_session_at_exit();
}

int
ft_hooks_init(void)
{
    if (g_ready) {
        return 0;
    }
    if (!ft_intern_init()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "fasttrace: no free co_extra slot (too many tools use code extras)");
        return -1;
    }
    if (pthread_key_create(&g_exit_key, on_thread_exit) != 0 ||
        pthread_atfork(on_fork_prepare, on_fork_parent, on_fork_child) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "fasttrace: pthread_key_create/atfork failed");
        return -1;
    }
    /* After the interpreter is gone: a trace started too late for atexit is still saved. */
    if (Py_AtExit(at_exit) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "fasttrace: no room for a Py_AtExit function");
        return -1;
    }
    ft_intern_set_own_code_callback(mute_own_code);
    ft_thread_on_handoff = ft_hooks_check;
    ft_thread_try_name = try_name;
#if !FT_USE_MONITORING
    if (PySys_AddAuditHook(audit_hook, NULL) < 0) {
        return -1; /* another audit hook refused it: the exception says so */
    }
#endif
    g_ready = 1;
    return 0;
}

void
ft_hooks_retain(PyObject* threading_active, PyObject* disable, PyObject* marker)
{
    Py_XINCREF(threading_active);
    Py_XINCREF(disable);
    Py_XINCREF(marker);
    ft_hooks_release();
    g_threading_active = threading_active;
    g_disable = disable;
    g_marker = marker;
}

void
ft_hooks_release(void)
{
    Py_CLEAR(g_threading_active);
    Py_CLEAR(g_disable);
    Py_CLEAR(g_marker);
}

unsigned long
ft_hooks_find_profiled_thread(void)
{
    PyThreadState* ts = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(
        PyThreadState_Get()));
    for (; ts != NULL; ts = PyThreadState_Next(ts)) {
        if (ft_py_tstate_has_profile(ts)) {
            return ft_py_tstate_ident(ts);
        }
    }
    return 0;
}

/* The open frames of every thread, as the trace's starting stacks.  Frames of fasttrace's own
 * code, and everything they called, are muted as they would be had the trace seen them start:
 *   - on the calling thread, its innermost own frames (start() itself) or, with skip_current,
 *     all of its frames (fasttrace run's runner, a request thread of fasttrace.http, which
 *     waits in fasttrace's code for the whole capture);
 *   - on any other thread, everything from its outermost own frame in: the threads of
 *     fasttrace.http's server, whose entry function is fasttrace's, are left out whole, and a
 *     thread waiting in fasttrace's code (a flight dump, an ASGI request of fasttrace.http
 *     suspended elsewhere) keeps only the program's frames around it. */
void
ft_hooks_snapshot_threads(int skip_current)
{
    PyThreadState* self = PyThreadState_Get();
    PyThreadState* ts = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(self));
    uint32_t cap = 256, depth, muted;
    uint32_t* fids = PyMem_RawMalloc(cap * sizeof *fids);
    PyCodeObject** codes = PyMem_RawMalloc(cap * sizeof *codes); /* borrowed while walked */
    if (fids == NULL || codes == NULL) {
        PyMem_RawFree(fids);
        PyMem_RawFree(codes);
        return;
    }
    for (; ts != NULL; ts = PyThreadState_Next(ts)) {
        /* 1. the code objects, innermost first; 2. how many innermost ones are muted;
         * 3. the rest interned (own code is never interned: ft_intern_code would take it for
         * the calling thread's own call and mute that). */
        uint32_t n = 0, own_end = 0; /* frames [0, own_end) are muted */
        int leading_own = ts == self; /* start()'s own frames sit on top of the caller's */
        PyFrameObject* frame = ft_py_tstate_frame(ts); /* new reference */
        while (frame != NULL && n < FT_MAX_DEPTH) {
            if (n == cap) {
                uint32_t* grown = PyMem_RawRealloc(fids, 2 * cap * sizeof *fids);
                PyCodeObject** grown_codes =
                    grown == NULL ? NULL : PyMem_RawRealloc(codes, 2 * cap * sizeof *codes);
                if (grown != NULL) {
                    fids = grown;
                }
                if (grown_codes == NULL) {
                    break;
                }
                codes = grown_codes;
                cap *= 2;
            }
            /* The frame's code stays alive while its thread state holds the frame, and no
             * Python code runs in this loop to pop it. */
            PyCodeObject* co = ft_py_frame_code(frame);
            /* held: deciding the scope of a code below may run Python, and other threads */
            Py_INCREF(co);
            codes[n++] = co;
            int own = ft_intern_is_own(co);
            if (ts == self) {
                if (skip_current || (leading_own && own)) {
                    own_end = n;
                }
                else {
                    leading_own = 0;
                }
            }
            else if (own) {
                own_end = n; /* the outermost own frame seen so far */
            }
            PyFrameObject* back = PyFrame_GetBack(frame); /* new reference */
            Py_DECREF(frame);
            frame = back;
        }
        Py_XDECREF(frame);
        /* The muted frames are counted by their returns; with include/exclude an out-of-scope
         * frame's return never reaches the count (the scope check skips it first): count only
         * own and in-scope frames, or the muted region would never end. */
        muted = 0;
        for (uint32_t i = 0; i < own_end; i++) {
            muted += !ft_scope_patterns || ft_intern_is_own(codes[i]) ||
                     ft_intern_code(codes[i]) != FT_FID_OUT;
        }
        depth = 0;
        for (uint32_t i = own_end; i < n; i++) {
            uint32_t fid = ft_intern_is_own(codes[i]) ? 0 : ft_intern_code(codes[i]);
            if (fid != FT_FID_OUT) { /* out of scope: not in the trace, nor its return */
                fids[depth++] = fid;
            }
        }
        for (uint32_t i = 0; i < n; i++) {
            Py_DECREF(codes[i]);
        }
        if (depth > ft_thread_max_depth) {
            /* max_depth: the innermost frames past it are muted, as if called in the trace */
            uint32_t cut = depth - ft_thread_max_depth;
            memmove(fids, fids + cut, (size_t)ft_thread_max_depth * sizeof *fids);
            muted += cut;
            depth = ft_thread_max_depth;
        }
        ft_session_add_snapshot(ft_py_tstate_ident(ts), fids, depth, muted);
    }
    PyMem_RawFree(fids);
    PyMem_RawFree(codes);
}

void
ft_hooks_mute_returns(uint32_t returns)
{
    if (returns == 0 || atomic_load_explicit(&ft_active_gen, memory_order_relaxed) == FT_GEN_NONE ||
        ft_S.mode != FT_MODE_TRACE) {
        return;
    }
    ft_thread* t = current_thread();
    if (t != NULL) {
        ft_thread_mute(t, returns);
    }
}

static PyObject*
run_unmuted_builtin(PyObject* self, PyObject* const* args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 2 || !PyCode_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "run_unmuted(code, globals: dict)");
        return NULL;
    }
    return ft_hooks_run_unmuted(args[0], args[1]);
}

static PyMethodDef g_run_unmuted_def = {
    "run_unmuted", (PyCFunction)(void (*)(void))run_unmuted_builtin, METH_FASTCALL,
    "run_unmuted(code, globals): exec() that records the program although the caller's "
    "frames are muted (fasttrace run).  A plain builtin: no frame of its own appears in the "
    "program's tracebacks."};

PyObject*
ft_hooks_run_unmuted_function(void)
{
    return PyCFunction_New(&g_run_unmuted_def, NULL);
}

PyObject*
ft_hooks_run_unmuted(PyObject* code, PyObject* globals)
{
    uint32_t gen = atomic_load_explicit(&ft_active_gen, memory_order_relaxed);
    ft_thread* t = gen != FT_GEN_NONE && ft_S.mode == FT_MODE_TRACE ? current_thread() : NULL;
    uint32_t saved = t != NULL ? ft_thread_set_muted(t, 0) : 0;
    PyObject* result = PyEval_EvalCode(code, globals, globals); /* new reference, or NULL */
    /* The program may have stopped this trace and started another: leave that one alone. */
    if (t != NULL && tls_thread == t && tls_gen == gen &&
        atomic_load_explicit(&ft_active_gen, memory_order_relaxed) == gen) {
        ft_thread_set_muted(t, saved);
    }
    return result;
}

/* ft_spawn.c: the thread-starter wrapper (see ft_spawn.h). */
#include "ft_spawn.h"

#include "ft_hooks.h"
#include "ft_sampler.h"

/* What the new thread runs instead of `function` (its self, borrowed from the PyCFunction):
 * the hook first, then the function. */
static PyObject*
boot_call(PyObject* function, PyObject* args, PyObject* kwargs)
{
    ft_hooks_install_legacy_current();
    return PyObject_Call(function, args, kwargs); /* new reference, or NULL */
}

static PyMethodDef g_boot_def = {"fasttrace_thread_boot", (PyCFunction)(void (*)(void))boot_call,
                                 METH_VARARGS | METH_KEYWORDS, NULL};

/* The wrapper's state, its `self`.  A type of its own, named "_thread", so that trace mode,
 * which names a C method "<type of self>.<name>", records the wrapper as the
 * "_thread.start_new_thread" it stands for. */
typedef struct {
    PyObject_HEAD
    PyObject* original;     /* strong */
    PyObject* thread_class; /* strong: threading.Thread, or None */
    int install;
} spawn_state;

static int
spawn_traverse(PyObject* op, visitproc visit, void* arg)
{
    spawn_state* st = (spawn_state*)op;
    Py_VISIT(st->original);
    Py_VISIT(st->thread_class);
    return 0;
}

static int
spawn_clear(PyObject* op)
{
    spawn_state* st = (spawn_state*)op;
    Py_CLEAR(st->original);
    Py_CLEAR(st->thread_class);
    return 0;
}

static void
spawn_dealloc(PyObject* op)
{
    PyObject_GC_UnTrack(op);
    spawn_clear(op);
    PyObject_GC_Del(op);
}

static PyTypeObject g_spawn_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_thread",
    .tp_basicsize = sizeof(spawn_state),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = spawn_traverse,
    .tp_clear = spawn_clear,
    .tp_dealloc = spawn_dealloc,
};

/* Names the thread just started for the sampler, with no Python code run (on 3.11+): the
 * function is a bound Thread._bootstrap, whose instance dict holds the name, and the starter
 * returned the ident (3.9-3.12) or a handle whose ident is a C attribute (3.13+).  Before
 * 3.11 the sampler also needs the kernel thread id (the cpu clock reads the thread's CPU time
 * with it), which the new thread sets just before Thread.start() would stop waiting for it:
 * so the wait Thread.start() does next is done here (Event.wait, as under plain Python).
 * Returns -1 with an exception set only if that wait raised (a KeyboardInterrupt, say), as
 * Thread.start() would have; other errors leave the thread unnamed (thread-<id>). */
static int
name_started(PyObject* thread_class, PyObject* function, PyObject* result, uint64_t uid)
{
    PyObject* owner = PyMethod_Check(function) ? PyMethod_GET_SELF(function) : NULL; /* bor. */
    if (owner == NULL || PyObject_IsInstance(owner, thread_class) != 1) {
        PyErr_Clear();
        return 0;
    }
    unsigned long long native_id = 0;
#if !FT_TSTATE_HAS_NATIVE_ID
    PyObject* started = PyObject_GetAttrString(owner, "_started"); /* new */
    PyObject* waited = started ? PyObject_CallMethod(started, "wait", NULL) : NULL; /* new */
    Py_XDECREF(started);
    if (waited == NULL) {
        if (PyErr_ExceptionMatches(PyExc_Exception)) {
            PyErr_Clear(); /* not threading's Thread as we know it: name it without the id */
        }
        else {
            return -1;
        }
    }
    Py_XDECREF(waited);
#endif
    PyObject* ident = PyLong_Check(result) ? (Py_INCREF(result), result)
                                           : PyObject_GetAttrString(result, "ident"); /* new */
    PyObject* dict = PyObject_GenericGetDict(owner, NULL);                 /* new */
    PyObject* name = dict ? PyDict_GetItemString(dict, "_name") : NULL;   /* borrowed */
    PyObject* native = dict ? PyDict_GetItemString(dict, "_native_id") : NULL; /* borrowed */
    const char* utf8 = name && PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    unsigned long long id = ident && PyLong_Check(ident) ? PyLong_AsUnsignedLongLong(ident) : 0;
    if (native != NULL && PyLong_Check(native)) {
        native_id = PyLong_AsUnsignedLongLong(native);
    }
    if (utf8 != NULL && id != 0 && id != (unsigned long long)-1) {
        ft_sampler_set_thread_name(id, utf8, native_id == (unsigned long long)-1 ? 0 : native_id,
                                   0, uid ? uid + 1 : 0);
    }
    Py_XDECREF(dict);
    Py_XDECREF(ident);
    PyErr_Clear();
    return 0;
}

static PyObject*
spawn_call(PyObject* self, PyObject* args, PyObject* kwargs)
{
    spawn_state* st = (spawn_state*)self;
    PyObject* original = st->original;     /* borrowed */
    PyObject* thread_class = st->thread_class; /* borrowed */
    int install = st->install;
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject* function = n > 0 ? PyTuple_GET_ITEM(args, 0) : NULL; /* borrowed */
    Py_XINCREF(function); /* the thread may drop its reference before we name it */
    PyObject* call_args = args;                                      /* owned below */
    Py_INCREF(call_args);
    if (install && function != NULL) {
        PyObject* boot = PyCFunction_New(&g_boot_def, function); /* new; keeps function */
        PyObject* swapped = boot != NULL ? PyTuple_GetSlice(args, 0, n) : NULL; /* new */
        if (swapped == NULL) {
            Py_XDECREF(boot);
            Py_DECREF(call_args);
            Py_XDECREF(function);
            return NULL;
        }
        Py_SETREF(PyTuple_GET_ITEM(swapped, 0), boot); /* steals boot, drops one ref */
        Py_SETREF(call_args, swapped);
    }
    int naming = thread_class != Py_None && function != NULL;
    uint64_t uid = naming ? ft_sampler_last_thread_uid() : 0;
    PyObject* result = PyObject_Call(original, call_args, kwargs); /* new, or NULL */
    Py_DECREF(call_args);
    if (result != NULL && naming && name_started(thread_class, function, result, uid) < 0) {
        Py_CLEAR(result);
    }
    Py_XDECREF(function);
    return result;
}

static PyMethodDef g_spawn_def = {"start_new_thread", (PyCFunction)(void (*)(void))spawn_call,
                                  METH_VARARGS | METH_KEYWORDS,
                                  "fasttrace's wrapper of CPython's thread starter"};

PyObject*
ft_spawn_wrap(PyObject* original, PyObject* thread_class, int install_hook)
{
    if (!(g_spawn_type.tp_flags & Py_TPFLAGS_READY) && PyType_Ready(&g_spawn_type) < 0) {
        return NULL;
    }
    spawn_state* self = PyObject_GC_New(spawn_state, &g_spawn_type); /* new */
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(original);
    Py_INCREF(thread_class);
    self->original = original;
    self->thread_class = thread_class;
    self->install = install_hook;
    PyObject_GC_Track((PyObject*)self);
    PyObject* wrapper = PyCFunction_New(&g_spawn_def, (PyObject*)self); /* keeps self */
    Py_DECREF(self);
    return wrapper;
}

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
    PyObject* original; /* strong */
    PyObject* after;    /* strong */
    int install;
} spawn_state;

static int
spawn_traverse(PyObject* op, visitproc visit, void* arg)
{
    spawn_state* st = (spawn_state*)op;
    Py_VISIT(st->original);
    Py_VISIT(st->after);
    return 0;
}

static int
spawn_clear(PyObject* op)
{
    spawn_state* st = (spawn_state*)op;
    Py_CLEAR(st->original);
    Py_CLEAR(st->after);
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

static PyObject*
spawn_call(PyObject* self, PyObject* args, PyObject* kwargs)
{
    spawn_state* st = (spawn_state*)self;
    PyObject* original = st->original; /* borrowed */
    PyObject* after = st->after;       /* borrowed */
    int install = st->install;
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject* function = n > 0 ? PyTuple_GET_ITEM(args, 0) : NULL; /* borrowed */
    PyObject* call_args = args;                                      /* owned below */
    Py_INCREF(call_args);
    if (install && function != NULL) {
        PyObject* boot = PyCFunction_New(&g_boot_def, function); /* new; keeps function */
        PyObject* swapped = boot != NULL ? PyTuple_GetSlice(args, 0, n) : NULL; /* new */
        if (swapped == NULL) {
            Py_XDECREF(boot);
            Py_DECREF(call_args);
            return NULL;
        }
        Py_SETREF(PyTuple_GET_ITEM(swapped, 0), boot); /* steals boot, drops function */
        Py_SETREF(call_args, swapped);
    }
    uint64_t uid = after != Py_None ? ft_sampler_last_thread_uid() : 0;
    PyObject* result = PyObject_Call(original, call_args, kwargs); /* new, or NULL */
    Py_DECREF(call_args);
    if (result != NULL && after != Py_None && function != NULL) {
        PyObject* r = PyObject_CallFunction(after, "OOK", function, result,
                                            (unsigned long long)uid); /* new, or NULL */
        if (r == NULL) {
            PyErr_WriteUnraisable(after);
        }
        Py_XDECREF(r);
    }
    return result;
}

static PyMethodDef g_spawn_def = {"start_new_thread", (PyCFunction)(void (*)(void))spawn_call,
                                  METH_VARARGS | METH_KEYWORDS,
                                  "fasttrace's wrapper of CPython's thread starter"};

PyObject*
ft_spawn_wrap(PyObject* original, PyObject* after, int install_hook)
{
    if (!(g_spawn_type.tp_flags & Py_TPFLAGS_READY) && PyType_Ready(&g_spawn_type) < 0) {
        return NULL;
    }
    spawn_state* self = PyObject_GC_New(spawn_state, &g_spawn_type); /* new */
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(original);
    Py_INCREF(after);
    self->original = original;
    self->after = after;
    self->install = install_hook;
    PyObject_GC_Track((PyObject*)self);
    PyObject* wrapper = PyCFunction_New(&g_spawn_def, (PyObject*)self); /* keeps self */
    Py_DECREF(self);
    return wrapper;
}

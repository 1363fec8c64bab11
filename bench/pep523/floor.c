/* _floor: the cheapest possible tracing hooks on CPython 3.11, to compare the cost of a
 * PyEval_SetProfile hook (which turns the specializing interpreter off) with a PEP 523
 * frame-evaluation hook (which does not, but sees Python frames only).
 *
 *   install(mode)  mode in: profile_empty, profile_record, pep523_empty, pep523_record
 *   uninstall()
 *   count()        records written so far (the ring wraps; this does not)
 *
 * CPython 3.11 only: pep523_* reads _PyInterpreterFrame (internal header, changes per
 * minor version). Build with build.sh. */
#include <Python.h>
#include <frameobject.h>
#include <stdint.h>
#include <string.h>
#include <x86intrin.h>

#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030C0000
#error "_floor reads 3.11's _PyInterpreterFrame; build against CPython 3.11"
#endif

typedef struct {
    uint64_t ts;
    uint32_t code; /* low 32 bits of the code object's address */
    uint32_t what; /* PyTrace_* for profile modes; 0 entry, 3 return, 1 exception (pep523) */
} record_t;

#define RING_BYTES (16u << 20)
#define RING_N (RING_BYTES / sizeof(record_t))
static record_t *ring;
static uint64_t pos;
static int installed; /* 0 none, 1 profile, 2 pep523 */

static inline void put(uint32_t code, uint32_t what) {
    record_t *r = &ring[pos++ & (RING_N - 1)];
    r->ts = __rdtsc();
    r->code = code;
    r->what = what;
}

static int profile_empty(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg) {
    (void)obj; (void)frame; (void)what; (void)arg;
    return 0;
}

static int profile_record(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg) {
    (void)obj; (void)arg;
    PyCodeObject *code = PyFrame_GetCode(frame); /* new reference */
    uint32_t c = (uint32_t)(uintptr_t)code;
    Py_DECREF(code);
    put(c, (uint32_t)what);
    return 0;
}

static PyObject *pep523_empty(PyThreadState *ts, struct _PyInterpreterFrame *f, int throwflag) {
    return _PyEval_EvalFrameDefault(ts, f, throwflag);
}

static PyObject *pep523_record(PyThreadState *ts, struct _PyInterpreterFrame *f, int throwflag) {
    /* Take the code pointer before evaluating: the frame is not ours to trust afterwards. */
    uint32_t c = (uint32_t)(uintptr_t)f->f_code;
    put(c, 0);
    PyObject *res = _PyEval_EvalFrameDefault(ts, f, throwflag);
    put(c, res ? 3 : 1);
    return res;
}

static PyObject *do_uninstall(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    if (installed == 1)
        PyEval_SetProfile(NULL, NULL);
    else if (installed == 2)
        _PyInterpreterState_SetEvalFrameFunc(PyInterpreterState_Get(), _PyEval_EvalFrameDefault);
    installed = 0;
    Py_RETURN_NONE;
}

static PyObject *do_install(PyObject *self, PyObject *arg) {
    (void)self;
    const char *mode = PyUnicode_AsUTF8(arg);
    if (!mode)
        return NULL;
    if (installed) {
        PyErr_SetString(PyExc_RuntimeError, "a mode is already installed");
        return NULL;
    }
    if (!ring) {
        ring = PyMem_RawMalloc(RING_BYTES);
        if (!ring)
            return PyErr_NoMemory();
        memset(ring, 0, RING_BYTES); /* pre-fault every page before timing starts */
    }
    if (!strcmp(mode, "profile_empty")) {
        PyEval_SetProfile(profile_empty, NULL);
        installed = 1;
    } else if (!strcmp(mode, "profile_record")) {
        PyEval_SetProfile(profile_record, NULL);
        installed = 1;
    } else if (!strcmp(mode, "pep523_empty")) {
        _PyInterpreterState_SetEvalFrameFunc(PyInterpreterState_Get(), pep523_empty);
        installed = 2;
    } else if (!strcmp(mode, "pep523_record")) {
        _PyInterpreterState_SetEvalFrameFunc(PyInterpreterState_Get(), pep523_record);
        installed = 2;
    } else {
        PyErr_Format(PyExc_ValueError, "unknown mode %R", arg);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *do_count(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    return PyLong_FromUnsignedLongLong(pos);
}

static PyMethodDef methods[] = {
    {"install", do_install, METH_O, "install(mode)"},
    {"uninstall", do_uninstall, METH_NOARGS, "uninstall()"},
    {"count", do_count, METH_NOARGS, "records written so far"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_floor", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__floor(void) { return PyModule_Create(&moddef); }

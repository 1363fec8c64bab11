/* ft_intern.c: first sight of a function (see ft_intern.h). */
#include "ft_intern.h"

#include <string.h>

#include "ft_defs.h"

Py_ssize_t ft_code_extra_index = -1;

static uint32_t g_next_fid;
static PyObject* g_own_files;          /* strong: tuple of str */
static void (*g_on_own_code)(void);
int ft_scope_patterns;
__thread int ft_scope_deciding __attribute__((tls_model("initial-exec")));
static PyObject* g_scope_code;       /* strong, or NULL: callable(filename) -> bool */
static PyObject* g_scope_code_cache; /* strong, or NULL: its answers, {filename: bool} */
static PyObject* g_scope_c;          /* strong, or NULL: callable(module, qualname) -> bool */
static PyObject* g_scope_c_cache;    /* strong, or NULL: {(module, qualname): bool} */

typedef struct {
    const PyMethodDef* key;
    uint32_t fid;
} cfunc_slot;

static cfunc_slot* g_cfuncs;
static size_t g_cfuncs_cap; /* power of two */
static size_t g_cfuncs_used;

int
ft_intern_init(void)
{
    if (ft_code_extra_index < 0) {
        ft_code_extra_index = ft_py_request_extra_index(NULL);
    }
    return ft_code_extra_index >= 0;
}

void
ft_intern_reset(void)
{
    g_next_fid = 1; /* 0 means "no function" in the reader */
    if (g_cfuncs != NULL) {
        memset(g_cfuncs, 0, g_cfuncs_cap * sizeof *g_cfuncs);
    }
    g_cfuncs_used = 0;
}

/* UTF-8 of a str (borrowed), or `fallback`.  Never leaves an exception set. */
static const char*
utf8_or(PyObject* s, const char* fallback, Py_ssize_t* len)
{
    if (s != NULL && PyUnicode_Check(s)) {
        const char* u = PyUnicode_AsUTF8AndSize(s, len);
        if (u != NULL) {
            return u;
        }
        PyErr_Clear();
    }
    *len = (Py_ssize_t)strlen(fallback);
    return fallback;
}

static void
put_function_def(uint32_t fid, int is_c, int lineno, PyObject* name, PyObject* qualname,
                 const char* qualname_c, PyObject* filename, PyObject* module)
{
    Py_ssize_t n_name, n_qual, n_file, n_mod;
    const char* s_name = utf8_or(name, "?", &n_name);
    const char* s_qual = qualname_c ? qualname_c : utf8_or(qualname, s_name, &n_qual);
    if (qualname_c) {
        n_qual = (Py_ssize_t)strlen(qualname_c);
    }
    const char* s_file = utf8_or(filename, "", &n_file);
    const char* s_mod = utf8_or(module, "", &n_mod);
    ft_def_str strs[4] = {{s_name, (size_t)n_name}, {s_qual, (size_t)n_qual},
                          {s_file, (size_t)n_file}, {s_mod, (size_t)n_mod}};
    if (ft_defs_put_function(fid, is_c ? FT_FUNC_IS_C : 0, lineno, strs) == 0) {
        ft_S.n_functions++;
    }
}

int
ft_intern_set_own_files(PyObject* files)
{
    if (!PyTuple_Check(files)) {
        PyErr_SetString(PyExc_TypeError, "own files must be a tuple of str");
        return -1;
    }
    Py_INCREF(files);
    Py_XSETREF(g_own_files, files);
    return 0;
}

void
ft_intern_set_own_code_callback(void (*fn)(void))
{
    g_on_own_code = fn;
}

int
ft_intern_is_own(PyCodeObject* co)
{
    if (g_own_files == NULL) {
        return 0;
    }
    PyObject* name = co->co_filename; /* borrowed */
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(g_own_files); i++) {
        PyObject* own = PyTuple_GET_ITEM(g_own_files, i); /* borrowed */
        if (name == own) {
            return 1;
        }
        /* Two exact str objects compare without raising, so a pending exception of the
         * traced program (this can run while it unwinds) is never touched. */
        if (PyUnicode_CheckExact(name) && PyUnicode_CheckExact(own) &&
            PyUnicode_Compare(name, own) == 0) {
            return 1;
        }
    }
    return 0;
}

void
ft_intern_set_scope(PyObject* code_pred, PyObject* code_cache, PyObject* c_pred,
                    PyObject* c_cache)
{
    Py_XINCREF(code_pred);
    Py_XINCREF(code_cache);
    Py_XINCREF(c_pred);
    Py_XINCREF(c_cache);
    Py_XSETREF(g_scope_code, code_pred);
    Py_XSETREF(g_scope_code_cache, code_cache);
    Py_XSETREF(g_scope_c, c_pred);
    Py_XSETREF(g_scope_c_cache, c_cache);
    ft_scope_patterns = code_pred != NULL && c_pred != NULL;
}

/* Whether a function is in scope: the cache's answer (`key` borrowed; a dict lookup of str
 * keys, or of a tuple of them, runs no Python code), else the predicate's on args (borrowed),
 * which may run any Python code.  1 in, 0 out; a predicate that raises leaves the function in
 * scope (recorded rather than lost).  The caller saved the program's exception state. */
static int
ask_scope(PyObject* cache, PyObject* key, PyObject* pred, PyObject* const* args,
          size_t nargs)
{
    if (cache != NULL && PyDict_Check(cache)) {
        PyObject* hit = PyDict_GetItemWithError(cache, key); /* borrowed */
        if (hit != NULL) {
            return hit != Py_False;
        }
        PyErr_Clear();
    }
    PyObject* pred_ref = pred; /* the predicate may clear the scope (stop() on another thread) */
    Py_INCREF(pred_ref);
    ft_scope_deciding++;
    PyObject* r = PyObject_Vectorcall(pred_ref, args, nargs, NULL); /* new */
    ft_scope_deciding--;
    Py_DECREF(pred_ref);
    int in = 1;
    if (r == NULL) {
        PyErr_Clear();
    }
    else {
        in = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (in < 0) {
            PyErr_Clear();
            in = 1;
        }
    }
    return in;
}

uint32_t
ft_intern_code_slow(PyCodeObject* co)
{
    if (FT_UNLIKELY(ft_intern_is_own(co))) {
        if (g_on_own_code != NULL) {
            g_on_own_code();
        }
        return 0;
    }
    ft_py_err_state err;
    ft_py_err_save(&err);
    if (g_scope_code != NULL) {
        uint32_t gen = ft_S.gen;
        PyObject* args[1] = {co->co_filename};
        int in = ask_scope(g_scope_code_cache, co->co_filename, g_scope_code, args, 1);
        if (gen != atomic_load_explicit(&ft_active_gen, memory_order_relaxed)) {
            ft_py_err_restore(&err); /* the trace stopped meanwhile: nothing to define */
            return FT_FID_OUT;
        }
        if (!in) {
            uintptr_t v = ((uintptr_t)gen << 32) | FT_FID_OUT;
            if (ft_py_code_extra_set((PyObject*)co, ft_code_extra_index, (void*)v) < 0) {
                PyErr_Clear(); /* decided again on next sight */
            }
            ft_py_err_restore(&err);
            return FT_FID_OUT;
        }
    }
    uint32_t fid = g_next_fid++;
    uintptr_t v = ((uintptr_t)ft_S.gen << 32) | fid;
    if (ft_py_code_extra_set((PyObject*)co, ft_code_extra_index, (void*)v) < 0) {
        PyErr_Clear(); /* defined again on next sight: a bigger file, never a wrong one */
    }
    put_function_def(fid, 0, co->co_firstlineno, co->co_name, ft_py_code_qualname(co), NULL,
                     co->co_filename, NULL);
    ft_py_err_restore(&err);
    return fid;
}

/* ---- C functions ------------------------------------------------------------------------- */

static size_t
slot_of(const PyMethodDef* key, size_t cap)
{
    uintptr_t h = (uintptr_t)key;
    h ^= h >> 17;
    h *= 0x9E3779B97F4A7C15u;
    return (size_t)(h >> 20) & (cap - 1);
}

static int
grow_cfuncs(void)
{
    size_t cap = g_cfuncs_cap ? g_cfuncs_cap * 2 : 1024;
    cfunc_slot* table = calloc(cap, sizeof *table);
    if (table == NULL) {
        return -1;
    }
    for (size_t i = 0; i < g_cfuncs_cap; i++) {
        if (g_cfuncs[i].key != NULL) {
            size_t j = slot_of(g_cfuncs[i].key, cap);
            while (table[j].key != NULL) {
                j = (j + 1) & (cap - 1);
            }
            table[j] = g_cfuncs[i];
        }
    }
    free(g_cfuncs);
    g_cfuncs = table;
    g_cfuncs_cap = cap;
    return 0;
}

/* Defines a C function seen for the first time.  Names follow what users write:
 * "time.sleep" for a module function, "list.append" for a method. */
static uint32_t
define_cfunc(const PyMethodDef* ml, PyObject* callable)
{
    ft_py_err_state err;
    ft_py_err_save(&err);
    PyObject* module = NULL; /* borrowed */
    const char* owner = NULL;
    PyObject* mod_name_obj = NULL; /* new reference */
    if (PyCFunction_Check(callable)) {
        PyObject* self = PyCFunction_GET_SELF(callable);
        module = ((PyCFunctionObject*)callable)->m_module;
        if (self != NULL && !PyModule_Check(self)) {
            owner = Py_TYPE(self)->tp_name;
        }
        else if (self != NULL) {
            mod_name_obj = PyModule_GetNameObject(self);
            if (mod_name_obj == NULL) {
                PyErr_Clear();
            }
            module = mod_name_obj;
        }
    }
    else {
        owner = PyDescr_TYPE(callable)->tp_name;
    }
    Py_ssize_t n_mod = 0;
    const char* mod = utf8_or(module, "", &n_mod);
    const char* prefix = owner ? owner : mod;
    if (prefix[0] == '\0' || strcmp(prefix, "builtins") == 0) {
        prefix = NULL;
    }
    size_t qual_len = strlen(ml->ml_name) + (prefix ? strlen(prefix) + 1 : 0) + 1;
    char* qual = PyMem_RawMalloc(qual_len);
    if (qual != NULL) {
        if (prefix) {
            snprintf(qual, qual_len, "%s.%s", prefix, ml->ml_name);
        }
        else {
            snprintf(qual, qual_len, "%s", ml->ml_name);
        }
    }
    if (g_scope_c != NULL) {
        uint32_t gen = ft_S.gen;
        PyObject* mod_s = PyUnicode_FromString(mod);                          /* new */
        PyObject* qual_s = PyUnicode_FromString(qual ? qual : ml->ml_name); /* new */
        int in = 1;
        PyObject* key = mod_s != NULL && qual_s != NULL ? PyTuple_Pack(2, mod_s, qual_s)
                                                        : NULL; /* new */
        if (key != NULL) {
            PyObject* args[2] = {mod_s, qual_s};
            in = ask_scope(g_scope_c_cache, key, g_scope_c, args, 2);
            Py_DECREF(key);
        }
        else {
            PyErr_Clear();
        }
        Py_XDECREF(mod_s);
        Py_XDECREF(qual_s);
        if (!in || gen != atomic_load_explicit(&ft_active_gen, memory_order_relaxed)) {
            Py_XDECREF(mod_name_obj);
            PyMem_RawFree(qual);
            ft_py_err_restore(&err);
            /* out of scope; or the trace stopped meanwhile (the caller sees the new
             * generation and caches nothing) */
            return FT_FID_OUT;
        }
    }
    PyObject* name = PyUnicode_FromString(ml->ml_name);
    if (name == NULL) {
        PyErr_Clear();
    }
    uint32_t fid = g_next_fid++;
    put_function_def(fid, 1, 0, name, NULL, qual ? qual : ml->ml_name, NULL, module);
    Py_XDECREF(name);
    Py_XDECREF(mod_name_obj);
    PyMem_RawFree(qual);
    ft_py_err_restore(&err);
    return fid;
}

uint32_t
ft_intern_cfunc(PyObject* callable)
{
    const PyMethodDef* ml;
    if (PyCFunction_Check(callable)) {
        ml = ((PyCFunctionObject*)callable)->m_ml;
    }
    else if (Py_IS_TYPE(callable, &PyMethodDescr_Type)) {
        ml = ((PyMethodDescrObject*)callable)->d_method;
    }
    else {
        return 0;
    }
    if (g_cfuncs_cap != 0) {
        size_t i = slot_of(ml, g_cfuncs_cap);
        while (g_cfuncs[i].key != NULL) {
            if (g_cfuncs[i].key == ml) {
                return g_cfuncs[i].fid;
            }
            i = (i + 1) & (g_cfuncs_cap - 1);
        }
    }
    if ((g_cfuncs_used + 1) * 2 > g_cfuncs_cap && grow_cfuncs() < 0) {
        return define_cfunc(ml, callable); /* uncached: defined again next time */
    }
    uint32_t gen = ft_S.gen;
    uint32_t fid = define_cfunc(ml, callable);
    if (gen != atomic_load_explicit(&ft_active_gen, memory_order_relaxed)) {
        return FT_FID_OUT; /* the scope's predicate let the trace stop: the table is reset */
    }
    size_t i = slot_of(ml, g_cfuncs_cap);
    while (g_cfuncs[i].key != NULL) {
        i = (i + 1) & (g_cfuncs_cap - 1);
    }
    g_cfuncs[i].key = ml;
    g_cfuncs[i].fid = fid;
    g_cfuncs_used++;
    return fid;
}

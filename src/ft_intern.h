/* ft_intern.h: Python code objects and C functions -> small function ids.
 *
 * A code object keeps its id in a co_extra slot as (generation << 32 | id), so the hot path
 * reads one word and compares one tag; an id from an earlier session, or a new code object at
 * a reused address (its slot starts NULL), misses and is defined again.  C functions are keyed
 * by their PyMethodDef, which lives as long as its module, in an open-addressing table.
 * First sight of either appends a FUNCTION def to the session's defs stream.  GIL held.
 */
#ifndef FT_INTERN_H
#define FT_INTERN_H

#include "ft_compat.h"
#include "ft_session.h"

extern Py_ssize_t ft_code_extra_index;

/* Returns 0 if the index cannot be had (too many co_extra users). */
int ft_intern_init(void);

/* fasttrace's own code: code objects of these files (a tuple of str, kept) are never given an
 * id; each time one is about to be recorded the callback runs (the hooks mute that frame and
 * what it calls) and ft_intern_code returns 0.  Own code runs only at start() and stop(), so
 * it may take the slow path every time. */
int ft_intern_set_own_files(PyObject* files);
void ft_intern_set_own_code_callback(void (*fn)(void));
int ft_intern_is_own(PyCodeObject* co);
void ft_intern_reset(void);
uint32_t ft_intern_code_slow(PyCodeObject* co);

/* ---- the capture's scope (include/exclude) ----
 * FT_FID_OUT is the id of a function outside the scope: it is cached like any id (in the
 * code's co_extra word, in the C function table), so the hooks tell an out-of-scope call
 * apart with the same one load and one compare, and record nothing for it.  The decision is
 * made once per function per session, on first sight, by calling the Python predicates
 * (fasttrace/_scope.py).  Calling Python may let another thread run (and stop the trace):
 * ft_intern_code_slow and ft_intern_cfunc then return FT_FID_OUT, and the hooks look their
 * thread up again after a first sight (see ft_hooks.c). */
#define FT_FID_OUT 0xFFFFFFFFu
/* Nonzero while a scope with include/exclude patterns applies. */
extern int ft_scope_patterns;
/* Nonzero on a thread while it runs a scope predicate: the PEP 523 frame evaluator, which
 * would see the predicate's frames (the other hooks do not run inside their own callbacks),
 * lets them run unrecorded. */
extern __thread int ft_scope_deciding __attribute__((tls_model("initial-exec")));
/* code_pred(filename) -> bool for Python code, c_pred(module, qualname) -> bool for C
 * functions, each with the dict it fills ({filename: bool}, {(module, qualname): bool}),
 * which is read first: a hit runs no Python code.  Strong references are taken; all NULL
 * clears the scope.  GIL held. */
void ft_intern_set_scope(PyObject* code_pred, PyObject* code_cache, PyObject* c_pred,
                         PyObject* c_cache);
/* `callable` is a PyCFunction or a method descriptor (borrowed).  Returns 0 for anything else. */
uint32_t ft_intern_cfunc(PyObject* callable);

static inline uint32_t
ft_intern_code(PyCodeObject* co)
{
    uintptr_t v = (uintptr_t)ft_py_code_extra_get(co, ft_code_extra_index);
    if (FT_LIKELY((v >> 32) == ft_S.gen)) {
        return (uint32_t)v;
    }
    return ft_intern_code_slow(co);
}

#endif /* FT_INTERN_H */

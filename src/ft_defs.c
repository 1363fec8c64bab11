/* ft_defs.c: the definitions table (see ft_defs.h). */
#include "ft_defs.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ft_format.h"

static struct {
    pthread_mutex_t lock;
    uint8_t* buf;
    size_t len;
    size_t cap;
} D = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0};

void
ft_defs_reset(void)
{
    pthread_mutex_lock(&D.lock);
    free(D.buf);
    D.buf = NULL;
    D.len = D.cap = 0;
    pthread_mutex_unlock(&D.lock);
}

void
ft_defs_free(void)
{
    ft_defs_reset();
}

void
ft_defs_abandon(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    D.lock = fresh;
    D.buf = NULL;
    D.len = D.cap = 0;
}

uint8_t*
ft_defs_begin(size_t size)
{
    pthread_mutex_lock(&D.lock);
    if (D.len + size > D.cap) {
        size_t cap = D.cap ? D.cap : 4096;
        while (cap < D.len + size) {
            cap *= 2;
        }
        uint8_t* grown = realloc(D.buf, cap);
        if (grown == NULL) {
            pthread_mutex_unlock(&D.lock);
            return NULL;
        }
        D.buf = grown;
        D.cap = cap;
    }
    return D.buf + D.len;
}

void
ft_defs_end(uint8_t* end)
{
    D.len = (size_t)(end - D.buf);
    pthread_mutex_unlock(&D.lock);
}

size_t
ft_defs_size(void)
{
    pthread_mutex_lock(&D.lock);
    size_t n = D.len;
    pthread_mutex_unlock(&D.lock);
    return n;
}

uint8_t*
ft_defs_copy(size_t from, size_t* n, size_t* end)
{
    /* A copy, not a view: producers may grow (move) the buffer while the writer writes. */
    uint8_t* out = NULL;
    *n = 0;
    pthread_mutex_lock(&D.lock);
    *end = from;
    if (D.len > from && (out = malloc(D.len - from)) != NULL) {
        memcpy(out, D.buf + from, D.len - from);
        *n = D.len - from;
        *end = D.len;
    }
    pthread_mutex_unlock(&D.lock);
    return out;
}

int
ft_defs_put_function(uint32_t fid, uint8_t flags, int lineno, const ft_def_str strs[4])
{
    size_t size = 1 + 5 + 1 + 5;
    for (int i = 0; i < 4; i++) {
        size += 10 + strs[i].n;
    }
    uint8_t* p = ft_defs_begin(size);
    if (p == NULL) {
        return -1;
    }
    *p++ = FT_DEF_FUNCTION;
    p = ft_put_varint(p, fid);
    *p++ = flags;
    p = ft_put_varint(p, lineno > 0 ? (uint64_t)lineno : 0);
    for (int i = 0; i < 4; i++) {
        p = ft_put_str(p, strs[i].s, strs[i].n);
    }
    ft_defs_end(p);
    return 0;
}

void
ft_defs_put_thread(uint32_t id, uint64_t ident, uint64_t native_id, const char* name)
{
    size_t n = name != NULL ? strlen(name) : 0;
    uint8_t* p = ft_defs_begin(1 + 30 + 10 + n);
    if (p == NULL) {
        return;
    }
    *p++ = FT_DEF_THREAD;
    p = ft_put_varint(p, id);
    p = ft_put_varint(p, ident);
    p = ft_put_varint(p, native_id);
    p = ft_put_str(p, name != NULL ? name : "", n);
    ft_defs_end(p);
}

void
ft_defs_put_thread_name(uint32_t id, const char* name)
{
    size_t n = strlen(name);
    uint8_t* p = ft_defs_begin(1 + 10 + 10 + n);
    if (p != NULL) {
        *p++ = FT_DEF_THREAD_NAME;
        p = ft_put_varint(p, id);
        p = ft_put_str(p, name, n);
        ft_defs_end(p);
    }
}

void
ft_defs_put_hook_lost(uint32_t thread, uint64_t tick, const char* what)
{
    size_t n = strlen(what);
    uint8_t* p = ft_defs_begin(1 + 10 + 10 + 10 + n);
    if (p != NULL) {
        *p++ = FT_DEF_HOOK_LOST;
        p = ft_put_varint(p, thread);
        p = ft_put_varint(p, tick);
        p = ft_put_str(p, what, n);
        ft_defs_end(p);
    }
}

void
ft_defs_put_scope(const char* json, size_t n)
{
    uint8_t* p = ft_defs_begin(1 + 10 + n);
    if (p != NULL) {
        *p++ = FT_DEF_SCOPE;
        p = ft_put_str(p, json, n);
        ft_defs_end(p);
    }
}

/* ft_writer.c: the writer thread.  It drains every thread's published chunks into the file,
 * never holds the GIL and never calls Python. */
#define _GNU_SOURCE /* pthread_timedjoin_np, gettid */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "ft_fork.h"
#include "ft_format.h"
#include "ft_session.h"

#define FT_WRITER_PERIOD_NS 2000000u   /* idle poll; a filling ring wakes it sooner */
#define FT_CLOCK_PERIOD_NS 250000000u  /* a clock record this often refines tick -> ns */
#define FT_FIRST_CLOCK_NS 10000000u
#define FT_MAX_IOV 256

static void
fail(int err)
{
    /* Keep the first error.  Recording stops (hooks see no active session) while the
     * application goes on; stop() reports the error. */
    int expected = 0;
    if (atomic_compare_exchange_strong(&ft_S.writer_error, &expected, err)) {
        /* What a reader will load: chunks written whole, not the bytes of a partial one. */
        ft_S.error_offset = ft_S.good_bytes;
        atomic_store(&ft_active_gen, FT_GEN_NONE);
    }
}

/* Writes n iovecs, `per_chunk` of which make one chunk, and keeps good_bytes at the end of
 * the last chunk written whole. */
static void
writev_all(struct iovec* iov, int n, int per_chunk)
{
    if (atomic_load_explicit(&ft_S.writer_error, memory_order_relaxed) != 0) {
        return;
    }
    int done = 0;
    uint64_t chunk_bytes = 0;
    while (n > 0) {
        ssize_t w = writev(ft_S.fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            fail(errno);
            return;
        }
        ft_S.bytes += (uint64_t)w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            chunk_bytes += iov->iov_len;
            if (++done % per_chunk == 0) {
                ft_S.good_bytes += chunk_bytes;
                chunk_bytes = 0;
            }
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t*)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
            chunk_bytes += (uint64_t)w;
        }
    }
}

static void
fill_header(ft_chunk_header* h, uint8_t type, uint8_t flags, uint32_t thread, uint32_t records,
            uint64_t base_tick, const uint8_t* payload, uint32_t size)
{
    h->magic = FT_CHUNK_MAGIC;
    h->payload_size = size;
    h->type = type;
    h->flags = flags;
    h->reserved = 0;
    h->thread = thread;
    h->records = records;
    h->base_tick = base_tick;
    uLong crc = crc32(0, (const Bytef*)h + 12, FT_CHUNK_HEADER_SIZE - 12);
    h->crc32 = (uint32_t)crc32(crc, payload, size);
}

static void
write_small_chunk(uint8_t type, const void* payload, uint32_t size)
{
    ft_chunk_header h;
    fill_header(&h, type, 0, 0, 0, 0, payload, size);
    struct iovec iov[2] = {{&h, sizeof h}, {(void*)payload, size}};
    writev_all(iov, 2, 2);
}

static void
write_defs(void)
{
    pthread_mutex_lock(&ft_S.defs_lock);
    uint8_t* defs = ft_S.defs;
    size_t len = ft_S.defs_len;
    ft_S.defs = NULL;
    ft_S.defs_len = ft_S.defs_cap = 0;
    pthread_mutex_unlock(&ft_S.defs_lock);
    if (len > 0) {
        write_small_chunk(FT_CHUNK_DEFS, defs, (uint32_t)len);
    }
    free(defs);
}

/* Writes one ring's chunks [tail, head) and gives them back. */
static size_t
drain_ring(ft_thread* t, uint64_t head)
{
    size_t chunks = 0;
    struct iovec iov[FT_MAX_IOV];
    int niov = 0;
    uint64_t tail = atomic_load_explicit(&t->tail, memory_order_relaxed);
    for (; tail < head; tail++) {
        ft_chunk_meta* m = &t->meta[tail % t->n_chunks];
        uint8_t* payload = ft_chunk_payload(t, tail);
        ft_chunk_header* h = (ft_chunk_header*)(payload - FT_CHUNK_HEADER_SIZE);
        fill_header(h, t->chunk_type, (uint8_t)m->flags, t->id, m->records, m->base_tick,
                    payload, m->used);
        ft_S.events += m->records;
        iov[niov].iov_base = h;
        iov[niov].iov_len = FT_CHUNK_HEADER_SIZE + m->used;
        niov++;
        chunks++;
        if (niov == FT_MAX_IOV) {
            writev_all(iov, niov, 1);
            niov = 0;
            atomic_store_explicit(&t->tail, tail + 1, memory_order_release);
        }
    }
    if (niov > 0) {
        writev_all(iov, niov, 1);
    }
    atomic_store_explicit(&t->tail, tail, memory_order_release);
    return chunks;
}

size_t
ft_writer_drain(void)
{
    /* Order matters: read the heads first, then take the defs.  A chunk published before its
     * head was read was filled after its functions were defined, so their defs are in the
     * buffer taken next and reach the file first. */
    pthread_mutex_lock(&ft_S.lock);
    uint32_t n = ft_S.n_threads;
    ft_thread** threads = malloc((n ? n : 1) * sizeof *threads);
    uint64_t* heads = malloc((n ? n : 1) * sizeof *heads);
    if (threads == NULL || heads == NULL) {
        pthread_mutex_unlock(&ft_S.lock);
        free(threads);
        free(heads);
        return 0;
    }
    for (uint32_t i = 0; i < n; i++) {
        threads[i] = ft_S.threads[i];
        heads[i] = threads[i] ? atomic_load_explicit(&threads[i]->head, memory_order_acquire) : 0;
    }
    ft_thread* ring = ft_S.sample_ring;
    uint64_t ring_head = ring ? atomic_load_explicit(&ring->head, memory_order_acquire) : 0;
    pthread_mutex_unlock(&ft_S.lock);

    write_defs();

    size_t chunks = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (threads[i] != NULL) {
            chunks += drain_ring(threads[i], heads[i]);
        }
    }
    if (ring != NULL) {
        chunks += drain_ring(ring, ring_head);
    }

    /* Free the buffers of threads that have exited and been written out. */
    pthread_mutex_lock(&ft_S.lock);
    for (uint32_t i = 0; i < n; i++) {
        ft_thread* t = threads[i];
        if (t != NULL && t->finished && atomic_load(&t->head) == atomic_load(&t->tail)) {
            ft_S.dropped += t->dropped_total;
            ft_S.threads[i] = NULL;
            ft_thread_free(t);
        }
    }
    pthread_mutex_unlock(&ft_S.lock);
    free(threads);
    free(heads);
    return chunks;
}

void
ft_writer_write_clock(void)
{
    ft_clock_sync c;
    ft_clock_sample(&c);
    uint8_t buf[24];
    ft_put_u64(ft_put_u64(ft_put_u64(buf, c.tick), c.mono_ns), c.wall_ns);
    write_small_chunk(FT_CHUNK_CLOCK, buf, sizeof buf);
    ft_S.last_clock_ns = c.mono_ns;
}

void
ft_writer_write_trailer(const ft_clock_sync* stop)
{
    write_defs();
    ft_trailer tr;
    memset(&tr, 0, sizeof tr);
    tr.events = ft_S.events;
    tr.dropped = ft_S.dropped;
    tr.stop_tick = stop->tick;
    tr.stop_mono_ns = stop->mono_ns;
    tr.stop_wall_ns = stop->wall_ns;
    tr.threads = ft_S.n_threads;
    tr.functions = ft_S.n_functions;
    tr.error = (uint32_t)atomic_load(&ft_S.writer_error);
    tr.lost_threads = ft_S.lost_threads;
    write_small_chunk(FT_CHUNK_TRAILER, &tr, sizeof tr);
}

static void*
writer_main(void* arg)
{
    (void)arg;
    atomic_store(&ft_S.writer_tid, (int)syscall(SYS_gettid));
    for (;;) {
        size_t n = ft_writer_drain();
        if (ft_clock_mono_ns() - ft_S.last_clock_ns >= FT_CLOCK_PERIOD_NS) {
            ft_writer_write_clock();
        }
        /* The decision to leave is made under wake_lock, so that the fork handlers know
         * whether a writer asked to stop has left or may still be told to stay. */
        pthread_mutex_lock(&ft_S.wake_lock);
        if (atomic_load(&ft_S.writer_stop)) {
            ft_S.writer_exited = 1;
            pthread_mutex_unlock(&ft_S.wake_lock);
            break;
        }
        if (n == 0) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += FT_WRITER_PERIOD_NS;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&ft_S.wake, &ft_S.wake_lock, &until);
        }
        pthread_mutex_unlock(&ft_S.wake_lock);
    }
    return NULL;
}

int
ft_writer_start(void)
{
    atomic_store(&ft_S.writer_stop, 0);
    ft_S.writer_exited = 0;
    /* The first clock record comes 10 ms after start, the next ones every period. */
    if (ft_S.last_clock_ns == 0) {
        ft_S.last_clock_ns = ft_S.start_clock.mono_ns - FT_CLOCK_PERIOD_NS + FT_FIRST_CLOCK_NS;
    }
    /* Signals belong to the application's threads; the writer must never take one. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&ft_S.writer, NULL, writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return err;
}

static int writer_joined(void);

void
ft_writer_join(void)
{
    if (writer_joined()) {
        return; /* stopped for a fork whose restart has not come (or failed) */
    }
    pthread_mutex_lock(&ft_S.wake_lock);
    atomic_store(&ft_S.writer_stop, 1);
    pthread_cond_signal(&ft_S.wake);
    pthread_mutex_unlock(&ft_S.wake_lock);
    pthread_join(ft_S.writer, NULL);
}

/* ---- fork (ft_fork.h) ------------------------------------------------------------------- */

#define FT_FORK_JOIN_NS 50000000L /* a writer stuck in write() (a stalled pipe) is left alone */
#define FT_FORK_TASK_NS 20000000u

enum { WRITER_RUNNING, WRITER_JOINED, WRITER_STOPPING };

static int
writer_joined(void)
{
    return ft_S.writer_paused == WRITER_JOINED;
}

static void
add_ns(struct timespec* t, long ns)
{
    t->tv_nsec += ns;
    while (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

void
ft_session_fork_prepare(void)
{
    if (!ft_S.running || ft_S.writer_paused != WRITER_RUNNING ||
        atomic_load(&ft_S.writer_stop)) {
        return; /* not started, paused already by the Python hook, or stop() is joining it */
    }
    pthread_mutex_lock(&ft_S.wake_lock);
    atomic_store(&ft_S.writer_stop, 1);
    pthread_cond_signal(&ft_S.wake);
    pthread_mutex_unlock(&ft_S.wake_lock);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    add_ns(&until, FT_FORK_JOIN_NS);
    if (pthread_timedjoin_np(ft_S.writer, NULL, &until) == 0) {
        ft_S.writer_paused = WRITER_JOINED;
        ft_fork_wait_task_gone(atomic_load(&ft_S.writer_tid), FT_FORK_TASK_NS);
    }
    else {
        ft_S.writer_paused = WRITER_STOPPING; /* inside a write: decided when resuming */
    }
}

static void
resume(void)
{
    if (!ft_S.running) {
        ft_S.writer_paused = WRITER_RUNNING; /* stop() came first */
        return;
    }
    if (ft_S.writer_paused == WRITER_JOINED) {
        if (ft_writer_start() != 0) {
            /* No writer: the rings fill and drop, and stop() says so; nothing else to do. */
            atomic_store(&ft_S.writer_stop, 1);
        }
    }
    else if (ft_S.writer_paused == WRITER_STOPPING) {
        pthread_mutex_lock(&ft_S.wake_lock);
        int exited = ft_S.writer_exited;
        if (!exited) {
            atomic_store(&ft_S.writer_stop, 0); /* it has not looked yet: it stays */
        }
        pthread_mutex_unlock(&ft_S.wake_lock);
        if (exited) {
            pthread_join(ft_S.writer, NULL);
            ft_writer_start();
        }
    }
    ft_S.writer_paused = WRITER_RUNNING;
}

void
ft_session_fork_parent(void)
{
    if (!ft_S.fork_defer) {
        resume();
    }
}

void
ft_session_fork_defer(void)
{
    /* Stopped here, before fork(): some versions count the threads before fork() itself. */
    ft_S.fork_defer = ft_S.running;
    ft_session_fork_prepare();
}

void
ft_session_fork_resume(void)
{
    ft_S.fork_defer = 0;
    resume();
}

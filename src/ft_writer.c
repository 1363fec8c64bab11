/* ft_writer.c: the writer thread (see ft_writer.h). */
#define _GNU_SOURCE /* pthread_timedjoin_np, gettid */
#include "ft_writer.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ft_defs.h"
#include "ft_fork.h"
#include "ft_format.h"

#define FT_WRITER_PERIOD_NS 2000000u   /* idle poll; a filling ring wakes it sooner */
#define FT_CLOCK_PERIOD_NS 250000000u  /* a clock record this often refines tick -> ns */
#define FT_FIRST_CLOCK_NS 10000000u
#define FT_DUMP_FORK_WAIT_MS 5000      /* a dump waits this long for a fork's restart */

enum { WRITER_RUNNING, WRITER_JOINED, WRITER_STOPPING };

static struct {
    int running; /* between ft_writer_start and ft_writer_finish */
    ft_sink* sink;
    int is_flight;
    ft_writer_sources src;
    ft_file_info info; /* strings owned (copies) */
    size_t defs_written;
    uint64_t events;
    uint64_t last_clock_ns;
    int failed;

    pthread_t thread;
    pthread_mutex_t wake_lock;
    pthread_cond_t wake;
    _Atomic int stop;
    int exited; /* under wake_lock: it saw `stop` and is leaving */
    _Atomic int tid;
    int paused;     /* fork: how prepare left it */
    int fork_defer; /* os.fork(): the parent restarts it from the Python hook */

    /* dumps: one at a time (dump_lock); the request and its result under wake_lock */
    pthread_mutex_t dump_lock;
    pthread_cond_t dump_done;
    int dump_fd; /* -1: no request */
    int dump_finished;
    ft_flight_dump_result dump_result;
} W = {.dump_fd = -1};

static void
check_failed(void)
{
    if (W.sink->error != 0 && !W.failed) {
        W.failed = 1;
        W.src.failed(W.sink->error);
    }
}

static void
write_defs(void)
{
    size_t n = 0, end = 0;
    uint8_t* defs = ft_defs_copy(W.defs_written, &n, &end);
    if (n > 0) {
        ft_sink_small_chunk(W.sink, FT_CHUNK_DEFS, defs, (uint32_t)n);
        if (W.sink->error == 0) {
            W.defs_written = end;
        }
    }
    free(defs);
}

/* Hands one ring's chunks [tail, head) to the sink and gives them back. */
static size_t
drain_ring(ft_thread* t, uint64_t head)
{
    size_t chunks = 0;
    uint64_t tail = atomic_load_explicit(&t->tail, memory_order_relaxed);
    uint64_t given = tail;
    for (; tail < head; tail++) {
        ft_chunk_meta* m = &t->meta[tail % t->n_chunks];
        uint8_t* payload = ft_chunk_payload(t, tail);
        ft_chunk_header* h = (ft_chunk_header*)(payload - FT_CHUNK_HEADER_SIZE);
        ft_chunk_fill(h, t->chunk_type, (uint8_t)m->flags, t->id, m->records, m->base_tick,
                      payload, m->used);
        if (ft_sink_chunk(W.sink, h, payload) == FT_SINK_BUSY) {
            break; /* a flight recorder full of chunks a dump still needs: next round */
        }
        W.events += m->records;
        chunks++;
    }
    if (tail != given) {
        ft_sink_flush(W.sink); /* the payloads may be reused after this */
        atomic_store_explicit(&t->tail, tail, memory_order_release);
    }
    return chunks;
}

size_t
ft_writer_drain(void)
{
    /* Order matters: read the heads first, then take the defs.  A chunk published before its
     * head was read was filled after its functions were defined, so their defs are in the
     * part of the table taken next and reach the sink first. */
    size_t n = 0;
    ft_ring_ref* rings = W.src.rings(&n);
    write_defs();
    size_t chunks = 0;
    for (size_t i = 0; i < n; i++) {
        chunks += drain_ring(rings[i].ring, rings[i].head);
    }
    free(rings);
    ft_sink_flush(W.sink); /* also a round's end for the flight recorder's age limit */
    check_failed();
    W.src.reap();
    return chunks;
}

static void
write_clock(void)
{
    ft_clock_sync c;
    ft_clock_sample(&c);
    uint8_t buf[24];
    ft_put_u64(ft_put_u64(ft_put_u64(buf, c.tick), c.mono_ns), c.wall_ns);
    ft_sink_small_chunk(W.sink, FT_CHUNK_CLOCK, buf, sizeof buf);
    W.last_clock_ns = c.mono_ns;
}

static void
between_slices(void* arg)
{
    (void)arg;
    ft_writer_drain();
}

static void
do_dump(int fd)
{
    ft_writer_drain(); /* what the threads published before asking is in the window */
    ft_clock_sync now;
    ft_clock_sample(&now);
    ft_trailer tr;
    memset(&tr, 0, sizeof tr);
    W.src.counts(&tr);
    tr.dropped = 0; /* the window's losses are its DROP records; the capture's are at stop */
    ft_flight_dump_result res;
    ft_flight_dump(W.sink, fd, &W.info, &now, &tr, between_slices, NULL, &res);
    pthread_mutex_lock(&W.wake_lock);
    W.dump_result = res;
    W.dump_finished = 1;
    W.dump_fd = -1;
    pthread_cond_broadcast(&W.dump_done);
    pthread_mutex_unlock(&W.wake_lock);
}

static void*
writer_main(void* arg)
{
    (void)arg;
    atomic_store(&W.tid, (int)syscall(SYS_gettid));
    for (;;) {
        size_t n = ft_writer_drain();
        if (ft_clock_mono_ns() - W.last_clock_ns >= FT_CLOCK_PERIOD_NS) {
            write_clock();
        }
        /* The decision to leave is made under wake_lock, so that the fork handlers know
         * whether a writer asked to stop has left or may still be told to stay. */
        pthread_mutex_lock(&W.wake_lock);
        int dump_fd = W.dump_fd;
        if (dump_fd >= 0) {
            pthread_mutex_unlock(&W.wake_lock);
            do_dump(dump_fd);
            continue;
        }
        if (atomic_load(&W.stop)) {
            W.exited = 1;
            pthread_mutex_unlock(&W.wake_lock);
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
            pthread_cond_timedwait(&W.wake, &W.wake_lock, &until);
        }
        pthread_mutex_unlock(&W.wake_lock);
    }
    return NULL;
}

static int
spawn(void)
{
    atomic_store(&W.stop, 0);
    W.exited = 0;
    /* Signals belong to the application's threads; the writer must never take one. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&W.thread, NULL, writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return err;
}

static void
free_info(void)
{
    free((void*)W.info.command_line);
    free((void*)W.info.python_version);
    memset(&W.info, 0, sizeof W.info);
}

/* ft_thread_kick_writer: a ring is half full. */
static void
kick(void)
{
    pthread_cond_signal(&W.wake);
}

int
ft_writer_start(ft_sink* sink, const ft_writer_sources* src, const ft_file_info* info)
{
    static int inited = 0;
    if (!inited) {
        pthread_mutex_init(&W.wake_lock, NULL);
        pthread_cond_init(&W.wake, NULL);
        pthread_mutex_init(&W.dump_lock, NULL);
        pthread_cond_init(&W.dump_done, NULL);
        inited = 1;
    }
    W.sink = sink;
    W.is_flight = sink->keeps_window;
    W.src = *src;
    W.info = *info;
    W.info.command_line = malloc(info->command_line_size + 1);
    W.info.python_version = strdup(info->python_version);
    if (W.info.command_line == NULL || W.info.python_version == NULL) {
        free_info();
        return ENOMEM;
    }
    memcpy((void*)W.info.command_line, info->command_line, info->command_line_size);
    W.defs_written = 0;
    W.events = 0;
    W.failed = 0;
    W.paused = WRITER_RUNNING;
    W.fork_defer = 0;
    W.dump_fd = -1;
    /* The first clock record comes 10 ms after start, the next ones every period. */
    W.last_clock_ns = info->start.mono_ns - FT_CLOCK_PERIOD_NS + FT_FIRST_CLOCK_NS;
    ft_thread_kick_writer = kick; /* before any ring exists */
    int err = spawn();
    if (err != 0) {
        free_info();
        return err;
    }
    W.running = 1;
    return 0;
}

void
ft_writer_join(void)
{
    if (W.paused == WRITER_JOINED) {
        return; /* stopped for a fork whose restart has not come (or failed) */
    }
    pthread_mutex_lock(&W.wake_lock);
    atomic_store(&W.stop, 1);
    pthread_cond_signal(&W.wake);
    pthread_mutex_unlock(&W.wake_lock);
    pthread_join(W.thread, NULL);
    W.paused = WRITER_JOINED;
}

void
ft_writer_finish(const ft_clock_sync* stop, ft_writer_result* out)
{
    write_clock();
    write_defs();
    ft_trailer tr;
    memset(&tr, 0, sizeof tr);
    W.src.counts(&tr);
    tr.events = W.events;
    tr.stop_tick = stop->tick;
    tr.stop_mono_ns = stop->mono_ns;
    tr.stop_wall_ns = stop->wall_ns;
    tr.error = (uint32_t)W.sink->error;
    ft_sink_finish(W.sink, &tr);
    ft_sink* k = W.sink;
    memset(out, 0, sizeof *out);
    out->events = W.events;
    out->bytes = k->bytes;
    out->error = k->error;
    out->error_offset = k->error_offset;
    out->first_index = k->first_index;
    out->last_index = k->last_index;
    out->skipped_error = k->skipped_error;
    out->skipped_error_index = k->skipped_error_index;
    out->skipped_error_offset = k->skipped_error_offset;
    out->skipped_errors = k->skipped_errors;
    out->lost_chunks = k->lost_chunks;
    ft_sink_destroy(W.sink);
    W.sink = NULL;
    free_info();
    W.running = 0;
    W.paused = WRITER_RUNNING;
}

void
ft_writer_abandon(void)
{
    /* The thread does not exist in the child; its locks may be held by it.  Leaked. */
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    W.wake_lock = m;
    W.dump_lock = m;
    W.wake = c;
    W.dump_done = c;
    W.sink = NULL;
    W.running = 0;
    W.paused = WRITER_RUNNING;
    W.dump_fd = -1;
    memset(&W.info, 0, sizeof W.info);
}

int
ft_writer_is_flight(void)
{
    return W.running && W.is_flight;
}

int
ft_writer_dump(int fd, ft_flight_dump_result* out)
{
    pthread_mutex_lock(&W.dump_lock);
    int err = 0;
    pthread_mutex_lock(&W.wake_lock);
    /* A fork stops the writer for a moment (ft_writer_fork_prepare to the parent's resume):
     * a dump asked for meanwhile waits for it, up to FT_DUMP_FORK_WAIT_MS. */
    for (int waited = 0; W.running && (W.paused != WRITER_RUNNING || atomic_load(&W.stop)) &&
                         waited < FT_DUMP_FORK_WAIT_MS;
         waited++) {
        pthread_mutex_unlock(&W.wake_lock);
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
        pthread_mutex_lock(&W.wake_lock);
    }
    if (!W.running || !W.is_flight) {
        err = W.running ? EINVAL : ESRCH;
    }
    else if (W.paused != WRITER_RUNNING || atomic_load(&W.stop)) {
        err = ESRCH; /* stopping, or stopped for a fork that did not restart it */
    }
    else {
        W.dump_fd = fd;
        W.dump_finished = 0;
        pthread_cond_signal(&W.wake);
        while (!W.dump_finished) {
            pthread_cond_wait(&W.dump_done, &W.wake_lock);
        }
        *out = W.dump_result;
    }
    pthread_mutex_unlock(&W.wake_lock);
    pthread_mutex_unlock(&W.dump_lock);
    return err;
}

/* ---- fork (ft_fork.h) ------------------------------------------------------------------- */

#define FT_FORK_JOIN_NS 50000000L /* a writer stuck in write() (a stalled pipe) is left alone */
#define FT_FORK_TASK_NS 20000000u

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
ft_writer_fork_prepare(void)
{
    if (!W.running || W.paused != WRITER_RUNNING || atomic_load(&W.stop)) {
        return; /* not started, paused already by the Python hook, or stop() is joining it */
    }
    pthread_mutex_lock(&W.wake_lock);
    atomic_store(&W.stop, 1);
    pthread_cond_signal(&W.wake);
    pthread_mutex_unlock(&W.wake_lock);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    add_ns(&until, FT_FORK_JOIN_NS);
    if (pthread_timedjoin_np(W.thread, NULL, &until) == 0) {
        W.paused = WRITER_JOINED;
        ft_fork_wait_task_gone(atomic_load(&W.tid), FT_FORK_TASK_NS);
    }
    else {
        W.paused = WRITER_STOPPING; /* inside a write (or a dump): decided when resuming */
    }
}

static void
resume(void)
{
    if (!W.running) {
        W.paused = WRITER_RUNNING; /* stop() came first */
        return;
    }
    if (W.paused == WRITER_JOINED) {
        if (spawn() != 0) {
            /* No writer: the rings fill and drop, and stop() says so; nothing else to do. */
            atomic_store(&W.stop, 1);
            return;
        }
    }
    else if (W.paused == WRITER_STOPPING) {
        pthread_mutex_lock(&W.wake_lock);
        int exited = W.exited;
        if (!exited) {
            atomic_store(&W.stop, 0); /* it has not looked yet: it stays */
        }
        pthread_mutex_unlock(&W.wake_lock);
        if (exited) {
            pthread_join(W.thread, NULL);
            spawn();
        }
    }
    W.paused = WRITER_RUNNING;
}

void
ft_writer_fork_parent(void)
{
    if (!W.fork_defer) {
        resume();
    }
}

void
ft_writer_fork_defer(void)
{
    /* Stopped here, before fork(): some versions count the threads before fork() itself. */
    W.fork_defer = W.running;
    ft_writer_fork_prepare();
}

void
ft_writer_fork_resume(void)
{
    W.fork_defer = 0;
    resume();
}

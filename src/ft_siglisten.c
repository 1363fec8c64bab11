/* ft_siglisten.c: see ft_siglisten.h.  on_signal() calls sem_post() only (async-signal-safe). */
#define _XOPEN_SOURCE 700 /* SA_ONSTACK */
#include "ft_siglisten.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

static sem_t g_sem;
static int g_sem_ready;
static atomic_int g_signum;         /* the listened signal; 0 when closed */
static atomic_long g_generation;    /* the open one, or the last closed one */
static atomic_int g_waiting;        /* waiters between their first check and their return */
static struct sigaction g_replaced; /* CPython's handler, put back by close() */
static int g_atfork_registered;

static void
on_signal(int sig)
{
    int saved = errno;
    if (atomic_load(&g_signum) == sig) {
        sem_post(&g_sem);
    }
    errno = saved;
}

/* A forked child has none of the parent's threads: no waiter to wait for at close(). */
static void
after_fork_in_child(void)
{
    atomic_store(&g_waiting, 0);
}

long
ft_siglisten_open(int signum)
{
    if (atomic_load(&g_signum) != 0) {
        errno = EBUSY;
        return -1;
    }
    if (!g_sem_ready) {
        if (sem_init(&g_sem, 0, 0) < 0) {
            return -1;
        }
        g_sem_ready = 1;
    }
    if (!g_atfork_registered) {
        if (pthread_atfork(NULL, NULL, after_fork_in_child) != 0) {
            errno = ENOMEM;
            return -1;
        }
        g_atfork_registered = 1;
    }
    while (sem_trywait(&g_sem) == 0) {
    } /* what an earlier generation left: deliveries before this one began */
    if (sigaction(signum, NULL, &g_replaced) < 0) {
        return -1;
    }
    long generation = atomic_fetch_add(&g_generation, 1) + 1;
    atomic_store(&g_signum, signum);
    struct sigaction mine;
    memset(&mine, 0, sizeof mine);
    mine.sa_handler = on_signal;
    sigemptyset(&mine.sa_mask);
    /* SA_RESTART: the thread the signal lands on goes on with what it was doing, unaware. */
    mine.sa_flags = SA_RESTART | (g_replaced.sa_flags & SA_ONSTACK);
    if (sigaction(signum, &mine, NULL) < 0) {
        int e = errno;
        atomic_store(&g_signum, 0);
        errno = e;
        return -1;
    }
    return generation;
}

int
ft_siglisten_wait(long generation)
{
    int delivered = 0;
    atomic_fetch_add(&g_waiting, 1);
    while (atomic_load(&g_generation) == generation && atomic_load(&g_signum) != 0) {
        if (sem_wait(&g_sem) < 0) {
            continue; /* EINTR: another signal's handler ran on this thread */
        }
        if (atomic_load(&g_generation) == generation && atomic_load(&g_signum) != 0) {
            while (sem_trywait(&g_sem) == 0) {
            } /* a burst of signals asks for one dump */
            delivered = 1;
        }
        break;
    }
    atomic_fetch_sub(&g_waiting, 1);
    return delivered;
}

void
ft_siglisten_close(void)
{
    int signum = atomic_exchange(&g_signum, 0);
    if (signum == 0) {
        return;
    }
    atomic_fetch_add(&g_generation, 1);
    struct sigaction current;
    if (sigaction(signum, NULL, &current) == 0 && !(current.sa_flags & SA_SIGINFO) &&
        current.sa_handler == on_signal) {
        sigaction(signum, &g_replaced, NULL); /* the program's own signal.signal() stays */
    }
    /* Wake the waiter.  It holds no lock and needs no GIL to leave: this takes microseconds,
     * and the post it leaves unconsumed (none waiting) is drained by the next open(). */
    sem_post(&g_sem);
    struct timespec pause = {0, 100000};
    while (atomic_load(&g_waiting) > 0) {
        nanosleep(&pause, NULL);
    }
}

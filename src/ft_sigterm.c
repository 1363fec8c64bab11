/* ft_sigterm.c: see ft_sigterm.h.  Everything on_signal() calls is async-signal-safe
 * (sigaction, timer_settime, kill, and CPython's own handler). */
#define _GNU_SOURCE /* SIGEV_THREAD_ID */
#include "ft_sigterm.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#if defined(__linux__)
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef sigev_notify_thread_id /* glibc before 2.35 names only the union member */
#define sigev_notify_thread_id _sigev_un._tid
#endif

static int g_signum;                 /* 0 until the first guard() */
static struct sigaction g_wrapped;   /* CPython's handler, called first on every delivery */
static timer_t g_kick;               /* the signal to the main thread, every KICK_MS */
static timer_t g_grace;              /* the signal to the process, once, after GRACE_MS */
static int g_have_timers;
static atomic_int g_taken;           /* a Python handler has run since the last reset */
static atomic_int g_pending;         /* a delivery not yet taken: the timers run */
static _Atomic int64_t g_deadline_ns; /* then the default action ends the process */
static int g_atfork_registered;

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* async-signal-safe */
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
arm(timer_t timer, long first_ms, long every_ms)
{
    struct itimerspec t;
    memset(&t, 0, sizeof t);
    t.it_value.tv_sec = first_ms / 1000;
    t.it_value.tv_nsec = (first_ms % 1000) * 1000000L;
    t.it_interval.tv_sec = every_ms / 1000;
    t.it_interval.tv_nsec = (every_ms % 1000) * 1000000L;
    timer_settime(timer, 0, &t, NULL);
}

static void
on_signal(int sig, siginfo_t* info, void* context)
{
    int saved = errno;
    if (g_wrapped.sa_flags & SA_SIGINFO) {
        g_wrapped.sa_sigaction(sig, info, context);
    } else if (g_wrapped.sa_handler != SIG_DFL && g_wrapped.sa_handler != SIG_IGN) {
        g_wrapped.sa_handler(sig);
    }
    if (!atomic_load(&g_taken) && g_have_timers) {
        if (!atomic_exchange(&g_pending, 1)) {
            /* The kicks reach the main thread if it lets them; the grace timer reaches any
             * thread that takes SIGTERM, should the main thread block it. */
            atomic_store(&g_deadline_ns, now_ns() + (FT_SIGTERM_GRACE_MS - 1) * 1000000LL);
            arm(g_kick, FT_SIGTERM_KICK_MS, FT_SIGTERM_KICK_MS);
            arm(g_grace, FT_SIGTERM_GRACE_MS, 0);
        } else if (now_ns() >= atomic_load(&g_deadline_ns)) {
            /* No Python handler could run: end as without fasttrace.  The signal is blocked
             * while this handler runs, so kill() leaves it pending until it returns. */
            arm(g_kick, 0, 0);
            struct sigaction dfl;
            memset(&dfl, 0, sizeof dfl);
            dfl.sa_handler = SIG_DFL;
            sigaction(sig, &dfl, NULL);
            kill(getpid(), sig);
        }
    }
    errno = saved;
}

/* The kick timer signals the calling thread (the main thread: guard(), or the thread that
 * forked, which CPython makes the child's main thread); the grace timer, the process. */
static void
make_timers(void)
{
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = g_signum;
    ev.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
    if (timer_create(CLOCK_MONOTONIC, &ev, &g_kick) < 0) {
        g_have_timers = 0;
        return;
    }
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = g_signum;
    if (timer_create(CLOCK_MONOTONIC, &ev, &g_grace) < 0) {
        int e = errno;
        timer_delete(g_kick);
        errno = e;
        g_have_timers = 0;
        return;
    }
    g_have_timers = 1;
}

/* Timers are not inherited by fork(); the wrapped handler is. */
static void
after_fork_in_child(void)
{
    if (g_signum == 0) {
        return;
    }
    atomic_store(&g_taken, 0);
    atomic_store(&g_pending, 0);
    make_timers();
}

int
ft_sigterm_guard(int signum)
{
    if (g_signum != 0 && g_signum != signum) {
        errno = EINVAL;
        return -1;
    }
    struct sigaction current;
    if (sigaction(signum, NULL, &current) < 0) {
        return -1;
    }
    if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == on_signal) {
        atomic_store(&g_taken, 0); /* guarded already: a new handler, a new SIGTERM to take */
        atomic_store(&g_pending, 0);
        return 0;
    }
    if (!(current.sa_flags & SA_SIGINFO) &&
        (current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN)) {
        errno = EINVAL; /* no handler to run: nothing to guard */
        return -1;
    }
    if (g_signum == 0) {
        g_signum = signum;
        make_timers();
        if (!g_have_timers) {
            g_signum = 0;
            return -1;
        }
        if (!g_atfork_registered) {
            g_atfork_registered = pthread_atfork(NULL, NULL, after_fork_in_child) == 0;
        }
    }
    atomic_store(&g_taken, 0);
    atomic_store(&g_pending, 0);
    struct sigaction wrapper = current;
    wrapper.sa_sigaction = on_signal;
    wrapper.sa_flags = (current.sa_flags | SA_SIGINFO) & ~SA_RESETHAND;
    g_wrapped = current; /* before the wrapper can run */
    return sigaction(signum, &wrapper, NULL);
}

void
ft_sigterm_taken(void)
{
    atomic_store(&g_taken, 1);
    if (g_have_timers) {
        arm(g_kick, 0, 0);
        arm(g_grace, 0, 0);
    }
    atomic_store(&g_pending, 0);
}

#else /* not Linux */

int
ft_sigterm_guard(int signum)
{
    (void)signum;
    errno = ENOSYS;
    return -1;
}

void
ft_sigterm_taken(void)
{
}

#endif

/* ft_sigterm.h: a SIGTERM that finishes the trace and still ends the process.
 *
 * `fasttrace run`, and every followed process, finishes its trace at SIGTERM with a Python
 * handler where the program had none (fasttrace/_sigterm.py).  CPython's C handler only sets a
 * flag; the Python handler runs later, in the main thread, between bytecodes.  When SIGTERM
 * lands on another thread, or on the main thread just before it blocks in a wait that only a
 * signal would end (after its last check of the flag: a multiprocessing lock's sem_wait), the
 * main thread never wakes.  multiprocessing's Pool.terminate() then hung for good in join():
 * it SIGTERMs workers blocked on the task queue's lock, which it holds (1 run in ~30 of
 * tests/integration/test_http_run.py).  Without a handler the default action would have ended
 * them at once.
 *
 * ft_sigterm_guard() wraps the C handler that signal.signal() installed.  After a SIGTERM that
 * no Python handler has taken (ft_sigterm_taken), a timer sends SIGTERM to the main thread
 * itself every FT_SIGTERM_KICK_MS: the wait fails with EINTR and CPython runs the handler.  If
 * none has taken it after FT_SIGTERM_GRACE_MS (a second timer then signals the process, in
 * case the main thread blocks SIGTERM), the default action ends the process, as it would have
 * without fasttrace; the trace then reads to its last chunk.  Linux only (a timer that signals
 * one thread); elsewhere guard() fails with ENOSYS and the handler is left as it is.
 */
#ifndef FT_SIGTERM_H
#define FT_SIGTERM_H

#define FT_SIGTERM_KICK_MS 50
#define FT_SIGTERM_GRACE_MS 2000

/* Main thread, GIL held, right after signal.signal(signum, handler).  0, or -1 with errno
 * (the handler then stays CPython's alone).  One signal number per process. */
int ft_sigterm_guard(int signum);

/* The Python handler, before anything else: it runs, no more kicks are needed. */
void ft_sigterm_taken(void);

#endif /* FT_SIGTERM_H */

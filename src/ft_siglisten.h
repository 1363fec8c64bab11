/* ft_siglisten.h: a signal that wakes a thread of fasttrace's, not the main thread.
 *
 * The flight recorder dumps at a signal (FlightRecorder(signal=), `fasttrace run --flight`:
 * SIGUSR2).  A Python handler runs only in the main thread, between bytecodes: a process whose
 * main thread waits in C code (a lock, a C library's blocking call, a SIGUSR2 that landed on
 * another thread or just before the wait) never dumped.  That is the state an operator most
 * wants a dump of.  Here the C handler posts a semaphore (async-signal-safe) and a listening
 * thread, blocked in ft_siglisten_wait() without the GIL, dumps; the main thread is never
 * interrupted (SA_RESTART).
 *
 * One listened signal per process at a time (one recorder runs at a time).  Each open() starts
 * a generation; close() ends it, wakes its waiter and returns once that waiter has left the
 * semaphore, so a waiter of an old generation never takes a signal meant for a new one.
 * POSIX unnamed semaphores: elsewhere than Linux open() may fail (ENOSYS), and the caller
 * keeps CPython's handler.
 */
#ifndef FT_SIGLISTEN_H
#define FT_SIGLISTEN_H

/* GIL held, after signal.signal(signum, python_handler): replaces the C handler CPython set
 * (kept, and put back by close()).  Returns the generation (> 0), or -1 with errno: EBUSY if a
 * signal is listened to already. */
long ft_siglisten_open(int signum);

/* Without the GIL, from the listening thread.  Blocks until a delivery of the signal (1; a
 * burst of them counts once), or until `generation` is closed (0). */
int ft_siglisten_wait(long generation);

/* GIL held.  Ends the open generation, if any: puts CPython's handler back where the signal
 * still goes to ours, and returns after the waiter, if any, has been woken and left. */
void ft_siglisten_close(void);

#endif /* FT_SIGLISTEN_H */

/* ft_fork.h: what the writer and the sampler share about fork().
 *
 * CPython 3.12+ warns in the parent, right after fork() returns, when the process has more than
 * one thread ("This process is multi-threaded, use of fork() may lead to deadlocks"), counting
 * them in /proc/self/stat.  fasttrace's native threads (writer, sampler) are therefore stopped
 * in a pthread_atfork prepare handler.  os.fork() warns after the pthread_atfork parent
 * handlers have run, so for it they are restarted from its Python after-fork hook (see
 * fasttrace._core); a fork() from C is restarted by the parent handler.
 */
#ifndef FT_FORK_H
#define FT_FORK_H

#include <stdint.h>

/* pthread_join returns once the kernel clears the thread's tid word, early in its exit; the
 * task leaves the thread group, and the count CPython reads, a little later (release_task).
 * Waits at most max_ns for /proc/self/task/<tid> to go. */
void ft_fork_wait_task_gone(int tid, uint64_t max_ns);

#endif /* FT_FORK_H */

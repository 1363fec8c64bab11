/* ft_fork.h: what the writer and the sampler share about fork().
 *
 * CPython 3.12+ warns in os.fork() when the process has more than one thread ("This process is
 * multi-threaded, use of fork() may lead to deadlocks"), counting them in /proc/self/stat:
 * 3.12 in the parent right after fork() returns, 3.13 just before fork(), after the Python
 * before-fork hooks.  fasttrace's native threads (writer, sampler) are therefore stopped in
 * os.fork()'s Python before-fork hook and restarted in its after-fork hook in the parent (see
 * fasttrace._core); a fork() from C (no Python hooks) is covered by pthread_atfork handlers
 * that do the same.
 */
#ifndef FT_FORK_H
#define FT_FORK_H

#include <stdint.h>

/* pthread_join returns once the kernel clears the thread's tid word, early in its exit; the
 * task leaves the thread group, and the count CPython reads, a little later (release_task).
 * Waits at most max_ns for /proc/self/task/<tid> to go. */
void ft_fork_wait_task_gone(int tid, uint64_t max_ns);

#endif /* FT_FORK_H */

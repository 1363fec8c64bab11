/* ft_fork.c: see ft_fork.h. */
#include "ft_fork.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
ft_fork_wait_task_gone(int tid, uint64_t max_ns)
{
    if (tid <= 0) {
        return;
    }
    char path[48];
    snprintf(path, sizeof path, "/proc/self/task/%d", tid);
    uint64_t until = now_ns() + max_ns;
    struct timespec pause = {0, 50000};
    while (access(path, F_OK) == 0 && now_ns() < until) {
        nanosleep(&pause, NULL);
    }
}

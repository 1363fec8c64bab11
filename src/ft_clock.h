/* ft_clock.h: the timestamp source of the hot path.
 *
 * On x86-64 with an invariant TSC (constant_tsc + nonstop_tsc) the hook reads rdtsc (~10 ns)
 * instead of clock_gettime (~21-29 ns through the vDSO on these VMs, per the design notes the
 * project started from).  The file
 * stores raw ticks; the reader converts them to ns with the (tick, CLOCK_MONOTONIC) pairs that
 * the writer records, so the hot path never divides.  Elsewhere, or with
 * FASTTRACE_CLOCK=monotonic, ticks are CLOCK_MONOTONIC nanoseconds.
 */
#ifndef FT_CLOCK_H
#define FT_CLOCK_H

#include <stdint.h>
#include <time.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

enum ft_clock_kind {
    FT_CLOCK_MONOTONIC = 1, /* ticks are CLOCK_MONOTONIC ns */
    FT_CLOCK_TSC = 2,       /* ticks are rdtsc counts */
};

extern int ft_clock_is_tsc;

static inline uint64_t
ft_clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t
ft_clock_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t
ft_ticks(void)
{
#if defined(__x86_64__)
    if (ft_clock_is_tsc) {
        return __rdtsc();
    }
#endif
    return ft_clock_mono_ns();
}

/* A (tick, monotonic ns, wall ns) triple read as close together as possible. */
typedef struct {
    uint64_t tick;
    uint64_t mono_ns;
    uint64_t wall_ns;
} ft_clock_sync;

/* Chooses the tick source once per process.  Returns FT_CLOCK_TSC or FT_CLOCK_MONOTONIC. */
int ft_clock_init(void);
void ft_clock_sample(ft_clock_sync* out);
/* Ticks per second, measured once at init (exactly 1e9 for FT_CLOCK_MONOTONIC). */
double ft_clock_tick_hz(void);

#endif /* FT_CLOCK_H */

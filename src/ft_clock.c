/* ft_clock.c: choosing and calibrating the tick source (see ft_clock.h). */
#include "ft_clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ft_clock_is_tsc = 0;
static int g_clock_ready = 0;
static double g_tick_hz = 1e9;

/* The TSC is only a clock when it ticks at a constant rate through P- and C-states. */
static int
tsc_is_invariant(void)
{
#if defined(__x86_64__) && defined(__linux__)
    FILE* f = fopen("/proc/cpuinfo", "r");
    if (f == NULL) {
        return 0;
    }
    char line[4096];
    int constant = 0, nonstop = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "flags", 5) == 0) {
            constant = strstr(line, " constant_tsc") != NULL;
            nonstop = strstr(line, " nonstop_tsc") != NULL;
            break;
        }
    }
    fclose(f);
    return constant && nonstop;
#else
    return 0;
#endif
}

void
ft_clock_sample(ft_clock_sync* out)
{
    /* Bracket the monotonic read with two tick reads and keep the tightest of a few tries, so
     * the pair is accurate to a few tens of ns. */
    uint64_t best_span = UINT64_MAX;
    for (int i = 0; i < 5; i++) {
        uint64_t t0 = ft_ticks();
        uint64_t mono = ft_clock_mono_ns();
        uint64_t t1 = ft_ticks();
        if (t1 - t0 < best_span) {
            best_span = t1 - t0;
            out->tick = t0 + (t1 - t0) / 2;
            out->mono_ns = mono;
        }
    }
    out->wall_ns = ft_clock_wall_ns();
}

int
ft_clock_init(void)
{
    if (g_clock_ready) {
        return ft_clock_is_tsc ? FT_CLOCK_TSC : FT_CLOCK_MONOTONIC;
    }
    const char* forced = getenv("FASTTRACE_CLOCK");
    int want_tsc = !(forced != NULL && strcmp(forced, "monotonic") == 0);
    ft_clock_is_tsc = want_tsc && tsc_is_invariant();
    if (ft_clock_is_tsc) {
        /* A 0.5 ms calibration (about 1e-4 relative error) gives the reader a rate for files
         * that end before the writer's first clock record, 10 ms after start; every later
         * record refines it.  It runs once per process, inside the first start(). */
        ft_clock_sync a, b;
        ft_clock_sample(&a);
        do {
            ft_clock_sample(&b);
        } while (b.mono_ns - a.mono_ns < 500000u);
        g_tick_hz = (double)(b.tick - a.tick) * 1e9 / (double)(b.mono_ns - a.mono_ns);
    }
    g_clock_ready = 1;
    return ft_clock_is_tsc ? FT_CLOCK_TSC : FT_CLOCK_MONOTONIC;
}

double
ft_clock_tick_hz(void)
{
    return g_tick_hz;
}

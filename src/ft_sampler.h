/* ft_sampler.h: sampling mode.  A native thread that never takes the GIL wakes `rate` times a
 * second (jittered), reads every Python thread's stack with process_vm_readv and writes one
 * SAMPLE record per thread into its own chunk ring, which the writer drains like any other.
 *
 * Why this design (docs/sampling-design.md has the measurements): a sampler that takes the GIL
 * only runs at GIL switch points, tops out near 1/switchinterval and never sees a short CPU
 * burst that ends in a blocking call; one that reads without the GIL sees every thread at the
 * tick, running or not, and costs the application threads nothing.
 *
 * Concurrency: ft_sampler_start/ft_sampler_set_thread_name run with the GIL; the sampler thread
 * runs without it and owns its tables; `names_lock` guards the thread table against naming;
 * the code watcher (3.12+, GIL held, any thread) only tombstones entries of dying code objects;
 * with a scope's patterns, the scope helper (GIL held) decides the file names the sampler
 * publishes, each one state byte the sampler reads without a lock (see below).
 */
#ifndef FT_SAMPLER_H
#define FT_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double rate_hz;
    int clock;                     /* ft_sample_clock */
    const uint8_t* call_opcodes;   /* 256 flags: the opcode is a call (copied) */
    const void* const* stop_codes; /* code objects whose frames, and all outer ones, are cut */
    int n_stop_codes;              /* at most FT_SAMPLER_MAX_STOP_CODES */
    /* The capture's scope (fasttrace/_scope.py; FORMAT.md section 8 says what it keeps).
     * scope_patterns: include/exclude were given, and each file's code is decided, with the
     * GIL, by the scope helper (ft_sampler_scope_*), since the sampler cannot call Python;
     * trim_stacks: a sample keeps only its in-scope frames; max_depth: a stack keeps its
     * outermost max_depth frames (UINT32_MAX: no limit). */
    int scope_patterns;
    int trim_stacks;
    uint32_t max_depth;
} ft_sampler_config;

#define FT_SAMPLER_MAX_STOP_CODES 16

typedef struct {
    uint64_t values[16]; /* ft_sampler_stat order; FT_STAT_COUNT (<= 16) used */
    double rate_hz;
    int clock;
} ft_sampler_stats;

/* GIL held, session started.  Returns 0, an errno value, or FT_SAMPLER_ELAYOUT when the
 * layout check below refused (ft_sampler_layout_error() says why); nothing is left running. */
int ft_sampler_start(const ft_sampler_config* cfg);
#define FT_SAMPLER_ELAYOUT 0x10000 /* not an errno value */
/* GIL held.  3.13+: compares the struct layouts this build reads with the running
 * interpreter's own description of them (_PyRuntime.debug_offsets; ft_compat.h has the list
 * and the reasons).  0 when they agree (always before 3.13); else FT_SAMPLER_ELAYOUT and a
 * one-line message in msg, naming the first field that differs and both values.
 * FASTTRACE_DEBUG_OFFSETS_SKEW=NAME skews one field of the copy compared: a test hook. */
int ft_sampler_check_layout(char* msg, size_t cap);
/* The message of ft_sampler_start's last FT_SAMPLER_ELAYOUT. */
const char* ft_sampler_layout_error(void);
/* The i-th field the layout check compares ("interpreter_frame.instr_ptr"), NULL past the
 * last (at once before 3.13). */
const char* ft_sampler_layout_field(int i);
/* Joins the sampler thread, publishes its last chunk and writes the stats def.  No GIL needed;
 * a no-op when no sampler runs.  Called before ft_session_finish.  Samples still held for a
 * scope decision (see below) are written first; those whose files nobody decided (the
 * helper was not joined: an exit without stop()) are counted as dropped. */
void ft_sampler_stop(ft_sampler_stats* out);
/* No GIL needed: joins the sampler thread ahead of ft_sampler_stop (which then finishes the
 * file), so that the last scope decisions can be made with the GIL before it.  The duration
 * ends here.  A no-op when no sampler runs or it was halted already. */
void ft_sampler_halt(void);

/* ---- the scope helper (cfg.scope_patterns) -------------------------------------------------
 * The sampler meets a code object's file name at first sight, on its own thread, where it
 * cannot call the scope's Python predicate.  Each new file name is published to a helper, a
 * Python thread of fasttrace's own (never sampled), which decides it with the GIL and stores
 * the answer where the sampler reads it without a lock.  Samples whose frames are not all
 * decided yet are held, in order, by the sampler until they are (usually a few ms), and only
 * what the scope keeps is written.
 *
 *   ft_sampler_scope_expect()        GIL held, before the helper thread is started
 *   ft_sampler_scope_enter(ident)    the helper, first (GIL held): -1 if told to stop already
 *   ft_sampler_scope_wait(&a, &b)    the helper, without the GIL: blocks until files [a, b)
 *                                    wait for a decision (0), or it is told to stop (-1)
 *   ft_sampler_scope_file(i, &len)   GIL held: file i's name (UTF-8, surrogates kept)
 *   ft_sampler_scope_decide(i, in)   GIL held: file i is in scope or not
 *   ft_sampler_scope_taken(b)        the files before b are decided
 *   ft_sampler_scope_exit()          the helper, last (also when enter refused, or when the
 *                                    thread could not be started)
 *   ft_sampler_scope_join()          stop(), without the GIL, after ft_sampler_halt: tells the
 *                                    helper to stop and waits until it has exited
 *   ft_sampler_scope_pause()         os.fork()'s before hook, without the GIL: the same, and
 *                                    waits for its task to leave the thread list (ft_fork.h);
 *                                    1 if a helper ran (the caller starts it again after the
 *                                    fork, in the parent, after _expect)
 *   ft_sampler_scope_pending(&a, &b) then, GIL held: the files still undecided, which the
 *                                    caller decides as the helper would have */
void ft_sampler_scope_expect(void);
int ft_sampler_scope_enter(uint64_t ident);
int ft_sampler_scope_wait(uint32_t* first, uint32_t* end);
const char* ft_sampler_scope_file(uint32_t i, size_t* len);
void ft_sampler_scope_decide(uint32_t i, int in);
void ft_sampler_scope_taken(uint32_t end);
void ft_sampler_scope_exit(void);
void ft_sampler_scope_join(void);
int ft_sampler_scope_pause(void);
void ft_sampler_scope_pending(uint32_t* first, uint32_t* end);
int ft_sampler_running(void);
/* GIL held.  Names (and, before 3.11, gives the kernel tid of) the newest sampled thread with
 * this threading ident; unless `force`, a thread already named keeps its name.  A thread the
 * sampler has not met yet gets the name when it is met (threads are named as they start).
 * min_uid: the thread's state was made after ft_sampler_last_thread_uid() returned
 * min_uid - 1 (0: unknown). */
void ft_sampler_set_thread_name(uint64_t ident, const char* name, uint64_t native_id,
                                int force, uint64_t min_uid);
/* GIL held: every thread state made from now on has an id above this. */
uint64_t ft_sampler_last_thread_uid(void);
/* GIL held, after ft_session_finish: frees the sampler's tables. */
void ft_sampler_release(void);
/* After fork in the child: the sampler thread is gone; forget it without joining. */
void ft_sampler_abandon(void);
/* os.fork()'s Python hooks (before, and after in the parent).  The sampler thread is stopped
 * around every fork() by pthread_atfork handlers; CPython 3.12+ counts the process's threads
 * after those handlers, so for os.fork() the parent's restart waits for fork_resume.  No-ops
 * when no sampler runs. */
void ft_sampler_fork_defer(void);
void ft_sampler_fork_resume(void);

#endif /* FT_SAMPLER_H */

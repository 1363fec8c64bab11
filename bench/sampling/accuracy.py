"""Accuracy tests for the sampler prototype (run with the Python under test):

  python bench/sampling/accuracy.py [--rate 100] [--mode nogil|snap|gil] [--no-jitter] [--seconds 3]

split : main thread spins a() 6 ms, b() 3 ms, c() 1 ms in a loop; share of main-thread samples
        whose innermost frame is a/b/c vs the measured true time share.
sleep : meanwhile a second thread sits in time.sleep(); share of its samples marked waiting
        (not holding the GIL) and share whose top instruction is a CALL.
pulse : main thread runs pulse() for 1 ms at the start of every 10 ms period (absolute
        schedule) and time.sleep()s the rest; share of main-thread samples in pulse() vs truth.
"""
import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import sampler  # noqa: E402

pc = time.perf_counter


def a(d):
    end = pc() + d
    while pc() < end:
        pass


def b(d):
    end = pc() + d
    while pc() < end:
        pass


def c(d):
    end = pc() + d
    while pc() < end:
        pass


def pulse(d):
    end = pc() + d
    while pc() < end:
        pass


def sleeper(s):
    time.sleep(s)


def name(frame_str):
    return frame_str.split(" ", 1)[0]


def run(args):
    out = {"python": sys.version.split()[0], "rate": args.rate, "mode": args.mode,
           "jitter": not args.no_jitter}
    main_tid = threading.get_native_id()
    # --- split + sleep -----------------------------------------------------------------
    th = threading.Thread(target=sleeper, args=(args.seconds + 0.5,))
    th.start()
    sleeper_tid = None
    while sleeper_tid is None:
        sleeper_tid = th.native_id
    time.sleep(0.05)
    truth = {"a": 0.0, "b": 0.0, "c": 0.0}
    sampler.start(args.rate, "nogil" if args.mode == "snap" else args.mode, not args.no_jitter,
                  snapshot=args.mode == "snap")
    t_end = pc() + args.seconds
    while pc() < t_end:
        for f, d in ((a, 0.006), (b, 0.003), (c, 0.001)):
            t0 = pc()
            f(d)
            truth[f.__name__] += pc() - t0
    stats, samples = sampler.stop()
    th.join()
    tot = sum(truth.values())
    cnt = {"a": 0, "b": 0, "c": 0}
    main_n = main_gil = 0
    sl_n = sl_wait = sl_call = 0
    for ts, tid, fl, stack in samples:
        if tid == main_tid:
            main_n += 1
            main_gil += bool(fl & sampler.HOLDS_GIL)
            if stack and name(stack[0]) in cnt:
                cnt[name(stack[0])] += 1
        elif tid == sleeper_tid:
            sl_n += 1
            sl_wait += not (fl & sampler.HOLDS_GIL)
            sl_call += bool(fl & sampler.TOP_CALL)
    n = max(1, sum(cnt.values()))
    out["split"] = {
        "main_samples": main_n,
        "achieved_hz": stats["ticks"] / stats["duration_s"],
        "truth_pct": {k: round(100 * v / tot, 1) for k, v in truth.items()},
        "sampled_pct": {k: round(100 * v / n, 1) for k, v in cnt.items()},
        "main_holds_gil_pct": round(100 * main_gil / max(1, main_n), 1),
        "torn": stats["torn"], "read_fail": stats["read_fail"],
        "gil_disagree": stats["gil_disagree"],
    }
    out["sleep"] = {"samples": sl_n, "waiting_pct": round(100 * sl_wait / max(1, sl_n), 1),
                    "top_call_pct": round(100 * sl_call / max(1, sl_n), 1)}
    # --- pulse ---------------------------------------------------------------------------
    in_pulse = 0.0
    sampler.start(args.rate, "nogil" if args.mode == "snap" else args.mode, not args.no_jitter,
                  snapshot=args.mode == "snap")
    t0 = pc()
    k = 0
    t_end = t0 + args.seconds
    while True:
        start = t0 + k * 0.010
        if start >= t_end:
            break
        now = pc()
        if now < start:
            time.sleep(start - now)
        s = pc()
        pulse(0.001)
        in_pulse += pc() - s
        k += 1
    wall = pc() - t0
    stats, samples = sampler.stop()
    m = [s for s in samples if s[1] == main_tid]
    hits = sum(1 for s in m if any(name(f) == "pulse" for f in s[3][:1]))
    waiting = sum(1 for s in m if not (s[2] & sampler.HOLDS_GIL))
    out["pulse"] = {"main_samples": len(m), "achieved_hz": stats["ticks"] / stats["duration_s"],
                    "truth_pct": round(100 * in_pulse / wall, 1),
                    "sampled_pct": round(100 * hits / max(1, len(m)), 1),
                    "waiting_pct": round(100 * waiting / max(1, len(m)), 1),
                    "torn": stats["torn"], "read_fail": stats["read_fail"],
                    "fifo_ok": stats.get("fifo_ok", 0)}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--mode", default="nogil")
    ap.add_argument("--no-jitter", action="store_true")
    ap.add_argument("--seconds", type=float, default=3.0)
    print(json.dumps(run(ap.parse_args())))

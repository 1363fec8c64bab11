"""`fasttrace view` at scale (issue 12): for traces of 1M, 10M and 100M events, the index time
and peak RSS, the time to first paint in headless Chromium, and the frame rate of zoom and pan.

    python3 bench/viewer_scale.py [--events 1e6,1e7,1e8] [--python PY] [--keep DIR]

Each trace is recorded by `fasttrace run` from a workload of nested Python and C calls of
varied length (generated here, two threads).  Then, in separate processes:

* index: `fasttrace._timeline.Index(trace)` alone: wall time and the process's peak RSS
  (ru_maxrss), with the bytes of pyramid it kept;
* first paint: `fasttrace view --no-browser` is started, Chromium opens the URL, and the clock
  stops when the page says every lane is drawn and complete (its own state) -- from the
  command's start, so it includes loading, indexing and serving; the server's peak RSS
  (VmHWM) is read then;
* zoom and pan: for 7 s the page zooms in (100 frames of x0.85: from the whole trace to a few
  microseconds across), pans, zooms out and pans again, one step per animation frame, and
  counts the frames; the draw time per frame (p50, p95, max) is measured around the
  timeline's draw().  Tiles the page lacks meanwhile are fetched (and, below the pyramid's
  finest kept level, decoded again by the server) while coarser ones are drawn.

Needs Debian's chromium and Playwright for Python (the test extra).  Prints a table and
writes bench/out/viewer_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKLOAD = textwrap.dedent('''
    import sys, threading
    events = int(sys.argv[1]) // 2       # per thread
    def leaf(x):
        return len(str(x))               # a C call or two below each leaf
    def mid(x, n):
        s = 0
        for i in range(n):
            s += leaf(x + i)
        return s
    def rec(d, x):
        return mid(x, 3) if d == 0 else rec(d - 1, x) + leaf(d)
    def top(n):
        done = 0
        i = 0
        while done < n:
            rec(i % 7, i)
            done += 16 + 6 * (i % 7)  # 3d + 8 calls (a leaf: itself and len), 2 events each
            i += 1
    def worker(n):
        top(n)
    t = threading.Thread(target=worker, args=(events,), name="worker")
    t.start(); worker(events); t.join()
''')

PAINTED = ("window.fasttraceViewer && fasttraceViewer.state.ready && "
           "fasttraceViewer.state.lanes.length > 0 && "
           "fasttraceViewer.state.lanes.every(l => l.complete && l.drawn > 0)")

# One zoom or pan step per animation frame for `ms`; timing around the timeline's draw().
ANIMATE = """async (ms) => {
  const tl = fasttraceViewer.timeline, draw = tl.draw.bind(tl), times = [];
  tl.draw = () => { const a = performance.now(); draw(); times.push(performance.now() - a); };
  const t0 = performance.now(); let frames = 0, i = 0;
  await new Promise((done) => {
    const step = () => {
      if (performance.now() - t0 > ms) return done();
      const phase = Math.floor(i / 100) % 4; i++;
      if (phase === 0) tl.zoom(0.85); else if (phase === 1) tl.pan(25);
      else if (phase === 2) tl.zoom(1 / 0.85); else tl.pan(-25);
      frames++; requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  });
  tl.draw = draw;
  const el = performance.now() - t0;
  times.sort((a, b) => a - b);
  const q = (p) => times.length
    ? times[Math.min(times.length - 1, Math.floor(p * times.length))] : 0;
  return { fps: frames / (el / 1000), draws: times.length, p50: q(0.5), p95: q(0.95),
           max: times.length ? times[times.length - 1] : 0 };
}"""

INDEX = textwrap.dedent('''
    import json, resource, sys, time
    import fasttrace
    from fasttrace._timeline import Index
    t = time.perf_counter()
    trace = fasttrace.load(sys.argv[1])
    index = Index(trace)
    took = time.perf_counter() - t
    p = index.processes[0]
    print(json.dumps({"index_s": took, "events": trace.stats.events,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "kept_mb": p._fold.kept_bytes / 2**20, "finest_level": p._fold.finest_level,
                      "slices": sum(t.slices for t in p.threads)}))
''')


def record(python: str, events: int, out: Path, work: Path) -> int:
    script = work / "workload.py"
    script.write_text(WORKLOAD)
    r = subprocess.run([python, "-m", "fasttrace", "run", "-o", str(out), str(script),
                        str(events)], capture_output=True, text=True, cwd=work)
    if r.returncode != 0:
        sys.exit(f"recording failed: {r.stderr}")
    m = re.search(r"wrote ([\d,]+) events", r.stderr)
    return int(m.group(1).replace(",", "")) if m else 0


def index_alone(python: str, trace: Path, work: Path) -> dict:
    r = subprocess.run([python, "-c", INDEX, str(trace)], capture_output=True, text=True,
                       cwd=work)
    if r.returncode != 0:
        sys.exit(f"indexing failed: {r.stderr}")
    return dict(json.loads(r.stdout))


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def view(python: str, trace: Path, work: Path, browser, animate_ms: int) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen([python, "-m", "fasttrace", "view", "--no-browser", str(trace)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=work)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"(http://\S+)", line)
        if not m:
            sys.exit(f"no URL from fasttrace view: {line!r}")
        served = time.perf_counter() - start
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        errors: list = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(m.group(1))
        page.wait_for_function(PAINTED, timeout=120_000)
        painted = time.perf_counter() - start
        rss = vm_hwm_mb(proc.pid)
        motion = page.evaluate(ANIMATE, animate_ms)
        page.close()
        return {"served_s": served, "first_paint_s": painted, "server_rss_mb": rss,
                "errors": errors, **motion}
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", default="1e6,1e7,1e8")
    ap.add_argument("--python", default=sys.executable,
                    help="the interpreter with fasttrace installed (default: this one)")
    ap.add_argument("--keep", help="keep the traces in this directory")
    ap.add_argument("--animate-ms", type=int, default=7000)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("no chromium on PATH (apt-get install chromium)")
    work = Path(args.keep or tempfile.mkdtemp(prefix="viewer-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for n in [int(float(x)) for x in args.events.split(",")]:
            trace = work / f"t{n}.ftrace"
            recorded = record(args.python, n, trace, work)
            row = {"asked": n, "recorded": recorded, "file_mb": trace.stat().st_size / 1e6}
            row.update(index_alone(args.python, trace, work))
            row.update(view(args.python, trace, work, browser, args.animate_ms))
            rows.append(row)
            print(f"{recorded:>12,} events {row['file_mb']:7.1f} MB | index {row['index_s']:6.2f} s"
                  f" rss {row['rss_mb']:6.0f} MB (pyramid {row['kept_mb']:.0f} MB, finest level"
                  f" {row['finest_level']}) | first paint {row['first_paint_s']:5.2f} s,"
                  f" server rss {row['server_rss_mb']:5.0f} MB | zoom/pan {row['fps']:5.1f} fps,"
                  f" draw p50 {row['p50']:.1f} p95 {row['p95']:.1f} max {row['max']:.1f} ms"
                  + (f" | page errors: {row['errors']}" if row["errors"] else ""), flush=True)
            if not args.keep:
                trace.unlink()
        browser.close()
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "viewer_scale.json").write_text(json.dumps(rows, indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()

"""Capture-time scope (issue 13): `fasttrace.start(include=, exclude=, max_depth=,
min_duration=)` and `fasttrace run --include/--exclude/--max-depth/--min-duration` record only
what is in scope, with nesting kept balanced, and the file says what the scope was.

Every traced run happens in a fresh interpreter (a subprocess, cwd=tmp_path): the hooks decide
a function's scope once per process (3.12+ disables out-of-scope code for good), so a test
needs an interpreter of its own.  The program is a small package written under tmp_path:

    myapp/__init__.py        pkg_fn              module `myapp`
    myapp/core.py            the workloads       module `myapp.core`
    myapp/sub/deep.py        leaf_cb, ...        module `myapp.sub.deep`
    other.py                 bridges, generators module `other` (out of scope in most cases)
    lib/site-packages/vendorpkg/util.py   vend   module `vendorpkg.util`, by its path

A recorded function is named by its key: `myapp.core.run` for Python code under tmp_path
(module from the file's path, then the code's name), `#list.append` for a C function, and
`FILE:name` for anything else (which no expectation here contains).  A call tree is written as
`run(helper(#list.append #sorted) pkg_fn)`; expectations are the unscoped call tree of a
workload pruned to the keys in scope, so they say exactly what must be recorded and where it
nests (an in-scope call from out-of-scope code hangs under its nearest in-scope ancestor).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

import fasttrace
from fasttrace import _core

PLAIN_HOOK = "monitoring" if sys.version_info >= (3, 12) else "profile"
HAS_EVAL_FRAME = bool(getattr(_core, "HAS_EVAL_FRAME", False))

# ---- the program ------------------------------------------------------------------------------

SOURCES = {
    "myapp/__init__.py": """
        def pkg_fn():
            return 1
    """,
    "myapp/sub/__init__.py": "",
    "myapp/sub/deep.py": """
        def leaf_cb(x=0):
            return abs(x)

        def deep_work(xs):
            return total(xs)

        def total(xs):
            return sum(xs)
    """,
    "myapp/late.py": """
        from myapp.sub import deep

        def late_fn():
            return deep.total([1])

        _ready = late_fn()
    """,
    "otherlate.py": """
        def olate_fn(cb):
            return cb()

        _ready = olate_fn(lambda: 0)
    """,
    "lib/site-packages/vendorpkg/__init__.py": "",
    "lib/site-packages/vendorpkg/util.py": """
        def vend(s):
            return s.upper()
    """,
    "other.py": """
        def bridge(cb):
            return inner_bridge(cb)

        def inner_bridge(cb):
            return cb(-len("abc"))

        def call(fn, *args):
            return fn(*args)

        def passthrough(fn):
            return fn()

        def catch_here(fn):
            try:
                fn()
            except KeyError:
                return "caught"

        def gen_out(cb):
            while True:
                try:
                    yield cb()
                except KeyError:
                    cb()

        def wrap_gen(inner):
            yield from inner

        def rec_out(n, fn):
            return fn(n - 1)

        def rec_pure(n, cb):
            if n == 0:
                return cb()
            return rec_pure(n - 1, cb)

        def make_lambdas(n):
            out = []
            for i in range(n):
                out.append(lambda x, i=i: x + i)
            return out

        def make_class():
            class OutK:
                def ometh(self, cb):
                    return cb()
            return OutK

        async def coro_out(inner):
            return await inner(2)
    """,
    "myapp/core.py": """
        import asyncio
        import collections
        import os
        import threading
        import time

        import myapp
        import other
        import vendorpkg.util
        from myapp.sub import deep

        _lock = threading.RLock()
        _od = collections.OrderedDict(a=1, b=2)


        def run():
            xs = helper([3, 1, 2])
            myapp.pkg_fn()
            other.bridge(deep.leaf_cb)
            _lock.acquire()
            _lock.release()
            _od.move_to_end("a")
            vendorpkg.util.vend("x")
            return deep.deep_work(xs)


        def helper(xs):
            xs.append(4)
            return sorted(xs)


        _go = threading.Event()
        _ready = threading.Event()
        _waiting = []


        def waiter():
            _ready.set()
            other.call(_go.wait)
            deep.leaf_cb()


        def start_waiter():
            t = threading.Thread(target=waiter, name="waiter")
            t.start()
            _ready.wait()
            _waiting.append(t)


        def release_waiter():
            _go.set()
            _waiting[0].join()


        def threaded():
            threads = []
            for i in range(2):
                threads.append(threading.Thread(target=other.bridge, args=(deep.leaf_cb,),
                                                name=f"w{i}"))
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            deep.deep_work([1, 2])


        DYN = "def dyn_fn():\\n    return dyn_inner()\\n\\ndef dyn_inner():\\n    return 1\\n"
        STR = "def str_fn(cb):\\n    return cb()\\n"


        def dynamic():
            ns = {}
            exec(compile(DYN, os.path.join(os.path.dirname(__file__), "dyn_in.py"), "exec"), ns)
            ns["dyn_fn"]()
            ns2 = {}
            exec(STR, ns2)
            ns2["str_fn"](deep.leaf_cb)
            import myapp.late
            myapp.late.late_fn()
            import otherlate
            otherlate.olate_fn(deep.leaf_cb)
            fns = []
            for i in range(2):
                fns.append(lambda x, i=i: x + i)
            for f in fns:
                f(1)
            for f in other.make_lambdas(2):
                f(1)

            class Late:
                def meth(self):
                    return deep.total([1])

            Late().meth()
            other.make_class()().ometh(deep.leaf_cb)


        def dyn_exec():
            # only code made by exec() is outside myapp here
            ns = {}
            exec("def e_fn(cb):\\n    return e_inner(cb)\\n\\ndef e_inner(cb):\\n    return cb()\\n"
                 "class EK:\\n    def m(self):\\n        return (lambda: 1)()\\n", ns)
            ns["e_fn"](deep.leaf_cb)
            ns["EK"]().m()


        def gen_in(n):
            for i in range(n):
                yield i


        def gen_catch():
            while True:
                try:
                    yield 1
                except KeyError:
                    deep.leaf_cb()


        def generators():
            for _ in gen_in(2):
                pass
            g = other.gen_out(deep.leaf_cb)
            next(g)
            next(g)
            g.close()
            for _ in other.wrap_gen(gen_in(1)):
                pass


        def throws():
            g = other.gen_out(deep.leaf_cb)
            next(g)
            g.throw(KeyError("k"))
            try:
                g.throw(ValueError("v"))
            except ValueError:
                pass
            h = gen_catch()
            next(h)
            h.throw(KeyError("k"))
            try:
                h.throw(ValueError("v"))
            except ValueError:
                pass


        def raiser():
            raise KeyError("x")


        def nested_raise(n):
            if n == 0:
                raise KeyError(n)
            other.call(nested_raise, n - 1)


        def exceptions():
            try:
                other.passthrough(raiser)
            except KeyError:
                pass
            other.catch_here(raiser)
            try:
                divmod(1, 0)
            except ZeroDivisionError:
                pass
            try:
                nested_raise(2)
            except KeyError:
                pass


        def rec_in(n):
            if n <= 0:
                return deep.total([n])
            if n % 2:
                return other.rec_out(n, rec_in)
            return rec_in(n - 1)


        def recursion():
            rec_in(4)
            other.rec_pure(3, deep.leaf_cb)


        async def coro_leaf(n):
            await asyncio.sleep(0)
            return n


        async def coro_main():
            a = await coro_leaf(1)
            b = await other.coro_out(coro_leaf)
            r = await asyncio.gather(coro_leaf(3), coro_leaf(4))
            return a + b + r[0] + r[1]


        def coroutines():
            return asyncio.run(coro_main())


        def chain(n):
            if n > 0:
                chain(n - 1)
            return len("ab")


        def chain_via_other(n):
            if n > 0:
                other.call(chain_via_other, n - 1)
            return len("ab")


        def depths():
            chain(4)
            chain_via_other(3)


        def quick():
            return 1


        def slow():
            time.sleep(0.02)


        def gen_slow():
            time.sleep(0.02)
            yield 1
            yield 2


        def raise_slow():
            time.sleep(0.02)
            raise KeyError("slow")


        def rec_slow(n):
            if n:
                return other.call(rec_slow, n - 1)
            time.sleep(0.02)


        def mixed():
            for _ in gen_slow():
                quick()
            try:
                raise_slow()
            except KeyError:
                quick()
            rec_slow(3)
            t = threading.Thread(target=slow, name="ms")
            t.start()
            t.join()
            quick()


        def stops_inside(long):
            import fasttrace
            quick()
            if long:
                time.sleep(0.02)
            fasttrace.stop()


        def stops_long():
            stops_inside(True)


        def stops_short():
            stops_inside(False)


        def named_thread():
            t = threading.Thread(target=slow, name="slow-worker")
            t.start()
            t.join()


        def timed():
            for _ in range(50):
                quick()
            slow()
            for _ in range(50):
                quick()
    """,
}

# The driver: imports everything, then for each session starts a trace, runs the workload and
# stops; nothing but the workload runs between start() and stop().
DRIVER = """
import importlib, json, os, sys, warnings
sys.path.insert(1, os.path.join(os.getcwd(), "lib", "site-packages"))
import fasttrace
cfg = json.loads(sys.argv[1])
mod, _, name = cfg["work"].partition(":")
work = getattr(importlib.import_module(mod), name)
if cfg.get("before"):
    mod, _, name = cfg["before"].partition(":")
    getattr(importlib.import_module(mod), name)()
warnings.simplefilter("always")
for s in cfg["sessions"]:
    if s.get("with"):
        with fasttrace.start(s["out"], **s["opts"]):
            work()
    else:
        fasttrace.start(s["out"], **s["opts"])
        work()
        if fasttrace.is_tracing():
            fasttrace.stop()
"""

# run() unscoped, with its C calls (`#`).
RUN_TREE = """
myapp.core.run(
  myapp.core.helper(#list.append #sorted)
  myapp.pkg_fn
  other.bridge(other.inner_bridge(#len myapp.sub.deep.leaf_cb(#abs)))
  #_thread.RLock.acquire #_thread.RLock.release
  #collections.OrderedDict.move_to_end
  vendorpkg.util.vend(#str.upper)
  myapp.sub.deep.deep_work(myapp.sub.deep.total(#sum)))
"""
RUN_PY = {"myapp.core.run", "myapp.core.helper", "myapp.pkg_fn", "other.bridge",
          "other.inner_bridge", "myapp.sub.deep.leaf_cb", "vendorpkg.util.vend",
          "myapp.sub.deep.deep_work", "myapp.sub.deep.total"}
MYAPP = {"myapp.core.run", "myapp.core.helper", "myapp.pkg_fn", "myapp.sub.deep.leaf_cb",
         "myapp.sub.deep.deep_work", "myapp.sub.deep.total"}
DEEP = {"myapp.sub.deep.leaf_cb", "myapp.sub.deep.deep_work", "myapp.sub.deep.total"}
BUILTINS = {"#list.append", "#sorted", "#len", "#abs", "#str.upper", "#sum"}
THREAD_C = {"#_thread.RLock.acquire", "#_thread.RLock.release"}
ODICT_C = {"#collections.OrderedDict.move_to_end"}


def write_program(base: Path) -> None:
    for rel, text in SOURCES.items():
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    (base / "driver.py").write_text(DRIVER)


# ---- how a test runs the program --------------------------------------------------------------

# Trace-mode ways to hook this Python: with C calls (the plain hook: sys.monitoring on 3.12+,
# the profile function before); without (the default choice); and on 3.11 and 3.12 without C
# calls through the other hook as well (FASTTRACE_HOOK).  On 3.12 the default without C calls
# is the frame evaluator, except with include/exclude patterns: sys.monitoring, whose DISABLE
# lets code out of scope run unhooked (fasttrace/_capture.py, _choose_hook).
MODES = ["c_calls", "no_c_calls"] + (["no_c_calls_other"] if HAS_EVAL_FRAME else [])


def default_hook(patterns: bool) -> str:
    """The hook start(c_calls=False) chooses."""
    if not HAS_EVAL_FRAME:
        return PLAIN_HOOK
    return "monitoring" if patterns and PLAIN_HOOK == "monitoring" else "eval_frame"


def other_hook(patterns: bool) -> str:
    return PLAIN_HOOK if default_hook(patterns) == "eval_frame" else "eval_frame"


def expected_hook(mode: str, patterns: bool = False) -> str:
    if mode == "c_calls":
        return PLAIN_HOOK
    if mode == "no_c_calls":
        return os.environ.get("FASTTRACE_HOOK") or default_hook(patterns)
    return other_hook(patterns)


def mode_options(mode: str, patterns: bool = False) -> "tuple[dict, dict]":
    """(start() options, environment additions) of a mode."""
    if mode == "c_calls":
        return {"c_calls": True}, {}
    if mode == "no_c_calls":
        return {"c_calls": False}, {}
    return {"c_calls": False}, {"FASTTRACE_HOOK": other_hook(patterns)}


# the modes of a trace with include/exclude patterns
SCOPED_MODES = list(MODES)


def child_env(extra=None) -> dict:
    env = dict(os.environ)
    env.pop("FASTTRACE_CHILDREN", None)
    env.update(extra or {})
    return env


def drive(base: Path, work: str, sessions, env=None, timeout=120, before=None):
    """Runs driver.py in a fresh interpreter: `before` ("module:function") untraced, then
    `work` once per session (dicts with "out", "opts" and optionally "with").  Returns the
    CompletedProcess."""
    write_program(base)
    cfg = {"work": work, "sessions": sessions, "before": before}
    return subprocess.run([sys.executable, "driver.py", json.dumps(cfg)], cwd=base,
                          env=child_env(env), capture_output=True, text=True, timeout=timeout)


def trace_work(base: Path, work: str, mode: str = "c_calls", name="t.ftrace", before=None,
               **opts):
    """Traces `work` under `mode` with scope `opts`: (the loaded trace, stderr)."""
    patterns = bool(opts.get("include") or opts.get("exclude"))
    start_opts, env = mode_options(mode, patterns)
    r = drive(base, work, [{"out": name, "opts": {**start_opts, **opts}}], env, before=before)
    assert r.returncode == 0, r.stderr
    trace = fasttrace.load(base / name)
    assert trace.complete and trace.stats.dropped == 0
    assert trace.header["hook"] == expected_hook(mode, patterns), trace.header["hook"]
    return trace, r.stderr


# ---- reading a trace --------------------------------------------------------------------------


def key(f, base: Path) -> str:
    """A function's key (see the module docstring)."""
    if f.is_c:
        return "#" + f.qualname
    if f.filename.startswith("<"):
        return f"{f.filename}:{f.name}"
    try:
        rel = Path(f.filename).resolve().relative_to(base.resolve())
    except ValueError:
        return f"{f.filename}:{f.name}"
    parts = list(rel.with_suffix("").parts)
    if parts[:2] == ["lib", "site-packages"]:
        parts = parts[2:]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts + [f.name])


def forests(trace, base: Path) -> "dict[str, list]":
    """{thread name: its call forest [(key, [children]), ...]}, checking that its calls and
    returns are balanced: a return closes the innermost open call (no orphan return), and
    only a frame that was open at start() is closed by the trace's end (a synthetic return);
    every other call returned."""
    out = {}
    for th in trace.threads:
        roots: list = []
        stack: list = []
        for e in trace.events(th.id):
            k = key(e.function, base)
            if e.kind in ("call", "c_call"):
                node = (k, [], e.synthetic)
                (stack[-1][1] if stack else roots).append(node)
                stack.append(node)
            else:
                assert stack, f"{th.name}: return of {k} with nothing open"
                top = stack.pop()
                assert top[0] == k, f"{th.name}: return of {k} closes {top[0]}"
                assert not e.synthetic or top[2], \
                    f"{th.name}: {k} never returned (closed by the end of the trace)"
        assert not stack, f"{th.name}: left open: {[n[0] for n in stack]}"
        if roots:
            out[th.name] = [_strip_flag(n) for n in roots]
    return out


def _strip_flag(node):
    return (node[0], [_strip_flag(c) for c in node[1]])


def parse(text: str) -> list:
    """`a(b c(d)) e` -> [(a, [(b, []), (c, [(d, [])])]), (e, [])]."""
    tokens = re.findall(r"[^\s()]+|[()]", text)
    pos = 0

    def forest():
        nonlocal pos
        out = []
        while pos < len(tokens) and tokens[pos] != ")":
            name = tokens[pos]
            pos += 1
            kids = []
            if pos < len(tokens) and tokens[pos] == "(":
                pos += 1
                kids = forest()
                assert tokens[pos] == ")"
                pos += 1
            out.append((name, kids))
        return out

    nodes = forest()
    assert pos == len(tokens), text
    return nodes


def render(nodes) -> str:
    return " ".join(n if not kids else f"{n}({render(kids)})" for n, kids in nodes)


def prune(nodes, keep) -> list:
    """The forest without the nodes `keep` refuses, their children taking their place."""
    out = []
    for name, kids in nodes:
        sub = prune(kids, keep)
        if keep(name):
            out.append((name, sub))
        else:
            out.extend(sub)
    return out


def cut(nodes, depth: int) -> list:
    """The forest down to `depth` levels."""
    if depth <= 0:
        return []
    return [(n, cut(kids, depth - 1)) for n, kids in nodes]


def deepest(nodes) -> int:
    return max((1 + deepest(kids) for _, kids in nodes), default=0)


def keys_of(nodes) -> set:
    out = set()
    for n, kids in nodes:
        out.add(n)
        out |= keys_of(kids)
    return out


def expect(tree: str, keep: set, c_calls: bool) -> str:
    """`tree` pruned to the keys in `keep` (and to Python functions without C calls)."""
    return render(prune(parse(tree), lambda k: k in keep and (c_calls or not k.startswith("#"))))


def only_python(keys: set, c_calls: bool) -> set:
    return keys if c_calls else {k for k in keys if not k.startswith("#")}


def find(nodes, name):
    """The first node called `name`, depth first."""
    for node in nodes:
        if node[0] == name:
            return node
        hit = find(node[1], name)
        if hit is not None:
            return hit
    return None


def function_keys(trace, base: Path) -> set:
    return {key(f, base) for f in trace.functions}


def report_json(base: Path, path) -> dict:
    r = subprocess.run([sys.executable, "-m", "fasttrace", "report", "--json", "--per-thread",
                        "--limit", "0", str(path)], cwd=base, env=child_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def check_self_times(base: Path, path, trace) -> None:
    """Per thread, `report --json`'s self times are those the events give, and they add up to
    the thread's traced time less the time no recorded frame was open (between two top-level
    calls: out-of-scope code that called nothing in scope).  That part is counted, not
    estimated: it is the sum of the stretches between consecutive events with nothing open."""
    data = report_json(base, path)
    tables = {t["thread"]: t for t in data["tables"] if t["thread"] is not None}
    for th in trace.threads:
        self_ns: "dict[tuple, int]" = defaultdict(int)
        stack: list = []
        outside = 0
        prev = None
        for e in trace.events(th.id):
            if prev is not None:
                if stack:
                    self_ns[stack[-1]] += e.ts - prev
                else:
                    outside += e.ts - prev
            prev = e.ts
            f = e.function
            if e.kind in ("call", "c_call"):
                stack.append((f.qualname, f.filename, f.is_c))
            else:
                stack.pop()
        if prev is None:
            continue
        table = tables[th.id]
        reported = {(f["qualname"], f["filename"], f["is_c"]): f["self_ns"]
                    for f in table["functions"]}
        assert reported == dict(self_ns), th.name
        assert sum(reported.values()) + outside == table["traced_ns"], (
            th.name, sum(reported.values()), outside, table["traced_ns"])


# ---- 1. include and exclude -------------------------------------------------------------------

SCOPE_CASES = {
    # name: (start() scope options, the keys in scope among those run() reaches)
    "module": (dict(include=["myapp"]), MYAPP),
    "module+builtins": (dict(include=["myapp", "builtins"]), MYAPP | BUILTINS),
    "submodules-only": (dict(include=["myapp.*"]), MYAPP - {"myapp.pkg_fn"}),
    "subpackage": (dict(include=["myapp.sub"]), DEEP),
    "globs+c-by-type": (dict(include=["my?pp.s*b", "_thr*"]), DEEP | THREAD_C),
    "c-by-type-module": (dict(include=["myapp.core", "_thread", "collections"]),
                         {"myapp.core.run", "myapp.core.helper"} | THREAD_C | ODICT_C),
    "builtins-only": (dict(include=["builtins"]), BUILTINS),
    "exclude-only": (dict(exclude=["myapp.sub", "_thread", "driver"]),
                     (RUN_PY - DEEP) | BUILTINS | ODICT_C),
    "path-glob": (dict(include=["*/myapp/sub/*"]), DEEP),
    "path-glob-py+module": (dict(include=["*/other.py", "myapp.core"]),
                            {"myapp.core.run", "myapp.core.helper", "other.bridge",
                             "other.inner_bridge"}),
    "site-packages-path": (dict(include=["*/site-packages/*"]), {"vendorpkg.util.vend"}),
    "site-packages-module": (dict(include=["vendorpkg"]), {"vendorpkg.util.vend"}),
    "exclude-wins": (dict(include=["myapp", "builtins", "vendorpkg", "_thread"],
                          exclude=["builtins", "*/site-packages/*", "myapp.sub",
                                   "_thread.*"]),
                     {"myapp.core.run", "myapp.core.helper", "myapp.pkg_fn"} | THREAD_C),
    "exclude-path-wins": (dict(include=["myapp", "other"], exclude=["*/core.py"]),
                          MYAPP - {"myapp.core.run", "myapp.core.helper"}
                          | {"other.bridge", "other.inner_bridge"}),
}


def test_the_workload_unscoped(tmp_path):
    # The expectations below are RUN_TREE pruned: first, RUN_TREE is what an unscoped trace
    # records (C calls included).
    trace, _ = trace_work(tmp_path, "myapp.core:run")
    main = forests(trace, tmp_path)["MainThread"]
    assert render([find(main, "myapp.core.run")]) == render(parse(RUN_TREE))
    assert trace.scope is None


@pytest.mark.parametrize("mode", SCOPED_MODES)
@pytest.mark.parametrize("case", sorted(SCOPE_CASES))
def test_include_exclude_record_exactly_the_functions_in_scope(tmp_path, case, mode):
    opts, in_scope = SCOPE_CASES[case]
    c_calls = mode == "c_calls"
    trace, err = trace_work(tmp_path, "myapp.core:run", mode, **opts)
    want = only_python(in_scope, c_calls)
    assert {th.name for th in trace.threads if list(trace.events(th.id))} <= {"MainThread"}
    main = forests(trace, tmp_path).get("MainThread", [])
    assert keys_of(main) == want
    # nothing of the program out of scope is even defined (fasttrace's own start() and stop()
    # define the C functions they call, unrecorded: not the program's)
    assert function_keys(trace, tmp_path) & keys_of(parse(RUN_TREE)) == want
    assert render(main) == expect(RUN_TREE, in_scope, c_calls)
    # stop() warns when nothing was in scope (include=["builtins"] without C calls) only
    assert ("RuntimeWarning: fasttrace: no call in scope" in err) == (not want), err


# ---- 2. nesting under the nearest in-scope ancestor, threads, self times ----------------------


@pytest.mark.parametrize("mode", SCOPED_MODES)
def test_threads_nest_under_in_scope_ancestors_and_self_times_add_up(tmp_path, mode):
    trace, _ = trace_work(tmp_path, "myapp.core:threaded", mode, include=["myapp"])
    got = forests(trace, tmp_path)
    # each worker ran threading's bootstrap, other.bridge and other.inner_bridge (all out of
    # scope) around leaf_cb: it is the worker's only, top-level frame
    assert {k: render(v) for k, v in got.items()} == {
        "MainThread": "myapp.core.threaded(myapp.sub.deep.deep_work(myapp.sub.deep.total))",
        "w0": "myapp.sub.deep.leaf_cb",
        "w1": "myapp.sub.deep.leaf_cb",
    }
    check_self_times(tmp_path, tmp_path / "t.ftrace", trace)


@pytest.mark.parametrize("mode", SCOPED_MODES)
@pytest.mark.parametrize("include", [["myapp"], ["myapp", "_thread"]], ids=["myapp", "+_thread"])
def test_a_thread_running_at_start_stays_balanced(tmp_path, mode, include):
    # The waiter thread is blocked in other.call(Event.wait) under myapp.core.waiter when
    # start() runs: the hooks that record the frames running at start open waiter (threading's
    # and other's frames are out of scope), and the returns of the out-of-scope frames, and of
    # the C call (lock.acquire) it was blocked in, close nothing.
    trace, _ = trace_work(tmp_path, "myapp.core:release_waiter", mode, include=include,
                          before="myapp.core:start_waiter")
    got = forests(trace, tmp_path)
    want = "myapp.sub.deep.leaf_cb"
    if expected_hook(mode, True) != "eval_frame":  # the evaluator records no start-up stack
        want = f"myapp.core.waiter({want})"
    assert render(prune(got["waiter"], lambda k: not k.startswith("#"))) == want
    assert all(k.startswith("#_thread.") for k in keys_of(got["waiter"]) if k.startswith("#"))
    assert render(prune(got["MainThread"], lambda k: not k.startswith("#"))) == \
        "myapp.core.release_waiter"
    check_self_times(tmp_path, tmp_path / "t.ftrace", trace)


@pytest.mark.parametrize("mode", SCOPED_MODES)
@pytest.mark.parametrize("case", ["module+builtins", "exclude-only", "path-glob-py+module"])
def test_self_times_add_up_in_a_scoped_trace(tmp_path, case, mode):
    trace, _ = trace_work(tmp_path, "myapp.core:run", mode, **SCOPE_CASES[case][0])
    forests(trace, tmp_path)
    check_self_times(tmp_path, tmp_path / "t.ftrace", trace)


# ---- 3. code created after start() -----------------------------------------------------------

DYNAMIC_TREE = """
myapp.core.dynamic(
  myapp.dyn_in.<module>
  myapp.dyn_in.dyn_fn(myapp.dyn_in.dyn_inner)
  <string>:<module>
  <string>:str_fn(myapp.sub.deep.leaf_cb)
  myapp.late.<module>(myapp.late.late_fn(myapp.sub.deep.total))
  myapp.late.late_fn(myapp.sub.deep.total)
  otherlate.<module>(otherlate.olate_fn(otherlate.<lambda>))
  otherlate.olate_fn(myapp.sub.deep.leaf_cb)
  myapp.core.<lambda> myapp.core.<lambda>
  other.make_lambdas other.<lambda> other.<lambda>
  myapp.core.Late myapp.core.meth(myapp.sub.deep.total)
  other.make_class(other.OutK) other.ometh(myapp.sub.deep.leaf_cb))
"""
DYNAMIC_IN = {"myapp.core.dynamic", "myapp.dyn_in.<module>", "myapp.dyn_in.dyn_fn",
              "myapp.dyn_in.dyn_inner", "myapp.sub.deep.leaf_cb", "myapp.late.<module>",
              "myapp.late.late_fn", "myapp.sub.deep.total", "myapp.core.<lambda>",
              "myapp.core.Late", "myapp.core.meth"}


@pytest.mark.parametrize("mode", SCOPED_MODES)
def test_code_made_after_start_follows_the_scope(tmp_path, mode):
    # exec of source named as a file of myapp (in) and of "<string>" (out), a module of myapp
    # and one outside imported after start(), lambdas made in a loop in and out of myapp, a
    # class defined after start() in and out of myapp
    trace, _ = trace_work(tmp_path, "myapp.core:dynamic", mode, include=["myapp"])
    main = forests(trace, tmp_path)["MainThread"]
    assert keys_of(main) == DYNAMIC_IN
    assert render(main) == expect(DYNAMIC_TREE, DYNAMIC_IN, False)


@pytest.mark.parametrize("mode", SCOPED_MODES)
def test_exec_code_is_in_scope_when_only_myapp_is_excluded(tmp_path, mode):
    # the reverse: everything but myapp (and the driver, and builtins) is in scope, so the
    # code exec() makes after start() is recorded, under the nearest recorded frame
    trace, _ = trace_work(tmp_path, "myapp.core:dyn_exec", mode,
                          exclude=["myapp", "driver", "builtins"])
    main = forests(trace, tmp_path)["MainThread"]
    assert render(main) == ("<string>:<module>(<string>:EK) <string>:e_fn(<string>:e_inner) "
                            "<string>:m(<string>:<lambda>)")


# ---- 4. generators, coroutines, exceptions, recursion -----------------------------------------

FLOW_TREES = {
    # workload: its unscoped tree (C calls with `#`; every resume of a generator is a call)
    "generators": """
        myapp.core.generators(
          myapp.core.gen_in myapp.core.gen_in myapp.core.gen_in
          #next(other.gen_out(myapp.sub.deep.leaf_cb(#abs)))
          #next(other.gen_out(myapp.sub.deep.leaf_cb(#abs)))
          #generator.close(other.gen_out)
          other.wrap_gen(myapp.core.gen_in) other.wrap_gen(myapp.core.gen_in))
    """,
    "throws": """
        myapp.core.throws(
          #next(other.gen_out(myapp.sub.deep.leaf_cb(#abs)))
          #generator.throw(other.gen_out(myapp.sub.deep.leaf_cb(#abs)
                                         myapp.sub.deep.leaf_cb(#abs)))
          #generator.throw(other.gen_out)
          #next(myapp.core.gen_catch)
          #generator.throw(myapp.core.gen_catch(myapp.sub.deep.leaf_cb(#abs)))
          #generator.throw(myapp.core.gen_catch))
    """,
    "exceptions": """
        myapp.core.exceptions(
          other.passthrough(myapp.core.raiser)
          other.catch_here(myapp.core.raiser)
          #divmod
          myapp.core.nested_raise(other.call(myapp.core.nested_raise(
              other.call(myapp.core.nested_raise)))))
    """,
    "recursion": """
        myapp.core.recursion(
          myapp.core.rec_in(myapp.core.rec_in(other.rec_out(myapp.core.rec_in(
            myapp.core.rec_in(other.rec_out(myapp.core.rec_in(
              myapp.sub.deep.total(#sum))))))))
          other.rec_pure(other.rec_pure(other.rec_pure(other.rec_pure(
            myapp.sub.deep.leaf_cb(#abs))))))
    """,
}


def _flow_keys(tree: str, builtins: bool) -> set:
    return {k for k in keys_of(parse(tree))
            if k.startswith("myapp.") or (builtins and k.startswith("#"))}


@pytest.mark.parametrize("mode", SCOPED_MODES)
@pytest.mark.parametrize("builtins", [False, True], ids=["myapp", "myapp+builtins"])
@pytest.mark.parametrize("workload", sorted(FLOW_TREES))
def test_generators_exceptions_recursion_stay_balanced(tmp_path, workload, builtins, mode):
    c_calls = mode == "c_calls"
    tree = textwrap.dedent(FLOW_TREES[workload])
    trace, _ = trace_work(tmp_path, f"myapp.core:{workload}", mode,
                          include=["myapp", "builtins"] if builtins else ["myapp"])
    main = forests(trace, tmp_path)["MainThread"]  # balanced, every call returned
    keep = _flow_keys(tree, builtins)
    assert render(main) == expect(tree, keep, c_calls)
    assert function_keys(trace, tmp_path) & keys_of(parse(tree)) == keys_of(main)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("workload", sorted(FLOW_TREES))
def test_flow_workloads_unscoped(tmp_path, workload, mode):
    # FLOW_TREES are what an unscoped trace records (the scoped expectations prune them)
    c_calls = mode == "c_calls"
    trace, _ = trace_work(tmp_path, f"myapp.core:{workload}", mode)
    main = forests(trace, tmp_path)["MainThread"]
    top = find(main, f"myapp.core.{workload}")
    keep = keys_of(parse(FLOW_TREES[workload]))
    assert render(prune([top], lambda k: k in keep)) == expect(FLOW_TREES[workload], keep,
                                                                c_calls)


@pytest.mark.parametrize("mode", SCOPED_MODES)
def test_coroutines_match_the_unscoped_trace_pruned(tmp_path, mode):
    # asyncio's loop, tasks and sleep are out of scope: the coroutines of myapp (each resume a
    # call, each suspension a return) nest exactly as in an unscoped trace of the same run
    # pruned to them
    c_calls = mode == "c_calls"
    full, _ = trace_work(tmp_path, "myapp.core:coroutines", mode, name="full.ftrace")
    scoped, _ = trace_work(tmp_path, "myapp.core:coroutines", mode, include=["myapp"])
    full_main = forests(full, tmp_path)["MainThread"]
    top = find(full_main, "myapp.core.coroutines")
    want = prune([top], lambda k: k.startswith("myapp."))
    got = forests(scoped, tmp_path)["MainThread"]
    assert render(got) == render(want)
    assert keys_of(got) == {"myapp.core.coroutines", "myapp.core.coro_main",
                            "myapp.core.coro_leaf"}
    # coro_leaf ran 4 times, each suspended once at asyncio.sleep(0): 8 entries
    assert render(got).count("myapp.core.coro_leaf") == 8
    check_self_times(tmp_path, tmp_path / "t.ftrace", scoped)
    assert c_calls or not any(k.startswith("#") for k in keys_of(got))


# ---- 5. max_depth -----------------------------------------------------------------------------

DEPTHS_TREE = """
myapp.core.depths(
  myapp.core.chain(myapp.core.chain(myapp.core.chain(myapp.core.chain(myapp.core.chain(#len)
    #len) #len) #len) #len)
  myapp.core.chain_via_other(other.call(myapp.core.chain_via_other(other.call(
    myapp.core.chain_via_other(other.call(myapp.core.chain_via_other(#len)) #len)) #len))
    #len))
"""


def check_depth(trace, base, n, want_tree):
    got = forests(trace, base)
    assert set(got) == {"MainThread"}
    main = got["MainThread"]
    assert deepest(main) <= n
    assert render(main) == want_tree
    scope = trace.scope
    assert scope is not None and scope["max_depth"] == n


@pytest.mark.parametrize("mode", SCOPED_MODES)
@pytest.mark.parametrize("n", [1, 3])
def test_max_depth_with_include(tmp_path, mode, n):
    c_calls = mode == "c_calls"
    trace, _ = trace_work(tmp_path, "myapp.core:depths", mode, include=["myapp", "builtins"],
                          max_depth=n)
    keep = {k for k in keys_of(parse(DEPTHS_TREE)) if not k.startswith("other.")}
    want = render(cut(parse(expect(DEPTHS_TREE, keep, c_calls)), n))
    check_depth(trace, tmp_path, n, want)


@pytest.mark.parametrize("mode", SCOPED_MODES)
def test_max_depth_with_exclude_counts_recorded_frames_only(tmp_path, mode):
    # other.call's frames are out of scope: they do not count towards the depth
    c_calls = mode == "c_calls"
    trace, _ = trace_work(tmp_path, "myapp.core:depths", mode, exclude=["other", "driver"],
                          max_depth=3)
    keep = {k for k in keys_of(parse(DEPTHS_TREE)) if not k.startswith("other.")}
    want = render(cut(parse(expect(DEPTHS_TREE, keep, c_calls)), 3))
    check_depth(trace, tmp_path, 3, want)


@pytest.mark.parametrize("mode", MODES)
def test_max_depth_alone_counts_the_frames_open_at_start(tmp_path, mode):
    # no patterns: the driver's module frame, open when start() ran, is depth 1 where the
    # hook records the frames running at start (the frame evaluator records none)
    c_calls = mode == "c_calls"
    trace, _ = trace_work(tmp_path, "myapp.core:depths", mode, max_depth=3)
    tree = parse(expect(DEPTHS_TREE, keys_of(parse(DEPTHS_TREE)), c_calls))
    if expected_hook(mode) != "eval_frame":
        tree = [("driver.<module>", tree)]
    check_depth(trace, tmp_path, 3, render(cut(tree, 3)))


# ---- 6. a scope that excludes everything ------------------------------------------------------


@pytest.mark.parametrize("mode", SCOPED_MODES)
def test_a_scope_that_matches_nothing_writes_an_empty_valid_trace(tmp_path, mode):
    trace, _ = trace_work(tmp_path, "myapp.core:run", mode, include=["no_such_module_xyz"])
    assert list(trace.events()) == [] and trace.functions == []
    assert trace.scope["include"] == ["no_such_module_xyz"]
    for command in (["report", "t.ftrace"], ["info", "t.ftrace"]):
        r = cli(tmp_path, *command)
        assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("mode", SCOPED_MODES)
def test_a_scope_that_matches_nothing_warns(tmp_path, mode):
    _, err = trace_work(tmp_path, "myapp.core:run", mode, include=["no_such_module_xyz"])
    assert re.search(r"RuntimeWarning: fasttrace: .*no_such_module_xyz", err), err


@pytest.mark.parametrize("mode", MODES)
def test_a_scope_of_modules_only_fasttrace_itself_calls_is_empty_and_warns(tmp_path, mode):
    # posix.getpid and atexit.register run in start(), which is not the program
    trace, err = trace_work(tmp_path, "myapp.core:depths", mode,
                            include=["no_such_module_xyz", "posix", "atexit"])
    assert list(trace.events()) == []
    assert trace.functions == [], [f.qualname for f in trace.functions]
    assert "RuntimeWarning: fasttrace: no call in scope" in err, err


def test_a_scope_that_matches_something_does_not_warn(tmp_path):
    _, err = trace_work(tmp_path, "myapp.core:run", include=["myapp"])
    assert "RuntimeWarning" not in err and "fasttrace:" not in err, err


def test_cli_run_with_a_scope_that_matches_nothing_warns(tmp_path):
    write_program(tmp_path)
    (tmp_path / "prog.py").write_text(PROG)
    r = cli(tmp_path, "run", "--include", "no_such_module_xyz", "-o", "t.ftrace", "prog.py")
    assert r.returncode == 0, r.stderr
    trace = fasttrace.load(tmp_path / "t.ftrace")
    assert trace.complete and list(trace.events()) == []
    notes = [line for line in r.stderr.splitlines()
             if line.startswith("fasttrace:") and " wrote " not in line]
    assert notes and "no_such_module_xyz" in "\n".join(notes), r.stderr


# ---- 7. errors --------------------------------------------------------------------------------

BAD_OPTIONS = [
    dict(include=[""]),
    dict(include=["a b"]),
    dict(exclude=[3]),
    dict(include="myapp"),
    dict(exclude="myapp"),
    dict(include=[" myapp"]),
    dict(max_depth=-1),
    dict(max_depth=1.5),
    dict(max_depth=True),
    dict(max_depth="3"),
    dict(min_duration=-1),
    dict(min_duration=float("nan")),
    dict(min_duration=float("inf")),
    dict(min_duration=True),
    dict(min_duration=0.001, rate=100),
    dict(trim_stacks=True, include=["myapp"]),
    dict(trim_stacks=True, rate=100),
]


@pytest.mark.parametrize("opts", BAD_OPTIONS, ids=repr)
def test_bad_scope_raises_before_anything_is_written(tmp_path, opts):
    path = tmp_path / "bad.ftrace"
    with pytest.raises(ValueError):
        fasttrace.start(path, **opts)
    assert not path.exists()
    assert not fasttrace.is_tracing()


BAD_CLI = [
    (["--include", ""], "--include:"),
    (["--include", "a b"], "--include:"),
    (["--exclude", "x y"], "--exclude:"),
    (["--max-depth=-1"], "--max-depth:"),
    (["--max-depth", "1.5"], "--max-depth"),
    (["--min-duration=-1ms"], "--min-duration"),
    (["--min-duration", "nan"], "--min-duration"),
    (["--min-duration", "inf"], "--min-duration"),
    (["--rate", "100", "--min-duration", "1ms"], "--min-duration:"),
    (["--trim-stacks", "--include", "myapp"], "--trim-stacks:"),
]


@pytest.mark.parametrize("args, says", BAD_CLI, ids=lambda a: " ".join(a)
                         if isinstance(a, list) else a)
def test_cli_bad_scope_is_a_usage_error(tmp_path, args, says):
    (tmp_path / "prog.py").write_text("open('ran', 'w').close()\n")
    r = cli(tmp_path, "run", *args, "-o", "bad.ftrace", "prog.py")
    assert r.returncode == 2, r.stderr
    assert says in r.stderr, r.stderr
    assert not (tmp_path / "bad.ftrace").exists() and not (tmp_path / "ran").exists()


# ---- 8. the SCOPE definition, and sessions one after another ---------------------------------


def cli(cwd, *args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "fasttrace", *map(str, args)], cwd=cwd,
                          env=env or child_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("opts, text", [
    (dict(include=["myapp", "*/site-packages/*"], exclude=["myapp.sub"], max_depth=5),
     "include myapp, */site-packages/*; exclude myapp.sub; max depth 5"),
    (dict(exclude=["other"]), "exclude other"),
    (dict(max_depth=0), "max depth 0"),
    (dict(include=["myapp"], min_duration=0.00005), "include myapp; min duration 50 us"),
])
def test_the_file_says_its_scope(tmp_path, opts, text):
    _, _ = trace_work(tmp_path, "myapp.core:run", **opts)
    trace = fasttrace.load(tmp_path / "t.ftrace")
    want = {"include": [], "exclude": [], "max_depth": None, "min_duration": None,
            "trim_stacks": False, **opts}
    assert trace.scope == want
    assert trace.scope_text() == text
    info = cli(tmp_path, "info", "t.ftrace")
    assert info.returncode == 0, info.stderr
    rows = [line for line in info.stdout.splitlines() if line.split()[:1] == ["scope"]]
    assert len(rows) == 1 and text in rows[0], info.stdout
    report = cli(tmp_path, "report", "t.ftrace")
    assert report.returncode == 0, report.stderr
    assert f"note: a scoped trace ({text})" in report.stdout, report.stdout
    assert report_json(tmp_path, tmp_path / "t.ftrace")["scope"] == want


def test_an_unscoped_trace_says_no_scope(tmp_path):
    trace, _ = trace_work(tmp_path, "myapp.core:run")
    assert trace.scope is None and trace.scope_text() == ""
    info = cli(tmp_path, "info", "t.ftrace")
    assert not any(line.split()[:1] == ["scope"] for line in info.stdout.splitlines())
    report = cli(tmp_path, "report", "t.ftrace")
    assert "scoped" not in report.stdout
    assert "scope" not in report_json(tmp_path, tmp_path / "t.ftrace")


@pytest.mark.parametrize("mode", SCOPED_MODES)
@pytest.mark.parametrize("scoped_first", [True, False], ids=["scoped-first", "unscoped-first"])
def test_the_scope_does_not_leak_into_the_next_session(tmp_path, mode, scoped_first):
    start_opts, env = mode_options(mode)
    c_calls = mode == "c_calls"
    scoped = {"out": "scoped.ftrace", "opts": {**start_opts, "include": ["myapp"]},
              "with": True}
    plain = {"out": "plain.ftrace", "opts": start_opts, "with": True}
    sessions = [scoped, plain] if scoped_first else [plain, scoped]
    # twice each way round: a scope after a scope, everything after everything
    sessions = sessions + sessions
    for i, s in enumerate(sessions):
        sessions[i] = {**s, "out": f"{i}.{s['out']}"}
    r = drive(tmp_path, "myapp.core:run", sessions, env)
    assert r.returncode == 0, r.stderr
    for s in sessions:
        trace = fasttrace.load(tmp_path / s["out"])
        main = forests(trace, tmp_path)["MainThread"]
        if "include" in s["opts"]:
            assert trace.scope is not None
            assert render(main) == expect(RUN_TREE, MYAPP, c_calls), s["out"]
        else:
            assert trace.scope is None
            assert render([find(main, "myapp.core.run")]) == expect(
                RUN_TREE, keys_of(parse(RUN_TREE)), c_calls), s["out"]


# ---- 9. the command line ----------------------------------------------------------------------

PROG = """
import os, subprocess, sys
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib",
                                "site-packages"))
import myapp.core
myapp.core.run()
if sys.argv[1:] == ["child"]:
    subprocess.run([sys.executable, os.path.abspath(__file__)], check=True)
"""
# `fasttrace run` starts before the program imports myapp: the module bodies of myapp and
# myapp.core are in scope (myapp.sub is excluded; depth 1 cuts what run() calls)
CLI_FOREST = "myapp.<module> myapp.core.<module> myapp.core.run"
CLI_SCOPE = ["--include", "myapp", "--include", "vendorpkg", "--exclude", "myapp.sub",
             "--exclude", "*/site-packages/*", "--max-depth", "1"]
CLI_SCOPE_DEF = {"include": ["myapp", "vendorpkg"], "exclude": ["myapp.sub", "*/site-packages/*"],
                 "max_depth": 1, "min_duration": None, "trim_stacks": False}


@pytest.mark.parametrize("c_flag", [[], ["--no-c-calls"]], ids=["c_calls", "no_c_calls"])
def test_cli_run_with_a_scope(tmp_path, c_flag):
    write_program(tmp_path)
    (tmp_path / "prog.py").write_text(PROG)
    r = cli(tmp_path, "run", *c_flag, *CLI_SCOPE, "-o", "t.ftrace", "prog.py")
    assert r.returncode == 0, r.stderr
    trace = fasttrace.load(tmp_path / "t.ftrace")
    assert trace.scope == CLI_SCOPE_DEF
    assert {k: render(v) for k, v in forests(trace, tmp_path).items()} == {
        "MainThread": CLI_FOREST}
    # without the depth limit, the same run records what run() calls too
    r = cli(tmp_path, "run", *c_flag, *CLI_SCOPE[:-2], "-o", "deep.ftrace", "prog.py")
    assert r.returncode == 0, r.stderr
    main = forests(fasttrace.load(tmp_path / "deep.ftrace"), tmp_path)["MainThread"]
    assert render(main) == ("myapp.<module> myapp.core.<module> "
                            "myapp.core.run(myapp.core.helper myapp.pkg_fn)")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="--follow-children needs fork")
def test_cli_follow_children_gives_the_child_the_same_scope(tmp_path):
    write_program(tmp_path)
    (tmp_path / "prog.py").write_text(PROG)
    env = child_env({"PATH": os.path.dirname(sys.executable) + os.pathsep +
                     os.environ.get("PATH", "")})
    r = cli(tmp_path, "run", "--follow-children", *CLI_SCOPE, "-o", "traces", "prog.py",
            "child", env=env)
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "traces").glob("prog.*.ftrace"))
    assert len(files) == 2, files
    for f in files:
        trace = fasttrace.load(f)
        assert trace.complete
        assert trace.scope == CLI_SCOPE_DEF, f
        assert {k: render(v) for k, v in forests(trace, tmp_path).items()} == {
            "MainThread": CLI_FOREST}, f


# ---- 10. min_duration -------------------------------------------------------------------------

MIN_DURATION = 0.005  # quick() takes microseconds, slow() sleeps 20 ms


def call_durations(trace):
    """[(function, duration ns)] of every call, from its events."""
    out = []
    for th in trace.threads:
        stack = []
        for e in trace.events(th.id):
            if e.kind in ("call", "c_call"):
                stack.append(e)
            else:
                c = stack.pop()
                out.append((c.function, e.ts - c.ts))
    return out


MIN_DURATION_MODES = list(MODES)


@pytest.mark.parametrize("mode", MIN_DURATION_MODES)
def test_min_duration_with_include(tmp_path, mode):
    c_calls = mode == "c_calls"
    trace, _ = trace_work(tmp_path, "myapp.core:timed", mode, include=["myapp", "time"],
                          min_duration=MIN_DURATION)
    assert trace.scope["min_duration"] == MIN_DURATION
    main = forests(trace, tmp_path)["MainThread"]
    assert render(main) == ("myapp.core.timed(myapp.core.slow" +
                            ("(#time.sleep))" if c_calls else ")"))
    assert all(d >= MIN_DURATION * 1e9 for _, d in call_durations(trace))
    check_self_times(tmp_path, tmp_path / "t.ftrace", trace)


@pytest.mark.parametrize("mode", MODES)
def test_min_duration_alone(tmp_path, mode):
    c_calls = mode == "c_calls"
    trace, _ = trace_work(tmp_path, "myapp.core:timed", mode, min_duration=MIN_DURATION)
    durations = call_durations(trace)
    assert durations and all(d >= MIN_DURATION * 1e9 for _, d in durations), [
        (f.qualname, d) for f, d in durations if d < MIN_DURATION * 1e9]
    tree = "myapp.core.timed(myapp.core.slow" + ("(#time.sleep))" if c_calls else ")")
    if expected_hook(mode) != "eval_frame":
        tree = f"driver.<module>({tree})"
    assert render(forests(trace, tmp_path)["MainThread"]) == tree
    check_self_times(tmp_path, tmp_path / "t.ftrace", trace)
    # the calls left out are still in the unscoped trace of the same run: 100 of quick()
    full, _ = trace_work(tmp_path, "myapp.core:timed", mode, name="full.ftrace")
    assert sum(1 for f, _ in call_durations(full) if f.name == "quick") == 100


@pytest.mark.parametrize("mode", MIN_DURATION_MODES)
@pytest.mark.parametrize("max_depth", [None, 2])
def test_min_duration_generators_exceptions_recursion_threads(tmp_path, mode, max_depth):
    # Only the calls that sleep (and their callers) last min_duration: a generator's first
    # resume, a call that raises, each level of a recursion through out-of-scope frames, a
    # thread's function; every quick() and the generator's later resumes are left out.
    c_calls = mode == "c_calls"
    trace, _ = trace_work(tmp_path, "myapp.core:mixed", mode, include=["myapp", "time"],
                          min_duration=MIN_DURATION, max_depth=max_depth)
    # (the worker's name may be lost: test_thread_names_survive_the_scope)
    got = {k if k == "MainThread" else "ms": render(v)
           for k, v in forests(trace, tmp_path).items()}
    sleep = "(#time.sleep)" if c_calls else ""
    main = parse(f"""myapp.core.mixed(myapp.core.gen_slow{sleep} myapp.core.raise_slow{sleep}
        myapp.core.rec_slow(myapp.core.rec_slow(myapp.core.rec_slow(myapp.core.rec_slow{sleep}
        ))))""")
    worker = parse(f"myapp.core.slow{sleep}")
    if max_depth is not None:
        main, worker = cut(main, max_depth), cut(worker, max_depth)
    assert got == {"MainThread": render(main), "ms": render(worker)}
    durations = call_durations(trace)
    assert all(d >= MIN_DURATION * 1e9 for _, d in durations)
    check_self_times(tmp_path, tmp_path / "t.ftrace", trace)


@pytest.mark.parametrize("mode", MIN_DURATION_MODES)
@pytest.mark.parametrize("long", [True, False], ids=["long", "short"])
def test_min_duration_a_call_running_at_stop(tmp_path, mode, long):
    # stop() from inside the traced calls: those still running that already lasted
    # min_duration are written (closed by the end of the trace), the others are not.  Their
    # time runs until the session ends, inside stop(): a short one may have lasted long
    # enough by then, but then it is written whole, and what is written is balanced.
    name = f"stops_{'long' if long else 'short'}"
    trace, _ = trace_work(tmp_path, f"myapp.core:{name}", mode, include=["myapp"],
                          min_duration=MIN_DURATION)
    events = [(e.kind, key(e.function, tmp_path), e.synthetic) for e in trace.events()]
    written = [(f"myapp.core.{name}", False), ("myapp.core.stops_inside", False)]
    want = [("call", k, s) for k, s in written] + [
        ("return", k, True) for k, _ in reversed(written)]
    if long:
        assert events == want
    else:
        assert events in ([], want)
    assert all(d >= MIN_DURATION * 1e9 for _, d in call_durations(trace))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("opts", [
    dict(include=["myapp"]),
    dict(max_depth=1),
    dict(include=["myapp"], min_duration=MIN_DURATION),
    dict(min_duration=MIN_DURATION),
], ids=["include", "max_depth", "include+min_duration", "min_duration"])
def test_thread_names_survive_the_scope(tmp_path, mode, opts):
    trace, _ = trace_work(tmp_path, "myapp.core:named_thread", mode, **opts)
    named = {th.name for th in trace.threads if list(trace.events(th.id))}
    assert "slow-worker" in named, named

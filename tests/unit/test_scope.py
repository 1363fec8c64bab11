"""fasttrace._scope: the one matcher of capture and convert (patterns, checks, C functions),
and CallTree.pruned() on a hand-made tree."""

from __future__ import annotations

import math
from array import array
from collections import namedtuple

import pytest

from fasttrace._calltree import CallTree, ThreadTree
from fasttrace._scope import Scope, c_module, module_of_file, parse_seconds

Fn = namedtuple("Fn", "id name qualname filename lineno module is_c")
Mode = namedtuple("Mode", "mode")
_ids = iter(range(1, 1 << 30))


def py(module, filename="/src/x.py", name="f"):
    return Fn(next(_ids), name, name, filename, 1, module, False)


def c(qualname, module=""):
    return Fn(next(_ids), qualname.rsplit(".", 1)[-1], qualname, "", 0, module, True)


def test_module_globs_cover_parents():
    s = Scope(include=["myapp"])
    assert s.matches(py("myapp")) and s.matches(py("myapp.sub.deep"))
    assert not s.matches(py("myapplication")) and not s.matches(py("other"))
    star = Scope(include=["myapp.*"])
    assert star.matches(py("myapp.sub")) and not star.matches(py("myapp"))
    assert Scope(include=["test_*"]).matches(py("test_views"))


def test_path_globs_match_file_names():
    s = Scope(exclude=["*/site-packages/*"])
    assert not s.matches(py("flask.app", "/v/lib/python3.12/site-packages/flask/app.py"))
    assert s.matches(py("app", "/srv/app.py"))
    assert Scope(include=["*/views.py"]).matches(py("a.views", "/srv/a/views.py"))
    assert not Scope(include=["*/views.py"]).matches(c("len", "builtins"))  # no file


def test_exclude_wins_and_include_leaves_the_rest_out():
    s = Scope(include=["myapp"], exclude=["myapp.vendored"])
    assert s.matches(py("myapp.views"))
    assert not s.matches(py("myapp.vendored.six"))
    assert not s.matches(py("json"))
    everything = Scope()
    assert everything.matches(py("json")) and everything.matches(c("len", "builtins"))


def test_c_functions_go_by_their_module():
    length = c("len", "builtins")
    append = c("list.append")  # a method descriptor: its type's module
    acquire = c("_thread.lock.acquire")
    assert c_module(append) == "builtins" and c_module(acquire) == "_thread"
    s = Scope(include=["builtins"])
    assert s.matches(length) and s.matches(append) and not s.matches(acquire)
    assert not Scope(exclude=["builtins"]).matches(append)
    assert Scope(include=["_thread"]).matches(acquire)


def test_python_functions_without_a_module_go_by_their_file():
    assert module_of_file("/usr/lib/python3.12/json/decoder.py") == "json.decoder"
    assert module_of_file("/v/lib/python3.12/site-packages/flask/__init__.py") == "flask"
    assert module_of_file("<frozen importlib._bootstrap>") == "importlib._bootstrap"
    assert module_of_file("/nowhere/app.py") == "app"
    assert module_of_file("<string>") == ""
    f = py("", "/usr/lib/python3.12/json/decoder.py")
    assert Scope(include=["json"]).matches(f)


@pytest.mark.parametrize("kwargs, says", [
    (dict(include=[""]), "empty pattern"),
    (dict(exclude=["  "]), "empty pattern"),
    (dict(include=["my app"]), "neither a module name"),
    (dict(include=["a..b"]), "neither a module name"),
    (dict(include=[".a"]), "neither a module name"),
    (dict(include="myapp"), "lists of patterns"),
    (dict(include=[3]), "a pattern is a string"),
    (dict(max_depth=-1), "max_depth"),
    (dict(max_depth=2.5), "max_depth"),
    (dict(max_depth=True), "max_depth"),
    (dict(min_duration=-0.001), "min_duration"),
    (dict(min_duration=math.nan), "min_duration"),
    (dict(min_duration=math.inf), "min_duration"),
    (dict(min_duration="1ms"), "min_duration"),
])
def test_bad_arguments_are_value_errors(kwargs, says):
    with pytest.raises(ValueError, match=says):
        Scope(**kwargs)


def test_describe_and_durations():
    s = Scope(["myapp.*", "json"], ["*/site-packages/*"], 3, 50e-6)
    assert s.describe() == ("include myapp.*, json; exclude */site-packages/*; max depth 3; "
                            "min duration 50 us")
    assert Scope().describe() == ""
    assert parse_seconds("50us") == pytest.approx(50e-6)
    assert parse_seconds("2ms") == pytest.approx(0.002)
    assert parse_seconds("0.5s") == 0.5 and parse_seconds("1.5") == 1.5
    assert parse_seconds("2m") == 120 and parse_seconds("10ns") == pytest.approx(1e-8)
    for bad in ("", "ms", "fast", "inf", "1e400"):
        with pytest.raises(ValueError):
            parse_seconds(bad)


def _tree(threads):
    """A CallTree from {tid: [(parent index within the thread or -1, fid, self_ns, calls)]}."""
    t = CallTree.__new__(CallTree)
    t.trace, t._fold, t.sampled, t.window, t._inclusive = Mode("trace"), None, False, None, None
    for name in ("parent", "fid", "depth", "self_ns", "calls"):
        setattr(t, name, array("q"))
    t.threads = []
    for tid, nodes in threads.items():
        base = len(t.parent)
        for p, fid, self_ns, calls in nodes:
            t.parent.append(p + base if p >= 0 else -1)
            t.depth.append(t.depth[p + base] + 1 if p >= 0 else 0)
            t.fid.append(fid)
            t.self_ns.append(self_ns)
            t.calls.append(calls)
        t.threads.append(ThreadTree(tid, base, len(t.parent), 0, 100, 0, 0, 0, 9, 0))
    return t


def _paths(tree):
    out = {}
    for tid, node in tree.nodes():
        if tree.self_ns[node]:
            key = (tid, tuple(reversed(tree.stack(node))))
            out[key] = out.get(key, 0) + tree.self_ns[node]
    return out


# root; a(1) -> b(2) -> c(3); a -> c
NODES = [(-1, 0, 5, 0), (0, 1, 10, 1), (1, 2, 20, 2), (2, 3, 30, 3), (1, 3, 40, 4)]


def test_pruned_moves_time_to_the_nearest_kept_caller():
    tree = _tree({1: NODES})
    out = tree.pruned(lambda fid: fid != 2)
    assert _paths(out) == {(1, (1,)): 30, (1, (1, 3)): 70}
    c3 = [n for _, n in out.nodes() if out.fid[n] == 3]
    assert [out.calls[n] for n in c3] == [7]  # a -> c, whichever way it came
    assert sum(out.self_ns) == sum(tree.self_ns)


def test_pruned_depth_threads_and_merge():
    tree = _tree({1: NODES, 2: NODES})
    cut = tree.pruned(lambda fid: True, max_depth=1)
    assert _paths(cut) == {(1, (1,)): 100, (2, (1,)): 100}
    assert _paths(tree.pruned(lambda fid: True, threads={2})) == {
        (2, (1,)): 10, (2, (1, 2)): 20, (2, (1, 2, 3)): 30, (2, (1, 3)): 40}
    merged = tree.pruned(lambda fid: True, merge=True)
    assert len(merged.threads) == 1 and merged.threads[0].root == 0
    assert _paths(merged) == {(1, (1,)): 20, (1, (1, 2)): 40, (1, (1, 2, 3)): 60,
                              (1, (1, 3)): 80}
    assert merged.self_ns[0] == 10  # both roots' own time
    nothing = tree.pruned(lambda fid: False)
    assert _paths(nothing) == {}


def test_hostile_arguments():
    """Found by trying to break start(): None is no patterns; a non-list is a ValueError; a
    huge min_duration is refused before the nanoseconds overflow; identifiers may be
    non-ASCII; a long pattern list is described in a few words."""
    assert not Scope(None, None).patterns
    for bad in (3, 1.5, object()):
        with pytest.raises(ValueError, match="include: a list of patterns"):
            Scope(bad)
    with pytest.raises(ValueError, match="at most"):
        Scope(min_duration=1e300)
    assert Scope(min_duration=1e9).min_duration_ns == 10**18
    assert Scope(["modé.*", "ünï"]).include == ("modé.*", "ünï")
    with pytest.raises(ValueError, match="neither a module name"):
        Scope(["a\x00b"])
    text = Scope(["p%d" % i for i in range(100)]).describe()
    assert text.startswith("include p0, p1,") and text.endswith("... (92 more)")

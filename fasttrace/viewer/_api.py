"""The viewer's data: the timeline index (docs/viewer-design.md) as JSON and binary answers.

Slices and states travel as one little-endian ArrayBuffer each (encode_slices,
encode_states): a range query at screen resolution holds a few thousand entries, and typed
arrays cost the page no parsing (JSON of the same is ~3x the bytes and a parse per answer).
Times are float64 ns (exact below 2**53 ns, 104 days), ids int32.

Errors are ApiError(status, message): the server turns them into a plain-text answer.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array

from fasttrace import _core
from fasttrace._scope import c_module
from fasttrace.commands import where
from fasttrace.export import _samples

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Tuple

# The layout of a slices answer: a header (n, 0), then start[n] and end[n] (float64), then
# node[n], fid[n], depth[n], count[n] (int32).  A states answer: (n, 1), start[n], end[n]
# (float64), state[n] (int32).
HEADER = struct.Struct("<II")
#: The most slices one answer holds (64 MB): the page asks for a tile of 512 pixels, a few per
#: pixel and depth; an answer bigger than this is a request no screen can show.
MAX_SLICES = 1 << 21


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _le(a: "array[Any]") -> bytes:
    if sys.byteorder != "little":
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def encode_slices(s: Any, tree: Any) -> bytes:
    n = len(s.start)
    fid, depth = tree.fid, tree.depth
    return b"".join([
        HEADER.pack(n, 0), _le(array("d", s.start)), _le(array("d", s.end)),
        _le(array("i", s.node)), _le(array("i", [fid[i] for i in s.node])),
        _le(array("i", [depth[i] for i in s.node])), _le(array("i", s.count)),
    ])


def encode_states(s: Any) -> bytes:
    return b"".join([HEADER.pack(len(s.start), 1), _le(array("d", s.start)),
                     _le(array("d", s.end)), _le(array("i", s.state))])


def function_row(f: Any) -> "List[Any]":
    """[qualname, where, module (C: its type's module; what colours it), is_c, name]."""
    module = c_module(f) if f.is_c else (f.module or "")
    return [f.qualname or f.name, where(f), module, bool(f.is_c), f.name]


def tree_json(tree: Any) -> "Dict[str, Any]":
    """A CallTree as parallel lists; the page folds flame graphs and blocking profiles from
    it (one pass over the nodes, which a window tree keeps small)."""
    return {
        "parent": list(tree.parent), "fid": list(tree.fid), "self": list(tree.self_ns),
        "calls": list(tree.calls), "running": list(getattr(tree, "running_ns", [])),
        "gil": list(getattr(tree, "gil_ns", [])), "call": list(getattr(tree, "call_ns", [])),
        "threads": [[t.tid, t.root, t.end] for t in tree.threads],
        "functions": {str(fid): function_row(tree.function(fid)) for fid in set(tree.fid)},
    }


class Api:
    """Answers about one Index (each method: what one URL of the server returns)."""

    def __init__(self, index: Any, source: Any, problems: "Optional[List[str]]" = None) -> None:
        self.index = index
        self.source = source
        self.problems = list(problems or [])
        self._functions: Dict[Tuple[int, Optional[int]], List[Dict[str, Any]]] = {}

    # ---- parameters -----------------------------------------------------------------------

    def process(self, q: "Mapping[str, str]") -> Any:
        i = _int(q, "p", 0)
        if not 0 <= i < len(self.index.processes):
            raise ApiError(404, f"no process {i} (there are {len(self.index.processes)})")
        return self.index.processes[i]

    def thread(self, p: Any, q: "Mapping[str, str]") -> int:
        tid = _int(q, "tid")
        if not any(t.tid == tid for t in p.threads):
            raise ApiError(404, f"no thread {tid} in process {p.pid}")
        return tid

    def range(self, p: Any, q: "Mapping[str, str]") -> "Tuple[int, int]":
        t0, t1 = _int(q, "t0"), _int(q, "t1")
        if t1 < t0:
            raise ApiError(400, f"t1 ({t1}) is before t0 ({t0})")
        if t1 < 0 or t0 > p.end_ns:
            raise ApiError(400, f"[{t0}, {t1}] is outside the trace (0 to {p.end_ns} ns)")
        return t0, t1

    # ---- answers ----------------------------------------------------------------------------

    def meta(self) -> "Dict[str, Any]":
        procs = []
        for i, p in enumerate(self.index.processes):
            t = p.trace
            procs.append({
                "index": i, "pid": p.pid, "name": p.name, "command": list(p.command),
                "offset_ns": p.offset_ns, "end_ns": p.end_ns, "mode": p.mode,
                "truncated": bool(t.stats.truncated), "damage": t.damage,
                "scope": t.scope_text() if t.scope is not None else None,
                "dropped": t.stats.dropped, "problems": list(t.series_problems),
                "clock": _samples.clock(t) if p.mode == "sample" else None,
                "threads": [{"tid": th.tid, "name": th.name, "first_ns": th.first_ns,
                             "last_ns": th.last_ns, "max_depth": th.max_depth,
                             "gaps": [list(g) for g in th.gaps]} for th in p.threads],
                "functions": {str(fid): function_row(p.tree.function(fid))
                              for fid in set(p.tree.fid)},
            })
        return {"processes": procs, "problems": self.problems, "path": _path(self.source)}

    def slices(self, q: "Mapping[str, str]") -> bytes:
        p = self.process(q)
        tid = self.thread(p, q)
        t0, t1 = self.range(p, q)
        try:
            found = p.slices(tid, t0, t1, _res(q), MAX_SLICES)
        except _core.TooManySlices as e:
            raise ApiError(400, f"{e}: ask for a coarser res or a shorter range") from None
        return encode_slices(found, p.tree)

    def states(self, q: "Mapping[str, str]") -> bytes:
        p = self.process(q)
        tid = self.thread(p, q)
        t0, t1 = self.range(p, q)
        if p.mode != "sample":
            raise ApiError(404, "states: a trace-mode trace has no sampled states")
        return encode_states(p.states(tid, t0, t1, _res(q)))

    def call(self, q: "Mapping[str, str]") -> "Dict[str, Any]":
        """One call, exactly (IndexProcess.call): what the page shows for a clicked slice."""
        p = self.process(q)
        tid = self.thread(p, q)
        t0, t1 = self.range(p, q)
        node = _int(q, "node")
        if not 0 < node < len(p.tree.fid):
            raise ApiError(404, f"no node {node} in process {p.pid}")
        return dict(p.call(tid, node, t0, t1))

    def functions(self, q: "Mapping[str, str]") -> "List[Dict[str, Any]]":
        p = self.process(q)
        tid = self.thread(p, q) if q.get("tid", "") != "" else None
        return self.function_table(self.index.processes.index(p), tid)

    def function_table(self, i: int, tid: Optional[int]) -> "List[Dict[str, Any]]":
        """The time per function (CallTree.function_stats: what `report` shows, exactly)."""
        key = (i, tid)
        if key not in self._functions:
            tree = self.index.processes[i].tree
            rows = []
            for fid, fs in tree.function_stats(tid).items():
                rows.append({"fid": fid, "calls": fs.calls, "self_ns": fs.self_ns,
                             "total_ns": fs.total_ns})
            rows.sort(key=lambda r: (-r["self_ns"], r["fid"]))
            self._functions[key] = rows
        return self._functions[key]

    def tree(self, q: "Mapping[str, str]") -> "Dict[str, Any]":
        p = self.process(q)
        if "t0" in q or "t1" in q:
            t0, t1 = self.range(p, q)
            return tree_json(p.window(t0, t1))
        return tree_json(p.tree)


def _int(q: "Mapping[str, str]", name: str, default: "Optional[int]" = None) -> int:
    v = q.get(name)
    if v is None or v == "":
        if default is not None:
            return default
        raise ApiError(400, f"missing parameter {name}")
    try:
        x = float(v) if any(c in v for c in ".eE") else int(v)
    except ValueError:
        raise ApiError(400, f"{name}={v[:40]!r} is not a number") from None
    if isinstance(x, float) and not math.isfinite(x):
        raise ApiError(400, f"{name}={v[:40]!r} is not a finite number")
    return int(x)


def _res(q: "Mapping[str, str]") -> int:
    res = _int(q, "res", 1)
    if res < 1:
        raise ApiError(400, f"res={res}: the resolution must be at least 1 ns")
    return res


def _path(source: Any) -> str:
    return str(getattr(source, "path", ""))

"""`fasttrace view TRACE --html OUT.html`: the page with its data in one file, to share.

Nothing is fetched when it opens: the scripts and the stylesheet are inlined and the data is
embedded (JSON, and the slices and states as base64 of the server's binary answers).  A big
trace does not fit at full detail, so each thread's slices are embedded at a resolution (the
same level of detail the server gives when zoomed out): the finest at which all threads'
slices fit the budget, plus coarser levels for the zoomed-out views.  The page says what
resolution it holds.
"""

from __future__ import annotations

import base64
import json
import re

from fasttrace.viewer._api import Api, encode_slices, encode_states, tree_json
from fasttrace.viewer._server import static_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Tuple

DEFAULT_BUDGET = 30_000_000
# base64 of one slice in the binary layout (2 float64 + 4 int32 = 32 bytes) is 4/3 of that;
# coarser levels add about a tenth more
SLICE_BYTES = 48
LEVEL_STEP = 16  # each coarser level: this many times the resolution
COARSEST_PX = 1024  # the coarsest level: the thread's span over this many pixels


def _lanes(api: Api) -> "List[Tuple[int, Any, Any]]":
    return [(i, p, t) for i, p in enumerate(api.index.processes) for t in p.threads]


def choose_resolutions(api: Api, budget: int) -> "Tuple[Dict[Tuple[int, int], int], bool]":
    """(p, tid) -> the finest resolution to embed, such that the slices of all threads fit the
    budget (each thread gets the same number of 'pixels' across its span); and whether that is
    full detail (no slice merged)."""
    lanes = _lanes(api)
    best: Dict[Tuple[int, int], int] = {
        (i, t.tid): max(1, (t.last_ns - t.first_ns) // COARSEST_PX) for i, p, t in lanes}
    full = False
    px = COARSEST_PX * 2
    while px < (1 << 40):
        trial = {(i, t.tid): max(1, (t.last_ns - t.first_ns) // px) for i, p, t in lanes}
        size = 0
        merged = False
        for i, p, t in lanes:
            s = p.slices(t.tid, t.first_ns, t.last_ns, trial[(i, t.tid)])
            size += len(s.start) * SLICE_BYTES
            merged = merged or any(c > 1 for c in s.count)
        if size > budget:
            break
        best = trial
        if not merged:  # every call is its own slice: finer adds nothing
            full = True
            break
        px *= 4
    return best, full


def export(api: Api, budget: int = DEFAULT_BUDGET) -> str:
    finest, full = choose_resolutions(api, budget)
    lanes: Dict[str, Any] = {}
    for i, p, t in _lanes(api):
        res = finest[(i, t.tid)]
        span = max(1, t.last_ns - t.first_ns)
        levels, states = [], []
        while True:
            s = p.slices(t.tid, 0, p.end_ns, res)
            levels.append({"res": res, "data": base64.b64encode(encode_slices(s, p.tree)).decode()})
            if p.mode == "sample":
                st = p.states(t.tid, 0, p.end_ns, res)
                states.append({"res": res, "data": base64.b64encode(encode_states(st)).decode()})
            if res * COARSEST_PX >= span:
                break
            res *= LEVEL_STEP
        lanes[f"{i}:{t.tid}"] = {"levels": levels, "states": states}
    functions: Dict[str, Any] = {}
    for i, p, t in _lanes(api):
        functions[f"{i}:{t.tid}"] = api.function_table(i, t.tid)
    for i, _ in enumerate(api.index.processes):
        functions[f"{i}:"] = api.function_table(i, None)
    data = {
        "meta": api.meta(),
        "export": {"budget": budget, "full": full,
                   "finest": {f"{i}:{tid}": r for (i, tid), r in finest.items()}},
        "lanes": lanes, "functions": functions,
        "trees": [tree_json(p.tree) for p in api.index.processes],
    }
    return page(json.dumps(data, separators=(",", ":")))


def page(data_json: str) -> str:
    """index.html with the stylesheet and scripts inlined and the data embedded."""
    html = static_file("index.html").decode()
    # "</" inside a script element would end it early: JSON allows "<\/" for it
    embedded = ('<script type="application/json" id="ft-data">'
                + data_json.replace("</", "<\\/") + "</script>")

    def style(m: "re.Match[str]") -> str:
        return "<style>\n" + static_file(m.group(1)).decode() + "</style>"

    def script(m: "re.Match[str]") -> str:
        js = static_file(m.group(1)).decode().replace("</script", "<\\/script")
        return "<script>\n" + js + "</script>"

    html = re.sub(r'<link rel="stylesheet" href="static/([\w.]+)">', style, html)
    html = html.replace("<!--data-->", embedded)
    return re.sub(r'<script src="static/([\w.]+)"></script>', script, html)

"""Run a workload under a sys.monitoring tool that disables everything it is given (3.12+):
the floor under fasttrace's out-of-scope cost (bench/scope.py's `floor` config).

    python bench/runners/monitoring_floor.py WORKLOAD

The tool registers the events fasttrace's c_calls=True trace registers (PY_START, PY_RESUME,
PY_THROW, PY_RETURN, PY_YIELD, PY_UNWIND, CALL, C_RETURN, C_RAISE) with callbacks that return
DISABLE wherever CPython allows it, so that every code location runs unhooked after its first
event, as out-of-scope code does under fasttrace.  What such a run costs over bare is
CPython's, not fasttrace's.
"""

import runpy
import sys

TOOL = 4  # fasttrace's first choice, free here: nothing else runs


def main(argv):
    if len(argv) != 1:
        sys.exit("usage: monitoring_floor.py WORKLOAD")
    mon = sys.monitoring
    ev = mon.events
    disable = mon.DISABLE

    def off(*args):
        return disable

    def passes(*args):
        return None  # not local events: CPython refuses DISABLE (C_RETURN follows CALL)

    mon.use_tool_id(TOOL, "floor")
    events = 0
    for e in (ev.PY_START, ev.PY_RESUME, ev.PY_RETURN, ev.PY_YIELD, ev.CALL):
        mon.register_callback(TOOL, e, off)
        events |= e
    for e in (ev.C_RETURN, ev.C_RAISE, ev.PY_THROW, ev.PY_UNWIND):
        mon.register_callback(TOOL, e, passes)
        events |= e
    mon.set_events(TOOL, events)
    try:
        sys.argv = [argv[0]]
        runpy.run_path(argv[0], run_name="__main__")
    finally:
        mon.set_events(TOOL, 0)
        mon.free_tool_id(TOOL)


if __name__ == "__main__":
    main(sys.argv[1:])

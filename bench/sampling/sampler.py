"""Loader for the _ftsample prototype (built by build.sh) plus small helpers."""
import dis
import os
import sys
from pathlib import Path

_BUILD = Path(os.environ.get("FTSAMPLE_BUILD",
                             Path(__file__).resolve().parents[1] / ".venvs" / "sampling-build"))
sys.path.insert(0, str(_BUILD / ("%d.%d" % sys.version_info[:2])))
import _ftsample  # noqa: E402

sys.path.pop(0)


def call_opcodes():
    """256-byte table: 1 for every CALL-family opcode (incl. specialized/instrumented)."""
    table = bytearray(256)
    opmap = getattr(dis, "_all_opmap", dis.opmap)
    for name, op in opmap.items():
        if "CALL" in name and op < 256:
            table[op] = 1
    return bytes(table)


def start(rate=100, mode="nogil", jitter=True, snapshot=False, fifo=None):
    """mode: "nogil" (GIL-free sampler) or "gil" (takes the GIL per sample).
    snapshot: copy the live data-stack chunk in one read (and retry a torn walk once)."""
    if fifo is None:  # FTSAMPLE_FIFO=1: run the sampler thread SCHED_FIFO (needs CAP_SYS_NICE)
        fifo = os.environ.get("FTSAMPLE_FIFO") == "1"
    _ftsample.start(float(rate), call_opcodes(), mode=mode, jitter=jitter, snapshot=snapshot,
                    fifo=fifo)


def stop(return_samples=True):
    return _ftsample.stop(return_samples)


HOLDS_GIL, TOP_CALL, TORN, TRUNC, ATTACHED, HOLDS_GIL_BIT = 1, 2, 4, 8, 16, 32

"""Exporters: a loaded trace to the formats of other tools.

    from fasttrace.export import write
    write(fasttrace.load("out.ftrace"), "out.pftrace", "perfetto")

Each exporter is a module with `write(trace, out, *, progress=None) -> dict`: `out` is a path or
a file, `progress(done, total)` is called now and then with events converted so far, and the
dict summarises what was written.  Modules are imported only when their format is used.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Tuple, Union

    Writer = Callable[..., Dict[str, Any]]

#: format name -> (module with write(), or the write callable itself; default file suffix).
#: One entry per line, sorted by name.
FORMATS: Dict[str, Tuple[Union[str, Writer], str]] = {
    "chrome": ("fasttrace.export.chrome", ".chrome.json"),
    "collapsed": ("fasttrace.export.collapsed", ".folded"),
    "perfetto": ("fasttrace.export.perfetto", ".pftrace"),
    "pprof": ("fasttrace.export.pprof", ".pb.gz"),
    "speedscope": ("fasttrace.export.speedscope", ".speedscope.json"),
}


def _entry(name: str) -> Tuple[Union[str, Writer], str]:
    try:
        return FORMATS[name]
    except KeyError:
        known = ", ".join(sorted(FORMATS))
        raise ValueError(f"unknown export format {name!r} (known: {known})") from None


def writer(name: str) -> Writer:
    """The write() function of format `name` (imports its module)."""
    target = _entry(name)[0]
    if callable(target):
        return target
    return importlib.import_module(target).write  # type: ignore[no-any-return]


def suffix(name: str) -> str:
    """The usual file suffix of format `name`, such as ".pftrace"."""
    return _entry(name)[1]


def write(trace: Any, out: Any, format: str, *, progress: Any = None, **options: Any
          ) -> Dict[str, Any]:
    """Writes `trace` to `out` in `format`; returns the exporter's summary dict."""
    return writer(format)(trace, out, progress=progress, **options)

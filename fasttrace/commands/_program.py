"""The program `fasttrace run` runs, set up as plain python sets it up.

prepare() compiles the script (or finds the module, as `python -m` does) before the trace
starts, and builds the `__main__` module the code runs in, with the attributes python gives it
on 3.9-3.13:

    python script.py    __file__ absolute, __loader__ a SourceFileLoader, __spec__,
                        __cached__ and __package__ None; code compiled with the absolute path;
                        sys.path[0] the script's directory, symbolic links resolved
    python -m module    what runpy sets: __file__, __cached__, __loader__, __package__ and
                        __spec__ from the module's spec; sys.argv[0] its file; sys.path[0] the
                        working directory
    python dir_or.zip   as -m __main__ with the directory or zip file as sys.path[0]
    python -c code      no __file__; __loader__ BuiltinImporter; sys.path[0] ""

The caller then runs the code with exec() in its own frame, so that no runner frame (runpy's or
fasttrace's) is between the program and the root of its stacks.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import io
import linecache
import os
import runpy
import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType
    from typing import Any, Dict, List, Tuple


# python (and runpy) stopped setting __main__.__cached__ in 3.15
SETS_CACHED = sys.version_info < (3, 15)


class NoProgram(ImportError):
    """The module or __main__ to run cannot be found; the message says why (runpy's error)."""


def prepare(kind: str, what: str, args: List[str]) -> "Tuple[CodeType, Dict[str, Any]]":
    """(the code to exec, its globals) for kind "script" (a file, a directory or a zip file),
    "module" or "code".  Sets sys.argv, sys.path[0] and sys.modules["__main__"].  Raises
    NoProgram, or what the program's code raises while it is compiled or its package imported
    (a SyntaxError, ...), as python would."""
    main = types.ModuleType("__main__")
    g = main.__dict__
    if sys.version_info < (3, 14):  # 3.14's annotations are evaluated lazily (PEP 649)
        g["__annotations__"] = {}
    g["__builtins__"] = builtins
    if kind == "code":
        sys.argv = ["-c", *args]
        sys.path[0] = ""
        code = compile(what, "<string>", "exec", dont_inherit=True)
        g["__loader__"] = importlib.machinery.BuiltinImporter
        register = getattr(linecache, "_register_code", None)
        if register is not None:  # 3.13+: python keeps -c code for its tracebacks, keyed by
            # the file name on 3.13 and by the code objects from 3.14
            register(code if sys.version_info >= (3, 14) else "<string>", what, "<string>")
    elif kind == "module":
        sys.argv = ["-m", *args]  # python's argv[0] while it looks for the module
        sys.path[0] = os.getcwd()
        _name, spec, code = _details(what, lambda: runpy._get_module_details(  # type: ignore
            what, NoProgram))
        sys.argv[0] = spec.origin
        _from_spec(g, spec)
    elif os.path.isfile(what):
        path = os.path.abspath(what)
        sys.argv = [what, *args]
        sys.path[0] = os.path.dirname(os.path.realpath(what))
        with io.open_code(path) as f:
            source = f.read()
        code = compile(source, path, "exec", dont_inherit=True)
        g.update(__file__=path,
                 __loader__=importlib.machinery.SourceFileLoader("__main__", path))
        if SETS_CACHED:
            g["__cached__"] = None
    else:  # a directory or a zip file with a __main__.py
        sys.argv = [what, *args]
        sys.path[0] = os.path.abspath(what)
        _name, spec, code = _details(what, lambda: runpy._get_main_module_details(  # type: ignore
            NoProgram))
        _from_spec(g, spec)
    sys.modules["__main__"] = main  # what pickle and multiprocessing look up, as under python
    return code, g


def _details(what: str, find: Any) -> Any:
    try:
        return find()
    except ImportError as e:
        if isinstance(e, NoProgram):  # runpy's "no module named ...", "cannot find __main__"
            msg = str(e)
            raise NoProgram(f"{msg[:1].lower()}{msg[1:]}") from None
        raise


def _from_spec(g: Dict[str, Any], spec: Any) -> None:
    # as runpy._run_code
    g.update(__name__="__main__", __file__=spec.origin, __doc__=None,
             __loader__=spec.loader, __package__=spec.parent, __spec__=spec)
    if SETS_CACHED:
        g["__cached__"] = spec.cached

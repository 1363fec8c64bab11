"""The scope of a trace: which functions count (docs/scope-design.md).  One matcher serves
capture (`fasttrace.start(include=..., exclude=...)`) and `fasttrace convert`.

Patterns, each of one of two kinds:

* a **path glob** contains a `/` (or the platform's separator) or ends with `.py`, such as
  `*/site-packages/*` or `*/myapp/views.py`: matched (fnmatch, case-sensitive) against a
  Python function's file name.  A C function has no file: no path glob matches it.
* a **module glob** is a dotted name whose parts are identifier characters and the glob
  characters `* ? [ ] !`, such as `json`, `myapp.*` or `test_*`: matched against the
  function's module and each of its parents, so `myapp` covers `myapp` and `myapp.sub.x`,
  while `myapp.*` covers only the modules under `myapp`.

A C function's module is its own, else the one its type's name gives (`c_module()`): `len` is
in `builtins`, `list.append` too, `_thread.RLock.acquire` in `_thread`.

Exclude wins over include; with no include every function not excluded is in scope, with an
include only the functions some include pattern matches.  Anything wrong in a pattern, a
negative or non-integer max_depth, a negative or non-finite min_duration: ValueError, raised
by the constructor, so before anything is traced or written.
"""

from __future__ import annotations

import functools
import math
import os
import re
from fnmatch import fnmatchcase

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List, Optional, Tuple

_MODULE_PART = re.compile(r"[\w*?\[\]!-]+\Z")  # \w: identifiers may be any letters


#: seconds: more than any run lasts, and within the native side's 64-bit nanoseconds
MAX_MIN_DURATION = 1e9


def patterns_text(patterns: "Iterable[str]", most: int = 8) -> str:
    """`a, b, c`, or the first `most` and how many more."""
    given = list(patterns)
    shown = ", ".join(map(str, given[:most]))
    return shown + (f", ... ({len(given) - most} more)" if len(given) > most else "")


def c_module(f: "Any") -> str:
    """The module of a C function: its own, or the one its type's name gives (a method of
    `_thread.RLock` is in `_thread`, one of `set` in `builtins`)."""
    if f.module:
        return str(f.module)
    parts = str(f.qualname or f.name).split(".")
    return ".".join(parts[:-2]) if len(parts) > 2 else "builtins"


def is_path_pattern(pattern: str) -> bool:
    """A path glob (matched against file names) rather than a module glob."""
    return "/" in pattern or os.sep in pattern or pattern.endswith(".py")


def _check_pattern(pattern: "Any", option: str) -> str:
    if not isinstance(pattern, str):
        raise ValueError(f"{option}: a pattern is a string, got {pattern!r}")
    if not pattern.strip():
        raise ValueError(f"{option}: empty pattern")
    if pattern != pattern.strip():
        raise ValueError(f"{option}: {pattern!r} has blanks at its ends")
    if is_path_pattern(pattern):
        return pattern
    parts = pattern.split(".")
    if not all(_MODULE_PART.match(p) for p in parts):
        raise ValueError(f"{option}: {pattern!r} is neither a module name or dotted glob "
                         "(myapp, myapp.*, json) nor a path glob (one with a /, or ending in "
                         ".py, such as */site-packages/*)")
    return pattern


def _modules(module: str) -> "List[str]":
    """`a.b.c` -> [a, a.b, a.b.c]: a module and its parents."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _module_of(f: "Any") -> str:
    if f.is_c:
        return c_module(f)
    return str(f.module) if f.module else module_of_file(str(f.filename or ""))


_LIBRARY_DIRS = re.compile(r"(site-packages|dist-packages|python3\.\d+|python2\.\d)\Z")


@functools.lru_cache(maxsize=4096)
def module_of_file(filename: str) -> str:
    """The module a Python file is, as far as its path says (a trace records no module for
    Python functions): `<frozen importlib._bootstrap>` is that module; under site-packages,
    dist-packages or lib/python3.N, the dotted path below it; else the file's stem, with the
    packages above it that still exist here (directories with an __init__.py).  `__init__.py`
    is its package.  "" for code with no file (`<string>`)."""
    if filename.startswith("<frozen ") and filename.endswith(">"):
        return filename[len("<frozen "):-1]
    if not filename or filename.startswith("<"):
        return ""
    parts = re.split(r"[\\/]", filename)
    stem = parts[-1][:-3] if parts[-1].endswith(".py") else parts[-1]
    names = parts[:-1] + [stem]
    for i in range(len(parts) - 2, -1, -1):
        if _LIBRARY_DIRS.match(parts[i]):
            names = names[i + 1:]
            break
    else:
        top = len(parts) - 1
        while top > 0 and os.path.isfile(os.path.join(os.sep.join(parts[:top]) or os.sep,
                                                      "__init__.py")):
            top -= 1
        names = names[top:]
    if len(names) > 1 and names[-1] == "__init__":
        names.pop()
    return ".".join(n for n in names if n)


class Scope:
    """include/exclude patterns, max_depth and min_duration (seconds), checked.  matches(f)
    caches its answer per function id: use one Scope per trace (ids are a trace's own)."""

    def __init__(self, include: "Iterable[str]" = (), exclude: "Iterable[str]" = (),
                 max_depth: "Optional[int]" = None, min_duration: "Optional[float]" = None
                 ) -> None:
        if isinstance(include, str) or isinstance(exclude, str):
            raise ValueError("include and exclude are lists of patterns, not one string")
        include = () if include is None else include
        exclude = () if exclude is None else exclude
        for name, given in (("include", include), ("exclude", exclude)):
            try:
                iter(given)
            except TypeError:
                raise ValueError(f"{name}: a list of patterns, got {given!r}") from None
        self.include: Tuple[str, ...] = tuple(_check_pattern(p, "include") for p in include)
        self.exclude: Tuple[str, ...] = tuple(_check_pattern(p, "exclude") for p in exclude)
        if max_depth is not None and (isinstance(max_depth, bool)
                                      or not isinstance(max_depth, int) or max_depth < 0):
            raise ValueError(f"max_depth: a number of frames, 0 or more, got {max_depth!r}")
        if min_duration is not None:
            if isinstance(min_duration, bool) or not isinstance(min_duration, (int, float)) \
                    or not math.isfinite(min_duration) or min_duration < 0 \
                    or min_duration > MAX_MIN_DURATION:
                raise ValueError("min_duration: a finite number of seconds, 0 or more (at most "
                                 f"{MAX_MIN_DURATION:g}), got {min_duration!r}")
        self.max_depth = max_depth
        self.min_duration = min_duration
        self._cache: Dict[int, bool] = {}
        #: capture time: {filename: in scope}, {(module, qualname): in scope}
        self.code_cache: Dict[str, bool] = {}
        self.c_cache: Dict[Tuple[str, str], bool] = {}

    @property
    def patterns(self) -> bool:
        """Whether include or exclude patterns were given (else every function matches)."""
        return bool(self.include or self.exclude)

    @property
    def min_duration_ns(self) -> int:
        return 0 if self.min_duration is None else round(self.min_duration * 1e9)

    def matches(self, f: "Any") -> bool:
        """Whether function f (a fasttrace Function: name, qualname, filename, module, is_c,
        id) is in scope."""
        hit = self._cache.get(f.id)
        if hit is None:
            hit = self._cache[f.id] = self._decide(f)
        return hit

    def _decide(self, f: "Any") -> bool:
        return self._decide_parts(_module_of(f), "" if f.is_c else str(f.filename or ""))

    # ---- at capture time: called by the hooks, once per function (src/ft_intern.c) ----

    def code_in_scope(self, filename: str) -> bool:
        """Whether Python code of this file is in scope.  The answer is kept in
        `code_cache`, which the hooks read before they call this."""
        hit = self.code_cache.get(filename)
        if hit is None:
            hit = self.code_cache[filename] = self._decide_parts(module_of_file(filename),
                                                                 filename)
        return hit

    def c_in_scope(self, module: str, qualname: str) -> bool:
        """Whether a C function is in scope, from what its FUNCTION definition would say
        (module, qualname); kept in `c_cache`, keyed by the pair."""
        key = (module, qualname)
        hit = self.c_cache.get(key)
        if hit is None:
            parts = qualname.split(".")
            mod = module or (".".join(parts[:-2]) if len(parts) > 2 else "builtins")
            hit = self.c_cache[key] = self._decide_parts(mod, "")
        return hit

    def to_json(self, trim_stacks: bool = False) -> str:
        """The SCOPE definition of a trace file: the scope as given."""
        import json

        return json.dumps({"include": list(self.include), "exclude": list(self.exclude),
                           "max_depth": self.max_depth, "min_duration": self.min_duration,
                           "trim_stacks": bool(trim_stacks)}, separators=(",", ":"))

    def _decide_parts(self, module: str, filename: str) -> bool:
        modules = _modules(module)

        def hit(pattern: str) -> bool:
            if is_path_pattern(pattern):
                return bool(filename) and fnmatchcase(filename, pattern)
            return any(fnmatchcase(m, pattern) for m in modules)

        if any(hit(p) for p in self.exclude):
            return False
        return not self.include or any(hit(p) for p in self.include)

    def describe(self) -> str:
        """`include myapp.*, json; exclude */site-packages/*; max depth 3; min duration 50 us`,
        or "" when nothing limits the scope."""
        said = []
        if self.include:
            said.append("include " + patterns_text(self.include))
        if self.exclude:
            said.append("exclude " + patterns_text(self.exclude))
        if self.max_depth is not None:
            said.append(f"max depth {self.max_depth}")
        if self.min_duration is not None:
            said.append(f"min duration {seconds_text(self.min_duration)}")
        return "; ".join(said)


_UNITS = (("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0),
          ("h", 3600.0))


def parse_seconds(text: str) -> float:
    """A time in seconds from `0.5`, `0.5s`, `150ms`, `50us`, `2m`, `1h` (ValueError if not
    one, or not finite)."""
    t = text.strip().lower()
    scale = 1.0
    for suffix, factor in sorted(_UNITS, key=lambda u: -len(u[0])):
        if t.endswith(suffix):
            t, scale = t[:-len(suffix)], factor
            break
    try:
        v = float(t) * scale
    except ValueError:
        raise ValueError(f"not a time: {text!r} (e.g. 10, 10s, 500ms, 50us, 2m)") from None
    if not math.isfinite(v):
        raise ValueError(f"not a finite time: {text!r}")
    return v


def seconds_text(s: float) -> str:
    """A time as given back in messages: 50 us, 2 ms, 1.5 s."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:g} {unit}"
    return f"{s * 1e9:g} ns"

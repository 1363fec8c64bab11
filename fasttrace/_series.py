"""Which files make one trace: a file, or the files of a rotated series (src/FORMAT.md section
9), for both readers (fasttrace.load() and fasttrace._pyreader.read_series()).

A source is a path, a glob pattern (when no file has that name), or a list of paths.  A single
path whose header says it is part of a series brings in the other files of that series from
its directory (same suffix, same series id).  The files are ordered by series index; what is
left out, missing or damaged is said in notes, and the loaded files say where the series
does not join up (breaks).  Stdlib only.
"""

from __future__ import annotations

import os

from fasttrace._errors import FormatError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Sequence, Tuple, TypeVar, Union

    F = TypeVar("F")
    Source = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]


def is_pattern(path: str) -> bool:
    """A glob pattern to expand: it has *, ? or [ and names no file."""
    return any(c in path for c in "*?[") and not os.path.lexists(path)


def expand(source: "Source") -> "Tuple[List[str], bool]":
    """(paths, named): the paths `source` names, and whether it names every file of the trace
    (a list, or a glob) rather than one file whose series may bring in others."""
    if isinstance(source, (list, tuple)):
        paths = [os.fspath(p) for p in source]
        if not paths:
            raise ValueError("no trace files given")
        return paths, True
    path = os.fspath(source)  # type: ignore[arg-type]
    if is_pattern(path):
        import glob  # not at import time: it brings in re

        matches = sorted(glob.glob(path))
        if not matches:
            raise FormatError(path, None, "no file matches this pattern")
        return matches, True
    return [path], False


def siblings(path: str) -> "List[str]":
    """The other files in the directory of `path` with its suffix, in name order."""
    import glob

    directory, name = os.path.split(path)
    pattern = "*" + glob.escape(os.path.splitext(name)[1])
    if directory:
        pattern = os.path.join(glob.escape(directory), pattern)
    try:
        me = os.stat(path)
    except OSError:
        return []
    out = []
    for p in sorted(glob.glob(pattern)):
        try:
            st = os.stat(p)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != (me.st_dev, me.st_ino):
            out.append(p)
    return out


def _skipped(path: str, e: FormatError) -> str:
    where = "" if e.offset is None else f"byte {e.offset}: "
    return f"{path}: skipped: {where}{e.reason}"


def _choose(candidates: "List[Tuple[str, Dict[str, Any]]]",
            notes: "List[str]") -> "List[Tuple[str, int]]":
    """(path, series index) of the files of the first candidate's series, by index."""
    p0, h0 = candidates[0]
    if h0["series_index"] == 0:
        for p, _h in candidates[1:]:
            notes.append(f"{p}: skipped: {p0} is not part of a rotated series, so it is read "
                         "alone")
        return [(p0, 0)]
    chosen = []
    for p, h in candidates:
        if h["series_index"] == 0:
            notes.append(f"{p}: skipped: it is not part of a rotated series")
        elif h["series_id"] != h0["series_id"]:
            notes.append(f"{p}: skipped: it belongs to another series (id "
                         f"0x{h['series_id']:016x}, not 0x{h0['series_id']:016x})")
        else:
            chosen.append((p, h["series_index"]))
    chosen.sort(key=lambda c: c[1])  # stable: among equal indexes, the order given
    out: List[Tuple[str, int]] = []
    for p, k in chosen:
        if out and out[-1][1] == k:
            notes.append(f"{p}: skipped: file {k} of the series again (after {out[-1][0]})")
        else:
            out.append((p, k))
    return out


def _continuity(files: "List[Tuple[str, int, Any]]") -> "Tuple[List[bool], List[str]]":
    """Where the loaded files do not join up: a file missing before, or the file before cut."""
    breaks, notes = [False], []
    for (pp, pk, pf), (p, k, _f) in zip(files, files[1:]):
        broken = False
        if k != pk + 1:
            what = f"file {pk + 1} is" if k == pk + 2 else f"files {pk + 1} to {k - 1} are"
            notes.append(f"{what} missing from the series between {pp} and {p}: the frames "
                         "open before are closed there, and reopened after")
            broken = True
        if pf.truncated:
            notes.append(f"{pp}: {pf.damage}; the frames open at its end are closed there, and "
                         f"reopened in {p}")
            broken = True
        breaks.append(broken)
    return breaks, notes


def resolve(source: "Source", read_header: "Callable[[str], Dict[str, Any]]",
            load: "Callable[[str], F]") -> "Tuple[List[Tuple[str, int, F]], List[bool], List[str]]":
    """([(path, series index, loaded file)] in order, breaks, notes).  read_header(path): the
    header dict; load(path): the loaded file (with .header, .truncated and .damage); both
    raise FormatError.  A single file that fails raises; a file of several is skipped with a
    note (when all fail, the first error is raised).  breaks[i]: the series does not join up
    before files[i] (a file missing, or files[i - 1] cut)."""
    paths, named = expand(source)
    loaded: Dict[str, F] = {}
    notes: List[str] = []
    candidates: List[Tuple[str, Dict[str, Any]]] = []
    if not named:
        first = load(paths[0])  # raises what loading one file always raised
        header = first.header  # type: ignore[attr-defined]
        if header["series_index"] == 0:
            return [(paths[0], 0, first)], [False], []
        loaded[paths[0]] = first
        candidates.append((paths[0], header))
        for p in siblings(paths[0]):
            try:
                h = read_header(p)
            except FormatError:
                continue  # not a trace, as far as can be told: nothing says it is one of these
            if h["series_index"] >= 1 and h["series_id"] == header["series_id"]:
                candidates.append((p, h))
    else:
        error = None
        for p in paths:
            try:
                candidates.append((p, read_header(p)))
            except FormatError as e:
                error = error or e
                notes.append(_skipped(p, e))
        if not candidates:
            raise error  # type: ignore[misc]
    chosen = _choose(candidates, notes)
    files: List[Tuple[str, int, F]] = []
    error = None
    for p, k in chosen:
        f = loaded.get(p)
        if f is None:
            try:
                f = load(p)
            except FormatError as e:
                if len(chosen) == 1:
                    raise
                error = error or e
                notes.append(_skipped(p, e))
                continue
        files.append((p, k, f))
    if not files:
        raise error  # type: ignore[misc]
    breaks, more = _continuity(files)
    return files, breaks, notes + more

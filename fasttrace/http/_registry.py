"""The endpoints of every process of a service, found from any one of them.

`fasttrace run --http ADDR --follow-children` starts the endpoints in the program and in each
Python child it follows, each on the next free port.  Every process then writes one small file
into a directory they share (its path in FASTTRACE_HTTP_REGISTRY): <pid>.json with its URL and
command line.  An index lists the others that are still alive.
"""

from __future__ import annotations

import json
import os
import sys

from fasttrace.http._server import Server, serve

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

ENV = "FASTTRACE_HTTP_REGISTRY"
# How far past the asked port a child looks for a free one.
PORT_TRIES = 200


def parse_address(text: str) -> "tuple[str, int]":
    """HOST:PORT, :PORT or PORT (host 127.0.0.1); [::1]:PORT for IPv6.  ValueError if not."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{text!r} is not HOST:PORT (say 127.0.0.1:6060, or :6060)") from None
    if not 0 <= number < 65536:
        raise ValueError(f"{text!r}: the port must be between 0 and 65535")
    return host, number


def serve_near(host: str, port: int, **options: Any) -> Server:
    """serve() on `port` or, if it is taken, the next free one after it (port 0: any)."""
    last: Optional[OSError] = None
    for p in range(port, min(port + PORT_TRIES, 65536)) if port else (0,):
        try:
            return serve(host, p, **options)
        except OSError as e:
            last = e
    assert last is not None
    raise last


def register(server: Server, directory: str) -> None:
    """Writes this process's entry (atomically: readers never see half of one)."""
    entry = {"pid": os.getpid(), "ppid": os.getppid(), "url": server.url,
             "argv": list(getattr(sys, "orig_argv", None) or sys.argv)}
    path = os.path.join(directory, f"{os.getpid()}.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(entry, f)
    os.replace(tmp, path)


def others(directory: str) -> "List[Dict[str, Any]]":
    """The entries of the other processes still alive, by pid."""
    out = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                entry = json.load(f)
            pid = int(entry["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours
        if pid == os.getpid() or not _alive(pid):
            continue
        out.append(entry)
    return sorted(out, key=lambda e: e["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


TOKEN_ENV = "FASTTRACE_HTTP_TOKEN"


def start_for_plan(address: str, directory: Optional[str] = None, *, child: bool = False
                   ) -> Server:
    """The endpoints of `fasttrace run --http ADDRESS`: on that port in the program itself, on
    the next free one after it in a child it follows (child=True).  The token, if any, comes
    from $FASTTRACE_HTTP_TOKEN (not the command line, which every user can read in ps).  With
    a registry `directory`, this process is written into it and its index lists the others.
    ValueError for a bad address, OSError if no port can be had."""
    from fasttrace.http import _endpoints

    host, port = parse_address(address)
    token = os.environ.get(TOKEN_ENV) or None
    server = (serve_near(host, port + 1 if port else 0, token=token) if child
              else serve(host, port, token=token))
    if directory is not None:
        register(server, directory)
        _endpoints.children_source = lambda: others(directory)
    return server

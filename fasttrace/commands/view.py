"""`fasttrace view TRACE`: a web viewer of a trace, served on loopback (or `--html OUT.html`:
one self-contained file to share).  The page and its server are in fasttrace/viewer/."""

from __future__ import annotations

import argparse
import sys
import webbrowser

from fasttrace.commands import add_trace_argument, any_size, error, load_any_or_say_why

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

def _html_budget(text: str) -> int:
    n = any_size(text)
    if n < 100_000:
        raise argparse.ArgumentTypeError(f"{text!r}: the budget must be at least 100KB")
    return n


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text!r} (0 to 65535; 0: a free one)")
    return n


def _memory(text: str) -> int:
    n = any_size(text)
    if n < 1 << 20:
        raise argparse.ArgumentTypeError(f"{text!r}: the index needs at least 1M")
    return n


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("view", help="look at a trace in a web browser (timeline, profiles)")
    add_trace_argument(p)
    p.add_argument("--port", type=_port, default=0,
                   help="port to serve on (default: a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; anything else lets other "
                        "machines read the trace)")
    p.add_argument("--no-browser", action="store_true", help="print the URL, open no browser")
    p.add_argument("--html", metavar="OUT.html",
                   help="write one self-contained HTML file (no server, no network) and exit")
    p.add_argument("--budget", type=_html_budget, default=None, metavar="SIZE",
                   help="--html: how big the embedded timeline may be (default 30M); a "
                        "bigger trace is embedded at a coarser resolution")
    p.add_argument("--memory", type=_memory, default=None, metavar="SIZE",
                   help="timeline index kept in memory per process (default 256M); zooming "
                        "finer than what fits decodes that part of the trace again")


def main(args: argparse.Namespace) -> int:
    from fasttrace._processes import ProcessSet
    from fasttrace.viewer._api import Api
    from fasttrace.viewer._source import DEFAULT_BUDGET, Index

    if args.budget is not None and args.html is None:
        return error("--budget is for --html")
    trace = load_any_or_say_why(args.trace)
    if trace is None:
        return 1
    problems = list(trace.problems) if isinstance(trace, ProcessSet) else []
    progress = _progress(trace) if sys.stderr.isatty() else None
    try:
        index = Index(trace, progress, args.memory or DEFAULT_BUDGET)
    finally:
        if progress is not None:
            print(file=sys.stderr)
    api = Api(index, trace, problems)
    if args.html is not None:
        from fasttrace.viewer._html import DEFAULT_BUDGET, export

        text = export(api, args.budget or DEFAULT_BUDGET)
        try:
            with open(args.html, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            return error(f"{args.html}: {e.strerror or e}")
        print(f"fasttrace: wrote {args.html} ({len(text.encode()) / 1e6:.1f} MB)",
              file=sys.stderr)
        return 0
    return _serve(api, args)


def _serve(api: "Any", args: argparse.Namespace) -> int:
    from fasttrace.viewer._server import make_server, url_of

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"fasttrace: warning: listening on {args.host}: anyone who can reach this port "
              "can read the trace", file=sys.stderr)
    try:
        server = make_server(api, args.host, args.port)
    except OSError as e:
        return error(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
    url = url_of(server)
    print(f"fasttrace: serving the viewer on {url} (Ctrl-C stops it)", flush=True)
    if not args.no_browser:
        try:
            webbrowser.open(url)
        except Exception:  # no browser here: the URL is printed
            pass
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _progress(trace: "Any") -> "Callable[[int], None]":
    total = max(int(trace.stats.events), 1)

    def show(n: int) -> None:
        print(f"\rfasttrace: indexing {n:,} of ~{total:,} events ({min(100, 100 * n // total)}%)",
              end="", file=sys.stderr, flush=True)

    return show

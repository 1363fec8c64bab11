"""Put first on PYTHONPATH by `fasttrace run --follow-children` (fasttrace/_children.py): every
Python started by the traced program imports this at start-up, as its sitecustomize.

It first runs the sitecustomize this one hides (if there is one: the next on sys.path, as
site would have found it), then, if FASTTRACE_FOLLOW holds a plan, starts this process's
capture.  Without the variable it does nothing more; a malformed one is one line on stderr.
Either way the program's sys.path is what it would be without fasttrace: this directory is
taken out of it (it stays on PYTHONPATH, for the program's own children).
"""

import os
import sys


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    mine = sys.modules.pop("sitecustomize", None)
    try:
        __import__("sitecustomize")  # the one this file hides
        return
    except ImportError as e:
        if e.name != "sitecustomize":  # found, and failed: as site reports it
            _report(e)
    except Exception as e:
        _report(e)
    if mine is not None:  # none other (or it failed): this one is the sitecustomize
        sys.modules["sitecustomize"] = mine


def _report(e: BaseException) -> None:
    sys.stderr.write("Error in sitecustomize; set PYTHONVERBOSE for traceback:\n"
                     f"{type(e).__name__}: {e}\n")


def _follow() -> None:
    if not os.environ.get("FASTTRACE_FOLLOW"):
        return
    try:
        from fasttrace import _children
    except Exception as e:  # another Python, without fasttrace: it runs untraced
        sys.stderr.write(f"fasttrace: cannot follow process {os.getpid()} ({sys.executable}): "
                         f"{type(e).__name__}: {e}\n")
        return
    _children.bootstrap()


_chain()
_follow()

"""fasttrace.http.asgi_app(): the endpoints as an ASGI application, to mount in Starlette or
FastAPI:

    app.mount("/debug/fasttrace", fasttrace.http.asgi_app())

A trace request sleeps on the event loop for its seconds (asyncio), so the program's requests
go on meanwhile; starting and stopping a capture, dumps and file reads run in a bare thread of
fasttrace's own, so the loop is never held for a file's write.  The event loop's thread is the
program's: its frames stay in the trace (the request's own coroutine is left out, as
fasttrace's code).  The ASGI server reports a client going away (http.disconnect), which
cancels the capture at once.
"""

from __future__ import annotations

import _thread
import asyncio

from fasttrace._capture import HIDDEN_CODES
from fasttrace.http import _endpoints
from fasttrace.http._endpoints import Config, HttpError, Job, Request, Response

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Awaitable, Callable, Dict, Optional

    Scope = Dict[str, Any]
    Receive = Callable[[], Awaitable[Dict[str, Any]]]
    Send = Callable[[Dict[str, Any]], Awaitable[None]]


class AsgiApp:
    """An ASGI application serving fasttrace's endpoints."""

    def __init__(self, config: Config) -> None:
        self.config = config

    async def __call__(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        if scope["type"] == "lifespan":  # served alone, as the whole application
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return  # a websocket: not ours to accept
        path = scope.get("path", "/")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        client = scope.get("client") or ("", 0)
        req = Request(scope.get("method", "GET"), path,
                      scope.get("query_string", b"").decode("latin-1"), headers, str(client[0]))
        answer = _endpoints.prepare(self.config, req)
        if isinstance(answer, Job):
            answer.client = req.client
            response = await _run(answer, receive)
            if response is None:
                return  # the client went away
        else:
            response = answer
        await _send(response, send, req.method == "HEAD")


async def _run(job: Job, receive: "Receive") -> Optional[Response]:
    try:
        # On the loop's thread, whose frames stay the program's (skip_caller_stack=False):
        # start() leaves out only fasttrace's own frames on top of them.
        job.begin(skip_caller_stack=False)
    except HttpError as e:
        return e.response()
    try:
        if job.kind != "flight" and await _client_gone(job.seconds, receive):
            await _blocking(job.cancel)
            return None
        return await _blocking(job.finish)  # type: ignore[no-any-return]
    except HttpError as e:
        return e.response()
    except BaseException:  # cancelled (the server shuts down): leave nothing running
        job.cancel()
        raise


async def _client_gone(seconds: float, receive: "Receive") -> bool:
    """Waits `seconds`; True as soon as the client disconnects."""
    async def disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(disconnect())
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
        return task in done
    finally:
        task.cancel()


async def _send(response: Response, send: "Send", head: bool) -> None:
    try:
        await send({"type": "http.response.start", "status": response.status,
                    "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                for k, v in response.headers]})
        if head or response.file is None:
            await send({"type": "http.response.body", "body": b"" if head else response.body})
            return
        read = response.file.read
        while True:
            block = await _blocking(lambda: read(_endpoints.BLOCK))
            await send({"type": "http.response.body", "body": block, "more_body": bool(block)})
            if not block:
                return
    finally:
        response.close()


async def _blocking(fn: "Callable[[], Any]") -> Any:
    """fn() in a bare thread of fasttrace's own (not the loop's executor, whose threads are
    the program's and would show in its traces)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    _thread.start_new_thread(_call, (loop, future, fn))
    return await future


def _call(loop: Any, future: Any, fn: "Callable[[], Any]") -> None:
    try:
        result, error = fn(), None
    except BaseException as e:
        result, error = None, e
    try:
        loop.call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:
        pass  # the loop closed meanwhile: nobody waits


def _settle(future: Any, result: Any, error: Optional[BaseException]) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


# The request's coroutine runs on the loop's thread, which is the program's: a sample taken
# while it runs (starting a capture, its wait ending) is fasttrace's work and is not kept.
HIDDEN_CODES.extend([_call.__code__, AsgiApp.__call__.__code__])

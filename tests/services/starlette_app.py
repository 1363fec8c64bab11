"""A Starlette service with fasttrace's endpoints mounted at /debug/fasttrace (ASGI)."""

import asyncio

import fasttrace.http
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


async def home(request):
    return PlainTextResponse(str(fib(18)))


async def slow(request):
    await asyncio.sleep(0.01)
    return PlainTextResponse("slow")


app = Starlette(routes=[Route("/", home), Route("/slow", slow),
                        Mount("/debug/fasttrace", app=fasttrace.http.asgi_app())])

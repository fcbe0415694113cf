"""The yardstick: a bare uvicorn + Starlette app answering the same text as
examples/hello.py, run the way Capstan's proxy runs (uvloop, httptools)."""

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hello(request):
    return PlainTextResponse("Hello from Capstan!\n")


app = Starlette(routes=[Route("/", hello)])

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )

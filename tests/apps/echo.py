"""Deployments for the replica worker's tests: a class with sync, async and
streaming methods, and plain functions."""

import asyncio
import os
import threading
import time


class Echo:
    def __init__(self, prefix: str = "", *, suffix: str = "") -> None:
        self.prefix = prefix
        self.suffix = suffix
        self.started = threading.Event()

    async def __call__(self, request):
        body = await request.body()
        return {
            "method": request.method,
            "path": request.url.path,
            "root_path": request.scope["root_path"],
            "query": dict(request.query_params),
            "headers": {k: v for k, v in request.headers.items() if k.startswith("x-")},
            "body": body.decode(),
            "client": list(request.client) if request.client else None,
        }

    def hello(self, name: str) -> str:
        return f"{self.prefix}hello {name}{self.suffix}"

    async def ahello(self, name: str) -> str:
        await asyncio.sleep(0)
        return f"{self.prefix}ahello {name}{self.suffix}"

    async def sleep(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    def block(self, seconds: float) -> str:
        time.sleep(seconds)
        return threading.current_thread().name

    def count(self, n: int):
        yield from range(n)

    async def acount(self, n: int):
        for i in range(n):
            await asyncio.sleep(0)
            yield {"i": i}

    def fail(self) -> None:
        raise ValueError("boom")

    def unserialisable(self) -> object:
        return object()

    def environment(self, name: str) -> str | None:
        return os.environ.get(name)

    def pid(self) -> int:
        return os.getpid()

    def _private(self) -> str:
        return "secret"


def shout(text: str = "") -> str:
    return text.upper()


async def http_function(request):
    return f"{request.method} {request.url.path}"


class _Wrapper:
    """What `@serve.deployment` returns: the class it holds in `func_or_class`."""

    func_or_class = "tests.apps.echo:Echo"


wrapped = _Wrapper()

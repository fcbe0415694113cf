"""Class-based ASGI ingress: the app a class carries in `__capstan_asgi_app__`.

Two jobs, done once the instance exists:
- FastAPI routes written as methods of the class (`@app.get("/") def
  root(self)`) are rebuilt so that FastAPI fills `self` with the replica's
  instance (taken from the scope's `"capstan.instance"`) instead of reading
  it from the query string, as Ray Serve's class-based views do.
- The app's lifespan (startup and shutdown handlers) runs, as a server
  would run it; the state it sets reaches each request's `request.state`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

log = logging.getLogger("capstan.replica")

_BOUND_MARK = "__capstan_bound__"
_SHUTDOWN_TIMEOUT_S = 10.0


def bind_methods(app: Any, cls: type) -> None:
    """Makes FastAPI routes defined as methods of `cls` receive the instance
    as `self`. Other apps are left alone. Idempotent."""
    if not type(app).__module__.startswith("fastapi"):
        return
    from fastapi.routing import APIRoute  # deferred: only FastAPI ingresses need it

    methods = {id(value) for klass in cls.__mro__ for value in vars(klass).values()}
    routes = app.router.routes
    for index, route in enumerate(routes):
        if type(route) is APIRoute and id(route.endpoint) in methods:
            _take_self_from_scope(route.endpoint)
            routes[index] = _rebuilt(route)


def _take_self_from_scope(endpoint: Any) -> None:
    if getattr(endpoint, _BOUND_MARK, False):
        return
    from fastapi import Depends

    signature = inspect.signature(endpoint)
    first, *rest = signature.parameters.values()
    parameters = [
        first.replace(default=Depends(_instance_getter())),
        # After a parameter with a default, the others must be keyword-only.
        *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in rest),
    ]
    endpoint.__signature__ = signature.replace(parameters=parameters)
    setattr(endpoint, _BOUND_MARK, True)


def _instance_getter() -> Any:
    from starlette.requests import Request

    def instance(request: Any) -> Any:
        return request.scope["capstan.instance"]

    # A real class, not the string that postponed annotations would leave.
    request = inspect.Parameter(
        "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request
    )
    instance.__signature__ = inspect.Signature([request])  # type: ignore[attr-defined]
    return instance


def _rebuilt(route: Any) -> Any:
    # Constructing the route again makes FastAPI re-read the endpoint's
    # signature; every constructor argument is kept as an attribute.
    names = list(inspect.signature(type(route).__init__).parameters)[1:]
    settings = {name: getattr(route, name) for name in names if hasattr(route, name)}
    return type(route)(**settings)


class Lifespan:
    """Runs an ASGI app's lifespan protocol. An app that does not speak it
    (raises at once, as the spec allows) is simply served without it."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self.state: dict[str, Any] = {}
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        """Runs the app's startup. Raises `RuntimeError` with the app's
        message when startup fails."""
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self._task = asyncio.get_running_loop().create_task(
            self._app(scope, self._to_app.get, self._from_app.put)
        )
        self._to_app.put_nowait({"type": "lifespan.startup"})
        reply = await self._reply()
        if reply is None:
            self._task = None
        elif reply["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"the app's startup failed: {reply.get('message', '')}")

    async def shutdown(self) -> None:
        """Runs the app's shutdown handlers, if startup ran."""
        if self._task is None:
            return
        self._to_app.put_nowait({"type": "lifespan.shutdown"})
        try:
            async with asyncio.timeout(_SHUTDOWN_TIMEOUT_S):
                reply = await self._reply()
        except TimeoutError:
            reply = None
        if reply is not None and reply["type"] == "lifespan.shutdown.failed":
            log.error("the app's shutdown failed: %s", reply.get("message", ""))
        self._task.cancel()
        await asyncio.wait([self._task])

    async def _reply(self) -> dict[str, Any] | None:
        """The app's next message, or None once its lifespan task is over."""
        assert self._task is not None
        getting = asyncio.ensure_future(self._from_app.get())
        await asyncio.wait([getting, self._task], return_when=asyncio.FIRST_COMPLETED)
        if getting.done():
            return getting.result()
        getting.cancel()
        if not self._task.cancelled() and (error := self._task.exception()) is not None:
            log.info("the app does not run a lifespan (%s: %s)", type(error).__name__, error)
        return None

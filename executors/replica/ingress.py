"""Class-based ASGI ingress: the app a class carries in `__capstan_asgi_app__`.

Two jobs, done once the instance exists:
- FastAPI routes written as methods of the class and not yet bound to the
  instance are bound (`bind_methods`, from capstan.fastapi_views, which
  `serve.ingress` uses where the class is defined).
- The app's lifespan (startup and shutdown handlers) runs, as a server
  would run it; the state it sets reaches each request's `request.state`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from capstan.fastapi_views import bind_methods

__all__ = ["Lifespan", "bind_methods"]

log = logging.getLogger("capstan.replica")

_SHUTDOWN_TIMEOUT_S = 10.0


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

"""The replica's state: the user's code, its config, and its load.

Exchange streams share one `Worker`; they update `ongoing` and `total`
directly (they run on the same loop), and the control RPCs go through the
methods here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

from capstan import defaults
from capstan.errors import InvalidSpec, NotFound, Unavailable
from capstan.internal.v1 import replica_pb2
from executors.replica.description import public_methods
from executors.replica.invoker import Invoker, Target
from executors.replica.loader import UserCode

log = logging.getLogger("capstan.replica")


class Worker:
    """One replica: admission state, counters, and the user's hooks."""

    def __init__(self, config: replica_pb2.ReplicaConfig, user: UserCode) -> None:
        spec = config.deployment
        self.config = config
        self.user = user
        self.max_concurrent_queries = (
            spec.max_concurrent_queries
            if spec.HasField("max_concurrent_queries")
            else defaults.MAX_CONCURRENT_QUERIES
        )
        self.invoker = Invoker(self.max_concurrent_queries)
        self.ongoing = 0
        self.total = 0
        self.draining = False
        # Set whenever `ongoing` reaches zero while draining.
        self.idle = asyncio.Event()
        self.user_config: str | None = None
        # What the ingress app's lifespan startup put in its state.
        self.asgi_state: dict[str, Any] = {}
        self._targets: dict[str, Target] = {}

    def target(self, method: str) -> Target:
        """The user callable for `method` ("__call__" for HTTP and for a
        function deployment). Raises `NotFound` listing the public methods."""
        target = self._targets.get(method)
        if target is None:
            target = self._targets[method] = self._find(method)
        return target

    def _find(self, method: str) -> Target:
        user = self.user
        if user.is_function:
            if method == "__call__":
                return Target.of(user.name, user.target)
            raise NotFound(
                f"{user.name} is a function: call it without a method name, not {method!r}"
            )
        fn = getattr(user.target, method, None) if self._is_public(method) else None
        if not callable(fn):
            methods = ", ".join(self.public_methods()) or "none"
            raise NotFound(f"{user.name} has no method {method!r}; its methods: {methods}")
        return Target.of(f"{user.name}.{method}", fn)

    @staticmethod
    def _is_public(method: str) -> bool:
        return method == "__call__" or not method.startswith("_")

    def public_methods(self) -> list[str]:
        return [name for name, _ in public_methods(type(self.user.target))]

    async def reconfigure(
        self, user_config: str | None, max_concurrent_queries: int | None
    ) -> None:
        """Applies what is set. Raises `InvalidSpec` when the config is not
        JSON or the user's reconfigure() raises; the old config then stays."""
        if max_concurrent_queries is not None and max_concurrent_queries < 1:
            raise InvalidSpec(
                f"max_concurrent_queries must be at least 1, got {max_concurrent_queries}"
            )
        if user_config is not None:
            await self._apply_user_config(user_config)
        if (
            max_concurrent_queries is not None
            and max_concurrent_queries != self.max_concurrent_queries
        ):
            self.max_concurrent_queries = max_concurrent_queries
            self.invoker.resize(max_concurrent_queries)

    async def _apply_user_config(self, text: str) -> None:
        try:
            value = json.loads(text)
        except ValueError as error:
            raise InvalidSpec(f"user_config is not valid JSON: {error}") from error
        hook = getattr(self.user.target, "reconfigure", None)
        if self.user.is_function or not callable(hook):
            raise InvalidSpec(
                f"user_config is set but {self.user.name} has no reconfigure() method"
            )
        try:
            await self.invoker.run(hook, value)
        except Exception as error:
            log.exception("reconfigure raised; restoring the previous user_config")
            await self._restore(hook)
            raise InvalidSpec(f"reconfigure raised {type(error).__name__}: {error}") from error
        self.user_config = text

    async def _restore(self, hook: Any) -> None:
        # The failed call may have changed some state before it raised;
        # applying the previous config again undoes that.
        if self.user_config is None:
            return
        try:
            await self.invoker.run(hook, json.loads(self.user_config))
        except Exception:
            log.exception("reconfigure raised again while restoring the previous user_config")

    async def check_health(self) -> None:
        """Runs the user's check_health(), if any. Raises `Unavailable`."""
        hook = None if self.user.is_function else getattr(self.user.target, "check_health", None)
        if not callable(hook):
            return
        try:
            await self.invoker.run(hook)
        except Exception as error:
            raise Unavailable(f"check_health raised {type(error).__name__}: {error}") from error

    async def drain(self, timeout_s: float) -> int:
        """Stops admitting requests and waits up to `timeout_s` for the
        ones in flight. Returns how many are still running."""
        self.draining = True
        if self.ongoing and timeout_s > 0:
            self.idle.clear()
            try:
                async with asyncio.timeout(timeout_s):
                    await self.idle.wait()
            except TimeoutError:
                pass
        return self.ongoing

    def stats(self) -> replica_pb2.GetStatsResponse:
        config = self.config
        return replica_pb2.GetStatsResponse(
            replica_id=config.replica_id,
            deployment=config.deployment.name,
            version=config.version,
            nonce=config.nonce,
            pid=os.getpid(),
            ongoing_requests=self.ongoing,
            total_requests=self.total,
            draining=self.draining,
        )

"""`serve.run(app, _local_testing_mode=True)`: the graph runs in this process,
with no control plane, proxy or replica processes, so unit tests of an app's
logic are fast and need nothing running (as Ray Serve's local testing mode).

Each bound deployment is constructed once, dependencies first; handles call
its methods directly on one background event loop (sync methods in a thread),
and return the same `DeploymentResponse` types as real handles. HTTP is not
served in this mode.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator
from typing import Any

from capstan.build import nodes, replace_bound, unique_names
from capstan.context import ReplicaID, set_replica_context, set_servable_object
from capstan.deployment import Application
from capstan.handle import DeploymentResponse, DeploymentResponseGenerator


class _Loop:
    """One daemon thread running the event loop every local call uses."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="capstan-local", daemon=True).start()

    def submit(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine) -> Any:
        return self.submit(coroutine).result()


_loop: _Loop | None = None


def _shared_loop() -> _Loop:
    global _loop
    if _loop is None:
        _loop = _Loop()
    return _loop


class LocalHandle:
    """A handle whose calls run on an object in this process."""

    def __init__(self, name: str, target: Any, method_name: str = "__call__", stream: bool = False):
        self.deployment_name = name
        self._target = target
        self.method_name = method_name
        self.stream = stream

    def options(self, *, method_name: str | None = None, stream: bool | None = None, **_: Any):
        return LocalHandle(
            self.deployment_name,
            self._target,
            self.method_name if method_name is None else method_name,
            self.stream if stream is None else stream,
        )

    def __getattr__(self, name: str) -> LocalHandle:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.options(method_name=name)

    def remote(self, *args: Any, **kwargs: Any):
        loop = _shared_loop()
        fn = _method(self._target, self.method_name)
        if self.stream:
            return DeploymentResponseGenerator(_items(fn, args, kwargs), loop)
        return DeploymentResponse(loop.submit(_call(fn, args, kwargs)))


def _method(target: Any, name: str) -> Any:
    if inspect.isfunction(target):
        return target
    fn = getattr(target, name, None)
    if fn is None or (name.startswith("_") and name != "__call__"):
        raise AttributeError(f"{type(target).__name__} has no method {name!r}")
    return fn


async def _arguments(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    async def resolved(value: Any) -> Any:
        return await value if isinstance(value, DeploymentResponse) else value

    return (
        tuple([await resolved(a) for a in args]),
        {k: await resolved(v) for k, v in kwargs.items()},
    )


async def _call(fn: Any, args: tuple, kwargs: dict) -> Any:
    args, kwargs = await _arguments(args, kwargs)
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    result = await asyncio.to_thread(fn, *args, **kwargs)
    return await result if inspect.isawaitable(result) else result


async def _items(fn: Any, args: tuple, kwargs: dict) -> AsyncIterator[Any]:
    args, kwargs = await _arguments(args, kwargs)
    result = fn(*args, **kwargs)
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    else:
        for item in result:
            yield item


def run_locally(app: Application, name: str) -> LocalHandle:
    """Constructs every deployment of `app` here and returns the ingress's handle."""
    names = unique_names(app)
    handles: dict[int, LocalHandle] = {}
    for node in nodes(app):
        deployment_name = names[id(node)]
        args = replace_bound(node.args, lambda bound: handles[id(bound)])
        kwargs = replace_bound(node.kwargs, lambda bound: handles[id(bound)])
        user = node.deployment.func_or_class
        set_replica_context(ReplicaID(f"{deployment_name}-local", deployment_name, name))
        config = node.deployment.user_config
        target = user if inspect.isfunction(user) else _construct(user, args, kwargs, config)
        set_servable_object(target)
        handles[id(node)] = LocalHandle(deployment_name, target)
    return handles[id(app)]


def _construct(cls: type, args: Any, kwargs: Any, user_config: Any) -> Any:
    instance = cls(*args, **kwargs)
    if user_config is not None:
        _shared_loop().run(_call(instance.reconfigure, (user_config,), {}))
    return instance

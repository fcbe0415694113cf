"""Handles: call a deployment from Python, routed in-process by the same
least-loaded Router the HTTP proxy uses (no hop through the proxy).

`handle.remote(*args)` returns a `DeploymentResponse` at once; `.result()`
blocks for the value, and `await response` works inside async code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Iterator
from typing import Any

import cloudpickle

from capstan.errors import DeadlineExceeded


class DeploymentResponse:
    """The pending result of one call. Await it, or call `.result()`."""

    def __init__(self, future: concurrent.futures.Future) -> None:
        self._future = future

    def result(self, timeout_s: float | None = None) -> Any:
        """Blocks until the call finishes and returns its value, or raises
        what the call raised (user exceptions as capstan.UserCodeError)."""
        try:
            return self._future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise DeadlineExceeded(f"no result within {timeout_s} s") from None

    def cancel(self) -> bool:
        """Cancels the call; the replica is told to stop working on it."""
        return self._future.cancel()

    def __await__(self):
        return asyncio.wrap_future(self._future).__await__()


class DeploymentResponseGenerator:
    """The items of a call whose method returns a generator (`stream=True`).
    Iterate it with `for` or `async for`."""

    def __init__(self, items: AsyncIterator[Any], runtime) -> None:
        self._items = items
        self._runtime = runtime

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self._runtime.run(self._items.__anext__())
            except StopAsyncIteration:
                return

    async def __aiter__(self) -> AsyncIterator[Any]:
        while True:
            try:
                yield await asyncio.wrap_future(self._runtime.submit(self._items.__anext__()))
            except StopAsyncIteration:
                return


class DeploymentHandle:
    """Calls one deployment's methods. Cheap to create, safe to share between
    threads, and picklable, so handles may be passed to other deployments.

    A deployment of an application is addressed as "<app_name>.<name>"; one
    deployed on its own (`Deployment.deploy()`) by its name alone."""

    def __init__(
        self,
        deployment_name: str,
        method_name: str = "__call__",
        *,
        stream: bool = False,
        app_name: str = "",
        multiplexed_model_id: str = "",
    ) -> None:
        self.deployment_name = deployment_name
        self.app_name = app_name
        self.method_name = method_name
        self.stream = stream
        self.multiplexed_model_id = multiplexed_model_id
        self._target = f"{app_name}.{deployment_name}" if app_name else deployment_name

    def options(
        self,
        *,
        method_name: str | None = None,
        stream: bool | None = None,
        multiplexed_model_id: str | None = None,
        use_new_handle_api: bool = True,  # Ray 2.x's migration flag; always new here
    ) -> DeploymentHandle:
        """A handle with some options changed."""
        model = self.multiplexed_model_id if multiplexed_model_id is None else multiplexed_model_id
        return DeploymentHandle(
            self.deployment_name,
            self.method_name if method_name is None else method_name,
            stream=self.stream if stream is None else stream,
            app_name=self.app_name,
            multiplexed_model_id=model,
        )

    def __getattr__(self, name: str) -> DeploymentHandle:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.options(method_name=name)

    def remote(self, *args: Any, **kwargs: Any) -> DeploymentResponse | DeploymentResponseGenerator:
        """Sends a call to the least-loaded replica and returns at once."""
        from capstan.runtime import get_runtime

        runtime = get_runtime()
        if _has_responses(args, kwargs):  # resolved first, as Ray Serve does
            if self.stream:
                items = self._stream_resolved(runtime, args, kwargs)
                return DeploymentResponseGenerator(items, runtime)
            return DeploymentResponse(runtime.submit(self._call_resolved(runtime, args, kwargs)))
        invocation = _invocation(self.method_name, args, kwargs, self.multiplexed_model_id)
        if self.stream:
            return DeploymentResponseGenerator(runtime.stream(self._target, invocation), runtime)
        return DeploymentResponse(runtime.submit(runtime.call(self._target, invocation)))

    async def _call_resolved(self, runtime, args: tuple, kwargs: dict) -> Any:
        invocation = await _resolved_invocation(self, args, kwargs)
        return await runtime.call(self._target, invocation)

    async def _stream_resolved(self, runtime, args: tuple, kwargs: dict) -> AsyncIterator[Any]:
        invocation = await _resolved_invocation(self, args, kwargs)
        async for item in runtime.stream(self._target, invocation):
            yield item

    def __reduce__(self):
        state = (self.deployment_name, self.method_name, self.stream, self.app_name,
                 self.multiplexed_model_id)  # fmt: skip
        return (_rebuild_handle, state)

    def __repr__(self) -> str:
        app = f"app={self.app_name!r}, " if self.app_name else ""
        return (
            f"DeploymentHandle({app}deployment={self.deployment_name!r}, "
            f"method={self.method_name!r})"
        )


def _rebuild_handle(
    name: str, method: str, stream: bool, app_name: str = "", model_id: str = ""
) -> DeploymentHandle:
    return DeploymentHandle(
        name, method, stream=stream, app_name=app_name, multiplexed_model_id=model_id
    )


def _has_responses(args: tuple, kwargs: dict) -> bool:
    values = (*args, *kwargs.values())
    return any(isinstance(v, DeploymentResponse) for v in values)


async def _resolved_invocation(handle: DeploymentHandle, args: tuple, kwargs: dict) -> Any:
    async def resolved(value: Any) -> Any:
        return await value if isinstance(value, DeploymentResponse) else value

    args = tuple([await resolved(a) for a in args])
    kwargs = {k: await resolved(v) for k, v in kwargs.items()}
    return _invocation(handle.method_name, args, kwargs, handle.multiplexed_model_id)


def _invocation(method: str, args: tuple, kwargs: dict, model_id: str = "") -> Any:
    from capstan.internal.v1 import replica_pb2

    return replica_pb2.Invocation(
        method_name=method,
        multiplexed_model_id=model_id,
        arguments=replica_pb2.EncodedArguments(
            encoding=replica_pb2.ENCODING_PICKLE,
            args=cloudpickle.dumps(args) if args else b"",
            kwargs=cloudpickle.dumps(kwargs) if kwargs else b"",
        ),
        result_encoding=replica_pb2.ENCODING_PICKLE,
    )

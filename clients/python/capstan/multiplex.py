"""Model multiplexing, as Ray Serve's `@serve.multiplexed`: a replica keeps up
to N models loaded, least recently used first out, and tells routers which
it holds so that a request for a loaded model goes where it is warm.

    @serve.multiplexed(max_num_models_per_replica=3)
    async def get_model(self, model_id: str):
        return load(model_id)

    async def __call__(self, request):
        model = await self.get_model(serve.get_multiplexed_model_id())
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from capstan.context import set_loaded_models


class ModelCache:
    """One replica's loaded models. Concurrent requests for a model that is
    loading wait for the same load; an evicted model's `__del__`, when it is
    a coroutine function, is awaited so it can free what it holds."""

    def __init__(self, max_models: int) -> None:
        self.max_models = max_models
        self._models: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._loading: dict[str, asyncio.Future[Any]] = {}
        self.loads = 0

    async def get(self, model_id: str, load: Callable[[], Awaitable[Any]]) -> Any:
        if model_id in self._models:
            self._models.move_to_end(model_id)
            return self._models[model_id]
        if model_id in self._loading:
            return await asyncio.shield(self._loading[model_id])
        future = asyncio.get_running_loop().create_future()
        self._loading[model_id] = future
        try:
            while len(self._models) >= self.max_models:
                await self._unload(*self._models.popitem(last=False))
            self.loads += 1
            model = await load()
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters, if any, get it too
            raise
        finally:
            del self._loading[model_id]
        self._models[model_id] = model
        future.set_result(model)
        set_loaded_models(tuple(self._models))
        return model

    async def _unload(self, model_id: str, model: Any) -> None:
        set_loaded_models(tuple(self._models))
        release = getattr(type(model), "__del__", None)
        if release is not None and inspect.iscoroutinefunction(release):
            await release(model)


_FUNCTION_CACHES: dict[str, ModelCache] = {}


def multiplexed(
    func: Callable[..., Awaitable[Any]] | None = None, *, max_num_models_per_replica: int = 3
) -> Any:
    """Marks an async model loader `(self, model_id)` or `(model_id)`; calls
    go through a per-replica LRU of `max_num_models_per_replica` models."""
    if not isinstance(max_num_models_per_replica, int) or max_num_models_per_replica < 1:
        raise ValueError(
            f"max_num_models_per_replica must be a positive int, got {max_num_models_per_replica!r}"
        )

    def decorate(load: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        if not inspect.iscoroutinefunction(load):
            raise TypeError(f"@serve.multiplexed needs an async function; {load.__name__} is not")
        # Caches live on the instance (or in this module, for a function), never
        # in this closure: the class is pickled to reach its replicas.
        attribute = f"_capstan_models_{load.__name__}"

        @functools.wraps(load)
        async def loader(*args: Any) -> Any:
            if len(args) == 2:  # a method: one cache per instance
                owner, model_id = args
                cache = owner.__dict__.get(attribute)
                if cache is None:
                    cache = owner.__dict__[attribute] = ModelCache(max_num_models_per_replica)
            elif len(args) == 1:
                (model_id,) = args
                key = f"{load.__module__}.{load.__qualname__}"
                cache = _FUNCTION_CACHES.setdefault(key, ModelCache(max_num_models_per_replica))
            else:
                raise TypeError(f"{load.__name__} takes the model id as its only argument")
            if not isinstance(model_id, str) or not model_id:
                raise ValueError(f"the model id must be a non-empty string, got {model_id!r}")
            return await cache.get(model_id, lambda: load(*args))

        return loader

    return decorate(func) if func is not None else decorate

"""FastAPI class-based views: routes written as methods of an ingress class
(`@app.get("/") def root(self)`) are rebuilt so that FastAPI fills `self`
with the replica's instance, taken from the ASGI scope's `"capstan.instance"`,
instead of reading it from the query string, as Ray Serve's do.

`serve.ingress` binds them where the class is defined, so FastAPI reads the
endpoints' annotations (strings, under `from __future__ import annotations`)
against their real module; a class shipped by value carries its routes
already bound. The replica binds what arrived unbound (an app attached
without `serve.ingress`). It imports FastAPI only when the app is one.
"""

from __future__ import annotations

import inspect
from typing import Any

_BOUND_MARK = "__capstan_bound__"


def bind_methods(app: Any, cls: type) -> None:
    """Makes FastAPI routes defined as methods of `cls` receive the instance
    as `self`. Other apps are left alone. Idempotent."""
    if not type(app).__module__.startswith("fastapi"):
        return
    # Deferred: only FastAPI ingresses need it.
    from fastapi.routing import APIRoute, APIWebSocketRoute

    methods = {id(value) for klass in cls.__mro__ for value in vars(klass).values()}
    routes = app.router.routes
    for index, route in enumerate(routes):
        endpoint = getattr(route, "endpoint", None)
        is_api_route = type(route) in (APIRoute, APIWebSocketRoute)
        if is_api_route and id(endpoint) in methods and not _is_bound(endpoint):
            _take_self_from_scope(endpoint)
            routes[index] = _rebuilt(route)


def _is_bound(endpoint: Any) -> bool:
    return getattr(endpoint, _BOUND_MARK, False)


def _take_self_from_scope(endpoint: Any) -> None:
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
    # HTTPConnection, not Request: FastAPI passes it to WebSocket routes too.
    from starlette.requests import HTTPConnection

    def instance(request: Any) -> Any:
        return request.scope["capstan.instance"]

    # A real class, not the string that postponed annotations would leave.
    request = inspect.Parameter(
        "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=HTTPConnection
    )
    instance.__signature__ = inspect.Signature([request])  # type: ignore[attr-defined]
    return instance


def _rebuilt(route: Any) -> Any:
    # Constructing the route again makes FastAPI re-read the endpoint's
    # signature; every constructor argument is kept as an attribute.
    names = list(inspect.signature(type(route).__init__).parameters)[1:]
    settings = {name: getattr(route, name) for name in names if hasattr(route, name)}
    return type(route)(**settings)

"""What a loaded deployment answers, for ReplicaService.Describe.

A pure function of the loaded object. A class lists its public methods
(names not starting with "_") and `__call__` when it defines one; a function
is one `__call__`. Each name is looked up on the class before the instance,
so a property is never run to learn what it is. Parameters are named as
Python spells them, `*args` and `**kwargs` with their stars.

Whether a method streams is read from what it is, not from a call: it
streams when it, or any function it wraps (`__wrapped__`, which
`functools.wraps` sets, as `serve.batch` and `serve.multiplexed` do), is a
generator or async generator function. A plain function that returns a
generator is described as not streaming, though the worker streams what it
returns.

An ASGI ingress answers HTTP: its routes are not methods, so the class's
methods that are route endpoints are left out, and an app served by itself
lists none.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from capstan.internal.v1 import replica_pb2
from capstan.v1 import deployment_pb2
from executors.replica.loader import UserCode

_CALL = "__call__"
_STARS = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}


def describe(user: UserCode) -> replica_pb2.DescribeResponse:
    """The methods `user` answers, by name, and whether it serves HTTP."""
    serves_http = user.asgi_app is not None
    if user.is_function:
        methods = [describe_method(_CALL, user.target)]
    elif user.asgi_app is user.target:  # an app named directly: only HTTP
        methods = []
    else:
        routes = _route_endpoints(user.asgi_app) if serves_http else set()
        methods = [
            describe_method(name, getattr(user.target, name))
            for name, attribute in public_methods(type(user.target))
            if id(attribute) not in routes
        ]
    return replica_pb2.DescribeResponse(callable_methods=methods, serves_http=serves_http)


def describe_method(name: str, fn: Callable[..., Any]) -> deployment_pb2.MethodDescription:
    """One method, as callers reach it (bound: without `self`)."""
    return deployment_pb2.MethodDescription(
        name=name,
        is_streaming=is_streaming(fn),
        parameters=_parameters(fn),
        summary=_summary(fn),
    )


def is_streaming(fn: Callable[..., Any]) -> bool:
    """Whether `fn`, or a function it wraps, is a generator or async generator."""
    return any(
        inspect.isgeneratorfunction(layer) or inspect.isasyncgenfunction(layer)
        for layer in _layers(fn)
    )


def _layers(fn: Any) -> Iterator[Any]:
    """`fn` (unbound), then each function it wraps; stops at a cycle."""
    seen: set[int] = set()
    fn = getattr(fn, "__func__", fn)
    while fn is not None and id(fn) not in seen:
        seen.add(id(fn))
        yield fn
        fn = getattr(fn, "__wrapped__", None)


def public_methods(cls: type) -> Iterator[tuple[str, Any]]:
    """(name, the class's own attribute) for each public method, by name.
    Read statically: a property is never run, and a route endpoint is the
    very function the class holds."""
    for name in dir(cls):
        if name.startswith("_") and name != _CALL:
            continue
        attribute = inspect.getattr_static(cls, name)
        if isinstance(attribute, (staticmethod, classmethod)):
            attribute = attribute.__func__
        # Nested classes are callable but are not methods; properties are not callable.
        if callable(attribute) and not inspect.isclass(attribute):
            yield name, attribute


def _parameters(fn: Callable[..., Any]) -> list[str]:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return []
    return [_STARS.get(p.kind, "") + p.name for p in parameters]


def _summary(fn: Callable[..., Any]) -> str:
    # Its own docstring only: inspect.getdoc would borrow one from a base
    # class (even type.__call__'s "Call self as a function.").
    doc = inspect.cleandoc(getattr(fn, "__doc__", None) or "")
    return doc.partition("\n")[0].strip()


def _route_endpoints(app: Any) -> set[int]:
    """Ids of the functions the app's routes call (FastAPI and Starlette
    routes carry `endpoint`); empty for an ASGI callable without routes."""
    routes = getattr(app, "routes", None) or []
    return {id(getattr(route, "endpoint", None)) for route in routes}

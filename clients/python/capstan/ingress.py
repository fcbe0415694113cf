"""`serve.ingress`: a deployment class that answers HTTP with an ASGI app
(FastAPI, Starlette, any ASGI 3 callable), or with the app a builder
function returns on each replica (the factory pattern).

The contract with the replica worker (executors/replica/loader.py): the
class carries the app in `__capstan_asgi_app__`, or the builder in
`__capstan_asgi_builder__`, which the replica calls once the instance exists.
"""

from __future__ import annotations

import copyreg
import inspect
from collections.abc import Callable
from typing import Any

# Imported for its side effect as much as for State: Ray Serve imports
# starlette.requests, and ported apps use `starlette.requests.Request`
# after a bare `import starlette`.
import starlette.requests  # noqa: F401
from starlette.datastructures import State

from capstan.fastapi_views import bind_methods

ASGI_APP_ATTRIBUTE = "__capstan_asgi_app__"
ASGI_BUILDER_ATTRIBUTE = "__capstan_asgi_builder__"


def _reduce_state(state: State) -> tuple[type[State], tuple[dict[str, Any]]]:
    return State, (state._state,)


# A FastAPI app holds a starlette `State`, whose `__getattr__` reads its own
# `_state` and so recurses for ever when pickle probes a half-built one for
# `__setstate__`. Classes shipped by value carry their app, so State is
# pickled as the dict it wraps (Ray Serve registers the same reducer).
copyreg.pickle(State, _reduce_state)


def ingress(app: Any) -> Callable[..., type]:
    """Serves a FastAPI or Starlette app from a deployment class: HTTP
    requests go to the app as ASGI, its routes' `self` bound to the replica's
    instance. `app` may also be a function that returns the app, called on
    each replica after the class is constructed. `serve.ingress(app)()`,
    without a class, makes a deployment class that only serves the app."""

    def decorate(cls: type | None = None) -> type:
        if cls is None:
            cls = _app_only_class()
        if not inspect.isclass(cls):
            raise TypeError(f"@serve.ingress decorates a class, not {cls!r}")
        if inspect.isfunction(app):
            setattr(cls, ASGI_BUILDER_ATTRIBUTE, staticmethod(app))
        else:
            bind_methods(app, cls)
            setattr(cls, ASGI_APP_ATTRIBUTE, app)
        return cls

    return decorate


def _app_only_class() -> type:
    class ASGIIngressDeployment:
        """Serves only its app; keeps its constructor arguments, as Ray's does."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.args, self.kwargs = args, kwargs

    return ASGIIngressDeployment

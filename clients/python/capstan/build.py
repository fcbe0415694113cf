"""Turns a bound graph (`Ingress.bind(Model.bind(...))`) into an application
spec, as Ray Serve 2.x builds one: every bound deployment once, under a name
unique in the application (`Model`, `Model_1`, ...), with bound deployments
among the constructor arguments replaced by handles to them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from capstan import options as opts
from capstan.deployment import Application, Deployment
from capstan.handle import DeploymentHandle
from capstan.v1 import controlplane_pb2


def build(
    app: Application,
    name: str,
    route_prefix: Any = opts.DEFAULT,
    adjust: Callable[[str, Deployment], Deployment] | None = None,
) -> controlplane_pb2.ApplicationSpec:
    """The ApplicationSpec for `app` (the ingress) and everything it binds.

    `route_prefix` DEFAULT takes the ingress deployment's own route_prefix
    when it set one, else "/"; None keeps the application off HTTP.
    `adjust(name, deployment)` may return the deployment with options
    changed (a config file's overrides)."""
    names = unique_names(app)
    spec = controlplane_pb2.ApplicationSpec(name=name, ingress=names[id(app)])
    spec.route_prefix = _route_prefix(app, route_prefix) or ""  # "": not on HTTP

    def handle_for(bound: Application) -> DeploymentHandle:
        return DeploymentHandle(names[id(bound)], app_name=name)

    for node in nodes(app):
        args = replace_bound(node.args, handle_for)
        kwargs = replace_bound(node.kwargs, handle_for)
        deployment = node.deployment.options(
            name=names[id(node)], init_args=args, init_kwargs=kwargs
        )
        if adjust is not None:
            deployment = adjust(names[id(node)], deployment)
        spec.deployments.append(deployment.to_spec())
    return spec


def _route_prefix(app: Application, route_prefix: Any) -> str | None:
    if route_prefix is not opts.DEFAULT:
        return route_prefix
    own = app.deployment.explicit_route_prefix
    return "/" if own is opts.DEFAULT else own


def nodes(app: Application) -> list[Application]:
    """Every bound deployment reachable from `app`, dependencies first, once."""
    seen: dict[int, Application] = {}

    def visit(node: Application) -> None:
        if id(node) in seen:
            return
        for child in _children(node.args) + _children(node.kwargs):
            visit(child)
        seen[id(node)] = node

    visit(app)
    return list(seen.values())


def _children(value: Any) -> list[Application]:
    if isinstance(value, Application):
        return [value]
    if isinstance(value, list | tuple):
        return [c for item in value for c in _children(item)]
    if isinstance(value, dict):
        return [c for item in value.values() for c in _children(item)]
    return []


def unique_names(app: Application) -> dict[int, str]:
    names: dict[int, str] = {}
    taken: set[str] = set()
    for node in nodes(app):
        base = candidate = node.deployment.name
        suffix = 0
        while candidate in taken:
            suffix += 1
            candidate = f"{base}_{suffix}"
        taken.add(candidate)
        names[id(node)] = candidate
    return names


def replace_bound(value: Any, handle_for: Callable[[Application], DeploymentHandle]) -> Any:
    if isinstance(value, Application):
        return handle_for(value)
    if isinstance(value, list):
        return [replace_bound(item, handle_for) for item in value]
    if isinstance(value, tuple):
        return tuple(replace_bound(item, handle_for) for item in value)
    if isinstance(value, dict):
        return {key: replace_bound(item, handle_for) for key, item in value.items()}
    return value

"""What `capstan run TARGET [key=value ...]` deploys, found as Ray Serve's
`serve run` finds it: `module:attribute` naming a bound application, a
deployment (bound with no arguments) or an app builder (a function taking
the key=value arguments as a dict and returning an application); or a script,
run as __main__, that deploys by itself or leaves an application in `app`."""

from __future__ import annotations

import importlib
import os
import runpy
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from capstan.deployment import Application, Deployment
from capstan.errors import InvalidSpec


def parse_arguments(pairs: Sequence[str]) -> dict[str, str]:
    """`["k=v", ...]` as a dict; a pair without "=" is an error naming it."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidSpec(f"application argument {pair!r} must look like key=value")
        result[key] = value
    return result


def load_target(target: str, arguments: Mapping[str, str]) -> Application | None:
    """The application to deploy, or None when a script deployed by itself."""
    if os.getcwd() not in sys.path:  # `capstan run app:graph` from the app's folder
        sys.path.insert(0, os.getcwd())
    if target.endswith(".py"):
        return _from_script(target)
    module_name, _, attribute = target.partition(":")
    if not attribute:
        raise InvalidSpec(f"target {target!r} must be path/to/app.py or package.module:attribute")
    module = importlib.import_module(module_name)
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise InvalidSpec(f"module {module_name!r} has no attribute {attribute!r}") from None
    return as_application(value, arguments, target)


def as_application(value: Any, arguments: Mapping[str, str], where: str) -> Application:
    if isinstance(value, Application):
        return value
    if isinstance(value, Deployment):
        return value.bind()
    if callable(value):
        built = value(dict(arguments))
        if isinstance(built, Application):
            return built
        raise InvalidSpec(
            f"the app builder {where} returned {type(built).__name__}, not an application "
            "(Deployment.bind(...))"
        )
    raise InvalidSpec(f"{where} is a {type(value).__name__}, not an application or a builder")


def _from_script(path: str) -> Application | None:
    from capstan import serve

    before = serve.applied_count()
    namespace = runpy.run_path(path, run_name="__main__")
    if serve.applied_count() != before:
        return None  # the script deployed what it wanted itself
    apps = {k: v for k, v in namespace.items() if isinstance(v, Application)}
    if "app" in apps:
        return apps["app"]
    if len(apps) == 1:
        return next(iter(apps.values()))
    if apps:
        raise InvalidSpec(
            f"{path} defines several applications ({', '.join(sorted(apps))}); "
            f"name one: capstan run module:attribute"
        )
    raise InvalidSpec(
        f"{path} neither deployed anything nor defined an application (app = X.bind())"
    )

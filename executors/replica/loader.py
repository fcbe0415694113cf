"""Loading the user's code: resolve it, construct it, and say clearly what failed.

The user's code is a class or a function, given as an import path
(`"package.module:attribute"`) or as an SDK object (the Python SDK's
cloudpickled `PythonObject`). A class is constructed once with the
deployment's init arguments (JSON `init_arguments`, or the SDK's pickled
`sdk_init_arguments`); a function is used as it is.

The ingress contract with the SDK: a class decorated by `serve.ingress(app)`
carries the ASGI app (FastAPI, Starlette, any ASGI 3 callable) in the class
attribute `__capstan_asgi_app__`, or a function that builds the app in
`__capstan_asgi_builder__` (called once the instance exists, as Ray Serve
calls `serve.ingress(builder)`'s builder). The worker constructs the class
as usual, then serves HTTP requests by calling that app as ASGI; every scope it passes
holds the constructed instance under the key `"capstan.instance"`, so routes
written as methods can have their `self` bound to the live instance (for
FastAPI, a dependency that returns `request.scope["capstan.instance"]`).
An import path may also name an ASGI app object directly.

An import path may also name what `@serve.deployment` returned: an object
with a `func_or_class` attribute (the SDK's `Deployment`, as in Ray Serve)
stands for the class or function it holds.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any

from google.protobuf import any_pb2

from capstan import json_values
from capstan.errors import CapstanError
from capstan.internal.v1 import replica_pb2
from capstan.v1 import deployment_pb2
from executors.replica.payload import decode_arguments

ASGI_APP_ATTRIBUTE = "__capstan_asgi_app__"
ASGI_BUILDER_ATTRIBUTE = "__capstan_asgi_builder__"
WRAPPED_ATTRIBUTE = "func_or_class"


class LoadError(Exception):
    """The user's code could not be loaded or constructed; the message names
    the cause and is what the executor reports to the control plane."""


@dataclasses.dataclass(frozen=True)
class UserCode:
    """The loaded deployment: a constructed instance or a plain function."""

    # The class or function name, for messages.
    name: str
    # The instance for a class deployment; the function itself otherwise.
    target: Any
    is_function: bool
    # Set when HTTP goes to an ASGI app rather than to __call__(request).
    asgi_app: Any = None


def load(config: replica_pb2.ReplicaConfig) -> UserCode:
    """Resolves and constructs the deployment's code. Raises `LoadError`."""
    spec = config.deployment
    obj = _unwrap(_resolve(spec.code))
    name = getattr(obj, "__name__", type(obj).__name__)
    if inspect.isclass(obj):
        instance = _construct(obj, name, spec)
        return UserCode(name, instance, False, _asgi_app(obj, name))
    if _is_asgi_app(obj):
        return UserCode(name, obj, False, obj)
    if callable(obj):
        args, kwargs = _init_arguments(name, spec)
        if args or kwargs:
            raise LoadError(f"{name} is a function, so it takes no init arguments")
        return UserCode(name, obj, True)
    raise LoadError(f"{name} is neither a class nor a function (it is a {type(obj).__name__})")


def _resolve(code: deployment_pb2.Code) -> Any:
    source = code.WhichOneof("source")
    if source == "import_path":
        return _import(code.import_path)
    if source == "sdk_object":
        return _unpickle(_unpack(code.sdk_object, replica_pb2.PythonObject, "code").cloudpickle)
    raise LoadError("the deployment has no code: set code.import_path or code.sdk_object")


def _unpack(packed: any_pb2.Any, kind: type, field: str) -> Any:
    """The `kind` message `packed` holds; LoadError naming `field` and the
    type URL for anything else (say, another SDK's object)."""
    message = kind()
    if not packed.Unpack(message):
        raise LoadError(
            f"{field} holds a {packed.type_url!r}, which this Python replica cannot load; "
            f"it loads type.googleapis.com/{kind.DESCRIPTOR.full_name}"
        )
    return message


def _import(path: str) -> Any:
    module_name, sep, attribute = path.partition(":")
    if not sep:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise LoadError(f"import path {path!r} must look like 'package.module:attribute'")
    try:
        obj = importlib.import_module(module_name)
    except Exception as error:
        raise LoadError(f"cannot import {path!r}: {_describe(error)}") from error
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as error:
            raise LoadError(f"cannot import {path!r}: {_describe(error)}") from error
    return obj


def _unpickle(data: bytes) -> Any:
    import cloudpickle  # deferred: only pickled code needs it, and it is slow to import

    try:
        return cloudpickle.loads(data)
    except Exception as error:
        raise LoadError(f"cannot unpickle the deployment's code: {_describe(error)}") from error


def _unwrap(obj: Any) -> Any:
    # Classes and functions are never wrappers, whatever attributes they have.
    if inspect.isclass(obj) or inspect.isroutine(obj) or not hasattr(obj, WRAPPED_ATTRIBUTE):
        return obj
    wrapped = getattr(obj, WRAPPED_ATTRIBUTE)
    return _unwrap(_import(wrapped) if isinstance(wrapped, str) else wrapped)


def _construct(cls: type, name: str, spec: deployment_pb2.DeploymentSpec) -> Any:
    args, kwargs = _init_arguments(name, spec)
    try:
        return cls(*args, **kwargs)
    except Exception as error:
        raise LoadError(f"constructor of {name} raised {_describe(error)}") from error


def _init_arguments(
    name: str, spec: deployment_pb2.DeploymentSpec
) -> tuple[tuple[Any, ...] | list[Any], dict[str, Any]]:
    if not spec.HasField("sdk_init_arguments"):
        return json_values.arguments_to_python(spec.init_arguments)
    encoded = _unpack(spec.sdk_init_arguments, replica_pb2.EncodedArguments, "sdk_init_arguments")
    try:
        return decode_arguments(encoded, "sdk_init_arguments")
    except CapstanError as error:
        raise LoadError(f"init arguments of {name} are malformed: {error.message}") from error


def _asgi_app(cls: type, name: str) -> Any:
    builder = getattr(cls, ASGI_BUILDER_ATTRIBUTE, None)
    if builder is None:
        return getattr(cls, ASGI_APP_ATTRIBUTE, None)
    try:
        return builder()
    except Exception as error:
        raise LoadError(f"the ASGI app builder of {name} raised {_describe(error)}") from error


def _is_asgi_app(obj: Any) -> bool:
    if inspect.isroutine(obj):
        return False
    try:
        from starlette.applications import Starlette  # deferred: most deployments are not apps
    except ImportError:
        return False
    return isinstance(obj, Starlette)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"

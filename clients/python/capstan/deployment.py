"""`Deployment`: a class or function marked with `@serve.deployment`, with
the Ray Serve 1.x methods (`deploy`, `options`, `get_handle`, `delete`) and
the 2.x `bind` for `serve.run`."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from capstan import defaults, json_values, progress
from capstan import options as opts
from capstan.handle import DeploymentHandle
from capstan.v1 import deployment_pb2


def http_url() -> str:
    """The HTTP proxy's base URL: $CAPSTAN_HTTP_URL, else port 8000 here."""
    return os.environ.get("CAPSTAN_HTTP_URL", defaults.HTTP_URL)


class Deployment:
    """A deployment definition. Immutable: `options()` returns a new one."""

    def __init__(self, code: deployment_pb2.Code, func_or_class: Any, options: dict) -> None:
        self._code = code
        self._func_or_class = func_or_class
        self._options = options

    @property
    def name(self) -> str:
        return self._options["name"]

    @property
    def func_or_class(self) -> Any:
        """The user's class or function (unpickled on first use when this
        Deployment came from the control plane)."""
        if self._func_or_class is None:
            self._func_or_class = opts.python_object(self._code)
        return self._func_or_class

    version = property(lambda self: self._options.get("version"))
    prev_version = property(lambda self: self._options.get("prev_version"))
    num_replicas = property(lambda self: self._options.get("num_replicas"))
    user_config = property(lambda self: self._options.get("user_config"))
    max_concurrent_queries = property(lambda self: self._options.get("max_concurrent_queries"))
    ray_actor_options = property(lambda self: self._options.get("ray_actor_options"))
    autoscaling_config = property(lambda self: self._options.get("autoscaling_config"))
    init_args = property(lambda self: tuple(self._options.get("init_args") or ()))
    init_kwargs = property(lambda self: dict(self._options.get("init_kwargs") or {}))

    @property
    def route_prefix(self) -> str | None:
        prefix = self.explicit_route_prefix
        return f"/{self.name}" if prefix is opts.DEFAULT else prefix

    @property
    def explicit_route_prefix(self) -> Any:
        """The route_prefix option as given, or `options.DEFAULT` if none was."""
        return self._options.get("route_prefix", opts.DEFAULT)

    @property
    def url(self) -> str | None:
        """Where the deployment answers over HTTP, or None if it does not."""
        prefix = self.route_prefix
        return None if prefix is None else http_url() + prefix

    def options(self, func_or_class: Any = None, **options: Any) -> Deployment:
        """A copy with some options changed (and, optionally, other code)."""
        merged = {**self._options, **opts.normalize(options)}
        if func_or_class is None:
            return Deployment(self._code, self._func_or_class, merged)
        return Deployment(opts.code_of(func_or_class), func_or_class, merged)

    def deploy(self, *init_args: Any, _blocking: bool = True, **init_kwargs: Any) -> None:
        """Creates or updates the deployment. Positional and keyword arguments,
        if any, replace init_args / init_kwargs. Blocks until the rollout is done
        unless `_blocking=False`; raises capstan.DeployFailed if it fails."""
        from capstan import serve

        target = self
        if init_args or init_kwargs:
            target = self.options(init_args=init_args, init_kwargs=init_kwargs)
        serve.note_applied()
        client = serve.connect()
        spec = target.to_spec()
        with progress.reporting(client, deployment=spec.name) if _blocking else nullcontext():
            reply = client.apply(spec, wait=_blocking)
        for warning in reply.warnings:
            serve.log.warning("%s", warning)

    def delete(self) -> None:
        """Removes the deployment, its replicas and its route."""
        from capstan import serve

        serve.connect().delete(self.name)

    def get_handle(self, sync: bool = True) -> DeploymentHandle:
        """A handle that calls this deployment in-process (no HTTP hop)."""
        return DeploymentHandle(self.name)

    def bind(self, *init_args: Any, **init_kwargs: Any) -> Application:
        """This deployment with constructor arguments, for `serve.run`. Bound
        deployments among the arguments are deployed first and passed as handles."""
        return Application(self, init_args, init_kwargs)

    def to_spec(self) -> deployment_pb2.DeploymentSpec:
        return opts.to_spec(self._code, self._options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Deployment {self.name!r} cannot be called directly: use "
            f"{self.name}.deploy() and {self.name}.get_handle().remote(...)"
        )

    def __repr__(self) -> str:
        return (
            f"Deployment(name={self.name},version={self.version},route_prefix={self.route_prefix})"
        )


class Application:
    """A deployment bound to constructor arguments (`Deployment.bind`): the
    ingress of a graph that `serve.run` deploys as one application. Bound
    deployments among the arguments become handles in the replicas."""

    def __init__(self, deployment: Deployment, args: tuple, kwargs: dict) -> None:
        self.deployment = deployment
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"Application(ingress={self.deployment.name})"


def deployment(
    _func_or_class: Callable | None = None, **options: Any
) -> Deployment | Callable[[Any], Deployment]:
    """Marks a class or function as a deployment: `@serve.deployment` or
    `@serve.deployment(name=..., num_replicas=..., ...)` with Ray Serve's options."""
    options = opts.normalize(options)

    def decorate(func_or_class: Any) -> Deployment:
        name = options.get("name") or func_or_class.__name__
        return Deployment(opts.code_of(func_or_class), func_or_class, {**options, "name": name})

    return decorate(_func_or_class) if _func_or_class is not None else decorate


def from_stored(message: Any) -> Deployment:
    """A Deployment rebuilt from the control plane's record, ready to redeploy
    with the same code, arguments and options."""
    spec = message.spec
    options: dict[str, Any] = {
        "name": spec.name,
        "version": spec.version if spec.HasField("version") else None,
        "route_prefix": spec.route_prefix or None,
        "executor": spec.executor,
        "_stored_spec": spec,
        "ray_actor_options": _actor_options(spec.replica_options),
    }
    for key in opts.SCALARS:
        if key not in ("version", "prev_version") and spec.HasField(key):
            options[key] = getattr(spec, key)
    if spec.HasField("user_config"):
        options["user_config"] = json_values.to_python(spec.user_config)
    if spec.HasField("autoscaling_config"):
        fields = spec.autoscaling_config.ListFields()
        options["autoscaling_config"] = {field.name: value for field, value in fields}
        options.pop("num_replicas", None)
    return Deployment(spec.code, None, options)


def _actor_options(replica: deployment_pb2.ReplicaOptions) -> dict[str, Any]:
    env = replica.runtime_env
    runtime_env = {
        "env_vars": dict(env.env_vars),
        "working_dir": env.working_dir,
        "pip": list(env.pip),
        "conda": env.conda,
    }
    return {
        "num_cpus": replica.num_cpus,
        "num_gpus": replica.num_gpus,
        "resources": dict(replica.resources),
        "runtime_env": {k: v for k, v in runtime_env.items() if v},
    }

"""Replica options in Ray's terms, Ray's nodes in Capstan's, and why Ray
cannot place a replica, in words a person can act on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from executors.base import Node
from executors.options import ReplicaOptions

# Ray assigns GPUs to actors itself and sets this for them; a value from
# elsewhere does not apply to Ray placements.
RAY_OWNED_ENV = frozenset({"CUDA_VISIBLE_DEVICES"})
# Ray resources that are not "custom": the built-ins, and the per-node
# markers ("node:<ip>", "node:__internal_head__").
_BUILT_IN = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


def demand(options: ReplicaOptions) -> dict[str, float]:
    """What one replica reserves, in Ray's resource names."""
    need = {"CPU": options.num_cpus}
    if options.num_gpus:
        need["GPU"] = options.num_gpus
    need.update((name, amount) for name, amount in options.resources.items() if amount)
    return need


def actor_options(need: Mapping[str, float], runtime_env: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for `ActorClass.options` that reserve `need`."""
    custom = {name: amount for name, amount in need.items() if name not in ("CPU", "GPU")}
    options: dict[str, Any] = {"num_cpus": need["CPU"], "runtime_env": runtime_env}
    if "GPU" in need:
        options["num_gpus"] = need["GPU"]
    if custom:
        options["resources"] = custom
    return options


def ray_runtime_env(options: ReplicaOptions, env: Mapping[str, str]) -> dict[str, Any]:
    """The replica's runtime_env for Ray. `env` (the launch spec's, which
    holds the user's env_vars) goes in as env_vars so that it is set when
    the worker process starts: OMP_NUM_THREADS means nothing later."""
    env_vars = {name: value for name, value in env.items() if name not in RAY_OWNED_ENV}
    runtime_env: dict[str, Any] = {"env_vars": env_vars}
    if options.working_dir:
        runtime_env["working_dir"] = options.working_dir
    if options.pip:
        runtime_env["pip"] = list(options.pip)
    if options.conda:
        runtime_env["conda"] = options.conda
    return runtime_env


def is_installing(runtime_env: Mapping[str, Any]) -> bool:
    """Whether Ray has to fetch or build something before the actor starts."""
    return any(key in runtime_env for key in ("working_dir", "pip", "conda"))


def node_of(info: Mapping[str, Any]) -> Node:
    """A Capstan Node from one entry of `ray.nodes()`. Ray counts GPUs but
    does not name them to the driver, so the ids are indices."""
    resources = info.get("Resources", {})
    return Node(
        name=info["NodeID"],
        num_cpus=float(resources.get("CPU", 0.0)),
        gpu_ids=tuple(str(index) for index in range(int(resources.get("GPU", 0)))),
        resources={k: float(v) for k, v in resources.items() if _is_custom(k)},
        is_alive=bool(info.get("Alive")),
    )


def _is_custom(name: str) -> bool:
    return name not in _BUILT_IN and not name.startswith("node:")


def unplaceable(need: Mapping[str, float], nodes: Iterable[Mapping[str, Any]]) -> str | None:
    """Why no alive node could ever hold `need` (None when one could)."""
    totals = [info.get("Resources", {}) for info in nodes if info.get("Alive")]
    if any(_fits(need, total) for total in totals):
        return None
    most = {name: max((total.get(name, 0.0) for total in totals), default=0.0) for name in need}
    short = short_of(need, most)
    reason = f"short of {', '.join(short)}" if short else "no single node has all of it"
    return f"needs {amounts(need)}, cluster has at most {amounts(most)} on one node ({reason})"


def short_of(need: Mapping[str, float], have: Mapping[str, float]) -> list[str]:
    """The resources `have` holds less of than `need`."""
    return [name for name, amount in need.items() if have.get(name, 0.0) < amount]


def amounts(resources: Mapping[str, float]) -> str:
    """`{'CPU': 1, 'GPU': 0.5}`: whole numbers without a trailing `.0`."""
    shown = {k: int(v) if float(v).is_integer() else v for k, v in resources.items()}
    return str(shown)


def _fits(need: Mapping[str, float], have: Mapping[str, float]) -> bool:
    return not short_of(need, have)

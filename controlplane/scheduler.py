"""Placement: which node a replica runs on and which GPUs it gets. Pure: the
caller passes the nodes (from `Executor.capacity`) and what the replicas
already placed there use; no I/O, no clock.

Fractional GPU requests are packed onto device ids (two 0.5 share one id,
three do not), so a replica sees only its own devices through
CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

from executors.base import Node
from executors.options import ReplicaOptions

# Float sums of fractions (0.1 + 0.2) must still fit a whole device.
_EPSILON = 1e-9


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a replica runs and what it holds there."""

    node: str
    num_cpus: float = 0.0
    # GPU id -> the share of that device the replica holds (0 < share <= 1).
    gpus: Mapping[str, float] = dataclasses.field(default_factory=dict)
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Placement:
        return cls(**json.loads(text))


@dataclasses.dataclass(frozen=True)
class NoFit:
    """The replica fits nowhere now; `reason` is shown in status."""

    reason: str


def place(
    options: ReplicaOptions, nodes: Sequence[Node], used: Sequence[Placement]
) -> Placement | NoFit:
    """A placement for one replica, or why none exists. Among nodes that fit,
    the one with the most free CPUs wins, which spreads replicas out."""
    live = [node for node in nodes if node.is_alive]
    if not live:
        names = ", ".join(node.name for node in nodes) or "none"
        return NoFit(f"no live node to run on (nodes: {names})")
    usage = _usage_by_node(used)
    fits: list[tuple[float, Placement]] = []
    reasons: list[str] = []
    for node in sorted(live, key=lambda n: n.name):
        result = _fit(options, node, usage[node.name])
        if isinstance(result, NoFit):
            reasons.append(result.reason)
        else:
            fits.append((node.num_cpus - usage[node.name].num_cpus, result))
    if fits:
        return max(fits, key=lambda pair: pair[0])[1]
    return NoFit("; ".join(reasons))


def placement_env(
    placement: Placement, options: ReplicaOptions, node: Node | None
) -> dict[str, str]:
    """Variables the placement implies. The user's own OMP_NUM_THREADS wins;
    CUDA_VISIBLE_DEVICES is set only where there are GPUs to hide."""
    env: dict[str, str] = {}
    if "OMP_NUM_THREADS" not in options.env_vars:
        env["OMP_NUM_THREADS"] = options.omp_num_threads
    if node is not None and node.gpu_ids:
        order = {gpu: index for index, gpu in enumerate(node.gpu_ids)}
        env["CUDA_VISIBLE_DEVICES"] = ",".join(sorted(placement.gpus, key=order.__getitem__))
    return env


@dataclasses.dataclass
class _Usage:
    num_cpus: float = 0.0
    gpus: dict[str, float] = dataclasses.field(default_factory=lambda: defaultdict(float))
    resources: dict[str, float] = dataclasses.field(default_factory=lambda: defaultdict(float))


def _usage_by_node(used: Sequence[Placement]) -> dict[str, _Usage]:
    usage: dict[str, _Usage] = defaultdict(_Usage)
    for placement in used:
        total = usage[placement.node]
        total.num_cpus += placement.num_cpus
        for gpu, share in placement.gpus.items():
            total.gpus[gpu] += share
        for name, amount in placement.resources.items():
            total.resources[name] += amount
    return usage


def _fit(options: ReplicaOptions, node: Node, usage: _Usage) -> Placement | NoFit:
    free_cpus = node.num_cpus - usage.num_cpus
    if options.num_cpus > free_cpus + _EPSILON:
        return NoFit(
            f"needs {_amount(options.num_cpus, 'CPU')}, {node.name} has {_number(free_cpus)} free"
        )
    for name, amount in sorted(options.resources.items()):
        free = node.resources.get(name, 0.0) - usage.resources[name]
        if amount > free + _EPSILON:
            return NoFit(f'needs {_number(amount)} "{name}", {node.name} has {_number(free)} free')
    gpus = _pick_gpus(options.num_gpus, node, usage)
    if isinstance(gpus, NoFit):
        return gpus
    return Placement(
        node=node.name,
        num_cpus=options.num_cpus,
        gpus=gpus,
        resources=dict(options.resources),
    )


def _pick_gpus(want: float, node: Node, usage: _Usage) -> dict[str, float] | NoFit:
    if want <= 0:
        return {}
    free = {gpu: 1.0 - usage.gpus[gpu] for gpu in node.gpu_ids}
    if want < 1:
        # Best fit: the fullest device that still has room keeps others whole.
        candidates = [gpu for gpu in node.gpu_ids if free[gpu] + _EPSILON >= want]
        if not candidates:
            return NoFit(
                f"needs {_number(want)} GPU, {node.name} has no GPU with {_number(want)} free "
                f"({len(node.gpu_ids)} GPUs)"
            )
        return {min(candidates, key=lambda gpu: free[gpu]): want}
    whole = [gpu for gpu in node.gpu_ids if free[gpu] >= 1 - _EPSILON]
    if len(whole) < want:
        return NoFit(f"needs {_amount(want, 'GPU')}, {node.name} has {len(whole)} free")
    return {gpu: 1.0 for gpu in whole[: int(want)]}


def _number(value: float) -> str:
    return f"{value:g}"


def _amount(value: float, unit: str) -> str:
    return f"{_number(value)} {unit}" + ("" if value == 1 else "s")


def place_on_executor(
    options: ReplicaOptions,
    executor: str,
    *,
    schedules_itself: bool,
    nodes: Sequence[Node] | str,
    used: Sequence[Placement],
) -> Placement | NoFit:
    """A placement on `executor`, whose capacity is `nodes` (or why it could
    not be read). An executor that schedules itself (Ray) is handed the
    request as is, on no particular node."""
    if schedules_itself:
        return Placement(node="", num_cpus=options.num_cpus, resources=options.resources)
    if isinstance(nodes, str):
        return NoFit(f"cannot read the capacity of executor {executor!r}: {nodes}")
    return place(options, nodes, used)


def never_fits(options: ReplicaOptions, executor: str, nodes: Sequence[Node]) -> str | None:
    """Why a replica asking for `options` could not be placed on any of
    `nodes` even if all of them were empty, or None when one could hold it.
    Dead nodes count: they may come back with what they declare."""
    if any(not isinstance(_fit(options, node, _Usage()), NoFit) for node in nodes):
        return None
    if not nodes:
        return f"executor {executor!r} declares no nodes to run replicas on"
    for unit, want, field, has in _demands(options):
        most = max(has(node) for node in nodes)
        if want > most + _EPSILON:
            total = sum(has(node) for node in nodes)
            where = f"{len(nodes)} node" + ("" if len(nodes) == 1 else "s")
            return (
                f"a replica needs {_amount(want, unit)} but no node of executor {executor!r} "
                f"has that much ({_number(most)} at most on one node, {_number(total)} in "
                f"total on {where}); declare more with {_setting(executor, nodes, field)} "
                f"in the capstan config, or ask for less in replica_options (ray_actor_options)"
            )
    return (
        f"a replica needs {_number(options.num_cpus)} CPU, {_number(options.num_gpus)} GPU "
        f"and {dict(options.resources)} together, which no single node of executor "
        f"{executor!r} has; ask for less in replica_options (ray_actor_options)"
    )


def _demands(options: ReplicaOptions) -> list[tuple[str, float, str, Callable[[Node], float]]]:
    """(unit, amount asked, config field, what a node has) per resource."""
    gpus = math.ceil(options.num_gpus)  # a fraction still needs one device
    demands: list[tuple[str, float, str, Callable[[Node], float]]] = [
        ("CPU", options.num_cpus, "num_cpus", lambda node: node.num_cpus),
        ("GPU", gpus, "gpu_ids", lambda node: float(node.num_gpus)),
    ]
    for name, amount in sorted(options.resources.items()):
        demands.append(
            (f'"{name}"', amount, f"resources.{name}", lambda n, k=name: n.resources.get(k, 0.0))
        )
    return demands


def _setting(executor: str, nodes: Sequence[Node], field: str) -> str:
    """Where the capstan config declares `field`: the executor's own section
    for a one-node executor named after itself (local), else its hosts."""
    if len(nodes) == 1 and nodes[0].name == executor:
        return f"executors.{executor}.{field}"
    return f"{field} of the hosts under executors.{executor}"

"""Placement, as tables: nodes + what is used + a request -> node and GPUs,
or the reason it fits nowhere."""

from __future__ import annotations

import pytest

from controlplane.scheduler import (
    NoFit,
    Placement,
    never_fits,
    place,
    place_on_executor,
    placement_env,
)
from controlplane.spec import ReplicaOptions
from executors.base import Node

LOCAL = Node("local", num_cpus=4)
GPU_BOX = Node("gpu", num_cpus=8, gpu_ids=("0", "1"))
TPU_BOX = Node("tpu", num_cpus=2, resources={"tpu": 4})


def used(node: str, cpus: float = 0, gpus: dict | None = None, **resources: float) -> Placement:
    return Placement(node=node, num_cpus=cpus, gpus=gpus or {}, resources=resources)


def opts(cpus: float = 1, gpus: float = 0, **resources: float) -> ReplicaOptions:
    return ReplicaOptions(num_cpus=cpus, num_gpus=gpus, resources=resources)


FITS = [
    ("fits on an empty node", opts(1), [LOCAL], [], "local", {}),
    ("fills the node exactly", opts(4), [LOCAL], [used("local", 0)], "local", {}),
    ("fractional cpus add up", opts(0.5), [LOCAL], [used("local", 3.5)], "local", {}),
    ("zero cpus always fit", opts(0), [LOCAL], [used("local", 4)], "local", {}),
    ("one whole gpu", opts(1, 1), [GPU_BOX], [], "gpu", {"0": 1.0}),
    ("two whole gpus", opts(1, 2), [GPU_BOX], [], "gpu", {"0": 1.0, "1": 1.0}),
    (
        "the next free whole gpu",
        opts(1, 1),
        [GPU_BOX],
        [used("gpu", 1, {"0": 1.0})],
        "gpu",
        {"1": 1.0},
    ),
    ("half a gpu", opts(1, 0.5), [GPU_BOX], [], "gpu", {"0": 0.5}),
    (
        "two halves share one id",
        opts(1, 0.5),
        [GPU_BOX],
        [used("gpu", 1, {"0": 0.5})],
        "gpu",
        {"0": 0.5},
    ),
    (
        "a third half goes to the next id",
        opts(1, 0.5),
        [GPU_BOX],
        [used("gpu", 1, {"0": 0.5}), used("gpu", 1, {"0": 0.5})],
        "gpu",
        {"1": 0.5},
    ),
    (
        "best fit packs onto the fuller device",
        opts(1, 0.25),
        [GPU_BOX],
        [used("gpu", 1, {"1": 0.5})],
        "gpu",
        {"1": 0.25},
    ),
    (
        "three tenths fit where 0.1 + 0.2 + 0.4 are used (float sums)",
        opts(0, 0.3),
        [Node("g", 1, gpu_ids=("0",))],
        [used("g", 0, {"0": 0.1}), used("g", 0, {"0": 0.2}), used("g", 0, {"0": 0.4})],
        "g",
        {"0": 0.3},
    ),
    ("custom resources", opts(1, tpu=2), [LOCAL, TPU_BOX], [], "tpu", {}),
    ("the node with most free cpus wins", opts(1), [LOCAL, GPU_BOX], [], "gpu", {}),
    (
        "a full node is skipped",
        opts(1),
        [LOCAL, Node("other", 1)],
        [used("local", 4)],
        "other",
        {},
    ),
    (
        "a dead node is skipped",
        opts(1),
        [Node("dead", 64, is_alive=False), LOCAL],
        [],
        "local",
        {},
    ),
]


@pytest.mark.parametrize(
    ("options", "nodes", "taken", "node", "gpus"),
    [pytest.param(*case[1:], id=case[0]) for case in FITS],
)
def test_place(
    options: ReplicaOptions, nodes: list[Node], taken: list[Placement], node: str, gpus: dict
) -> None:
    placement = place(options, nodes, taken)
    assert isinstance(placement, Placement), placement
    assert (placement.node, dict(placement.gpus)) == (node, gpus)
    assert placement.num_cpus == options.num_cpus


NO_FITS = [
    ("too many cpus", opts(2), [LOCAL], [used("local", 3.5)], "needs 2 CPUs, local has 0.5 free"),
    ("one cpu too many", opts(1), [Node("n", 0)], [], "needs 1 CPU, n has 0 free"),
    ("no gpu at all", opts(1, 1), [LOCAL], [], "needs 1 GPU, local has 0 free"),
    (
        "whole gpus taken",
        opts(1, 2),
        [GPU_BOX],
        [used("gpu", 0, {"0": 0.5})],
        "needs 2 GPUs, gpu has 1 free",
    ),
    (
        "no device with room for a fraction",
        opts(1, 0.6),
        [Node("g", 4, gpu_ids=("0",))],
        [used("g", 0, {"0": 0.5})],
        "needs 0.6 GPU, g has no GPU with 0.6 free (1 GPUs)",
    ),
    ("missing custom resource", opts(1, tpu=1), [LOCAL], [], 'needs 1 "tpu", local has 0 free'),
    (
        "every node says why",
        opts(3),
        [LOCAL, Node("small", 2)],
        [used("local", 2)],
        "needs 3 CPUs, local has 2 free; needs 3 CPUs, small has 2 free",
    ),
    ("no live node", opts(1), [Node("a", 4, is_alive=False)], [], "no live node to run on"),
    ("no nodes", opts(1), [], [], "no live node to run on (nodes: none)"),
]


@pytest.mark.parametrize(
    ("options", "nodes", "taken", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in NO_FITS],
)
def test_no_fit(options: ReplicaOptions, nodes: list[Node], taken: list, reason: str) -> None:
    result = place(options, nodes, taken)
    assert isinstance(result, NoFit)
    assert result.reason.startswith(reason)


ENV = [
    ("one cpu", opts(1), Placement("local", 1), LOCAL, {"OMP_NUM_THREADS": "1"}),
    ("cpus rounded down", opts(2.5), Placement("local", 2.5), LOCAL, {"OMP_NUM_THREADS": "2"}),
    ("at least one thread", opts(0.25), Placement("local", 0.25), LOCAL, {"OMP_NUM_THREADS": "1"}),
    (
        "gpus are listed",
        opts(1, 2),
        Placement("gpu", 1, {"1": 1.0, "0": 1.0}),
        GPU_BOX,
        {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "0,1"},
    ),
    (
        "a gpu node hides its gpus from a cpu replica",
        opts(1),
        Placement("gpu", 1),
        GPU_BOX,
        {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
    ),
    (
        "the user's OMP_NUM_THREADS wins",
        ReplicaOptions(num_cpus=4, env_vars={"OMP_NUM_THREADS": "16"}),
        Placement("local", 4),
        LOCAL,
        {},
    ),
    ("unknown node: no gpu variable", opts(1), Placement("", 1), None, {"OMP_NUM_THREADS": "1"}),
]


@pytest.mark.parametrize(
    ("options", "placement", "node", "env"), [pytest.param(*c[1:], id=c[0]) for c in ENV]
)
def test_placement_env(
    options: ReplicaOptions, placement: Placement, node: Node | None, env: dict
) -> None:
    assert placement_env(placement, options, node) == env


def test_placement_round_trips_through_json() -> None:
    placement = Placement("gpu", 1.5, {"0": 0.5}, {"tpu": 1.0})
    assert Placement.from_json(placement.to_json()) == placement


@pytest.mark.parametrize(
    ("schedules_itself", "nodes", "used_cpus", "placed"),
    [
        (True, "unreachable", 4, Placement(node="", num_cpus=2, resources={"tpu": 1})),
        (False, [TPU_BOX], 0, Placement(node="tpu", num_cpus=2, resources={"tpu": 1})),
        (False, [TPU_BOX], 1, "needs 2 CPU"),  # full: stays pending, says why
        (False, "timed out", 0, "cannot read the capacity of executor 'x': timed out"),
    ],
)
def test_place_on_executor(
    schedules_itself: bool, nodes: list[Node] | str, used_cpus: float, placed: Placement | str
) -> None:
    """An executor that schedules itself (Ray) gets the request as is; one
    whose capacity could not be read places nothing and says why."""
    got = place_on_executor(
        opts(2, tpu=1), "x", schedules_itself=schedules_itself, nodes=nodes,
        used=[used("tpu", used_cpus)],
    )  # fmt: skip
    if isinstance(placed, str):
        assert isinstance(got, NoFit) and placed in got.reason
    else:
        assert got == placed


NEVER = [
    ("fits when empty", opts(4), [LOCAL], None),
    ("fits on one of several nodes", opts(1, 2), [LOCAL, GPU_BOX], None),
    (
        "a GPU on a machine with none",
        opts(1, 1),
        [LOCAL],
        "a replica needs 1 GPU but no node of executor 'local' has that much (0 at most "
        "on one node, 0 in total on 1 node); declare more with executors.local.gpu_ids",
    ),
    (
        "more CPUs than any node",
        opts(5),
        [LOCAL],
        "needs 5 CPUs but no node of executor 'local' has that much (4 at most on one node",
    ),
    (
        "a custom resource nobody declares, on an inventory",
        opts(1, tpu=1),
        [Node("a", 2), Node("b", 2)],
        "needs 1 \"tpu\" but no node of executor 'ssh' has that much (0 at most on one node, "
        "0 in total on 2 nodes); declare more with resources.tpu of the hosts under "
        "executors.ssh",
    ),
    (
        "enough of each, but not together on one node",
        opts(8, 1, tpu=1),
        [GPU_BOX, TPU_BOX],
        "which no single node",
    ),
    ("a fraction of a GPU still needs one", opts(1, 0.5), [LOCAL], "needs 1 GPU"),
]


@pytest.mark.parametrize(
    ("options", "nodes", "expected"), [c[1:] for c in NEVER], ids=[c[0] for c in NEVER]
)
def test_never_fits(options, nodes, expected) -> None:
    executor = "ssh" if len(nodes) > 1 and nodes[0].name == "a" else "local"
    why = never_fits(options, executor, nodes)
    assert (why is None) if expected is None else (expected in why), why

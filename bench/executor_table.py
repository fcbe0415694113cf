"""One row per executor (local, ssh, ray): seconds to deploy one replica,
seconds to scale it 1 -> 4, and wrk through the proxy to one replica.

One `capstan start --config` runs all three executors: the ssh executor on
two real sshd hosts (127.0.0.1 and 127.0.0.2, as tests/support/sshd.py starts them)
and the ray executor on a real local Ray head (as tests/support/ray_cluster.py starts
it). Each executor gets the same trivial deployment under its own name and
route prefix, with a pinned version so that scaling happens in place. The
sshd hosts, Ray and Capstan are all stopped on the way out, error or not.
"""

from __future__ import annotations

import contextlib
import pathlib
import sys
import tempfile
import time

import cloudpickle
import httpx
from wrk import wrk

from capstan import serve
from capstan.client import ControlPlaneClient
from capstan.errors import CapstanError
from capstan.v1 import controlplane_pb2

# `tests.support` is importable: run.py, which imports this module, puts the
# repository root on sys.path.
from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.ray_cluster import start_ray_cluster, stop_ray_cluster
from tests.support.sshd import start_hosts, stop_hosts
from tests.support.waiting import eventually_sync

EXECUTORS = ("local", "ssh", "ray")
# Small replicas, so that 4 fit on each executor's declared capacity.
REPLICA_CPUS = 0.25
LOCAL_CPUS = 8
RAY_CPUS = 4  # each ssh host declares 4 (tests/support/sshd.py)
APPLY_TIMEOUT_S = 300


class Hello:
    def __call__(self, request):
        return "Hello from Capstan!\n"


# Replicas cannot import this module (ssh hosts and Ray workers see the repo
# root, not bench/): ship Hello by value, as a script's class would be.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def measure_executors(duration_s: int, connections: int) -> list[dict]:
    """A row per executor; a row whose executor failed carries "error"."""
    with (
        tempfile.TemporaryDirectory(prefix="capstan-bench-executors-") as root,
        contextlib.ExitStack() as stack,
    ):
        cluster = start_system(pathlib.Path(root), stack)
        client = cluster.client()
        stack.callback(client.close)
        return [measure(name, cluster, client, duration_s, connections) for name in EXECUTORS]


def start_system(root: pathlib.Path, stack: contextlib.ExitStack) -> Cluster:
    """sshd hosts, a Ray head, then Capstan configured with all three
    executors; each is stopped by `stack`, in the reverse order."""
    (root / "sshd").mkdir()
    hosts = start_hosts(root / "sshd")
    stack.callback(stop_hosts, hosts)
    # This also puts Ray's loopback switch in os.environ, which `capstan start`
    # (the process that imports Ray) inherits.
    ray = start_ray_cluster(num_cpus=RAY_CPUS)
    stack.callback(stop_ray_cluster, ray)
    state = root / "capstan"
    config = {
        "default_executor": "local",
        "executors": {
            "local": {"num_cpus": LOCAL_CPUS},
            # Replica workdirs under Capstan's state folder: stop_cluster
            # then checks that no ssh worker outlived it.
            "ssh": hosts.executor_config(state),
            "ray": ray.executor_config(),
        },
    }
    cluster = start_cluster(state, config)
    stack.callback(stop_cluster, cluster)
    return cluster


def measure(
    executor: str, cluster: Cluster, client: ControlPlaneClient, duration_s: int, connections: int
) -> dict:
    app = serve.deployment(
        Hello,
        name=f"hello_{executor}",
        route_prefix=f"/{executor}",
        version="bench",
        executor=executor,
        ray_actor_options={"num_cpus": REPLICA_CPUS},
    )
    url = f"{cluster.http_url}/{executor}"
    row: dict = {"executor": executor}
    try:
        row["deploy_s"], first = timed_apply(client, app.options(num_replicas=1))
        eventually_sync(lambda: is_ok(url), f"{url} to answer 200", timeout_s=30)
        row.update(wrk(url, duration_s, connections))
        row["scale_s"], scaled = timed_apply(client, app.options(num_replicas=4))
        check_in_place(first, scaled)
    except (CapstanError, TimeoutError, RuntimeError) as error:
        row["error"] = f"{type(error).__name__}: {error}"
    finally:
        client.delete(app.name)  # frees its CPUs before the next executor's turn
    return row


def timed_apply(
    client: ControlPlaneClient, app: serve.Deployment
) -> tuple[float, controlplane_pb2.Deployment]:
    """Seconds a blocking apply takes (it returns once the rollout serves)."""
    began = time.monotonic()
    deployment = client.apply(app.to_spec(), wait=True, timeout_s=APPLY_TIMEOUT_S).deployment
    return time.monotonic() - began, deployment


def is_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def check_in_place(first: controlplane_pb2.Deployment, scaled: controlplane_pb2.Deployment) -> None:
    """Scaling kept the first replica and added three: nothing was replaced."""
    before = {replica.id for replica in first.replicas}
    after = {replica.id for replica in scaled.replicas}
    if len(before) != 1 or len(after) != 4 or not before <= after:
        raise RuntimeError(f"scale 1 -> 4 was not in place: {sorted(before)} -> {sorted(after)}")


def print_executor_table(rows: list[dict]) -> None:
    print()
    print(
        "| executor | deploy 1 replica (s) | scale 1 → 4 (s) | req/s, 1 replica via proxy "
        "| p50 ms | p99 ms | non-2xx |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        if "error" in row:
            print(f"| {row['executor']} | failed: {row['error']} | | | | | |")
            continue
        print(
            f"| {row['executor']} | {row['deploy_s']:.2f} | {row['scale_s']:.2f} "
            f"| {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['errors']} |"
        )

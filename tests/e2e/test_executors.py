"""One control plane and proxy driving three executors at once: local
processes (declared GPUs and a custom resource), two real SSH hosts and a
real local Ray. What a user sees through the API and over HTTP: the same
deployment answers the same on each, the scheduler spreads replicas across
hosts, packs fractional GPUs onto device ids, sets OMP_NUM_THREADS, keeps a
replica that fits nowhere PENDING with the reason until room frees, and
every executor honours a runtime_env's env_vars and working_dir."""

from __future__ import annotations

import collections
import json
import pathlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from capstan import serve
from capstan.client import ControlPlaneClient
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import deployment_pb2
from tests.apps.probe import Probe
from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.ray_cluster import LOOPBACK_ENV, REPO_ROOT, RayCluster
from tests.support.sshd import SshHosts
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.timeout(60)

EXECUTORS = ("local", "ssh", "ray")
PROBE = "tests.apps.probe:Probe"
LOCAL = {"num_cpus": 8, "gpu_ids": ["0", "1"], "resources": {"accel": 2}}
# Each SSH host offers one CPU: two one-CPU replicas fit only one per host.
SSH_CPUS_PER_HOST = 1
# Ray is slow to start actors on this 2-core machine: few, small replicas.
SMALL_CPUS = 0.25
START_TIMEOUT_S = 45.0


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, ssh_hosts: SshHosts, ray_cluster: RayCluster
) -> Iterator[Cluster]:
    """`capstan start` with the local, ssh and ray executors, in place of the
    session's cluster for this module. SSH workers keep their files under
    its state folder, so stopping it also checks that none is left running."""
    state_dir = tmp_path_factory.mktemp("executors")
    ssh = ssh_hosts.executor_config(state_dir)
    ssh["hosts"] = [{**host, "num_cpus": SSH_CPUS_PER_HOST} for host in ssh["hosts"]]
    config = {
        "default_executor": "local",
        "executors": {
            "local": LOCAL,
            "ssh": ssh,
            # A namespace of its own: the control plane stops Ray actors it
            # does not know, and other tests share this Ray.
            "ray": ray_cluster.executor_config(namespace="capstan-e2e-executors"),
        },
    }
    with pytest.MonkeyPatch.context() as patch:
        # The control plane imports Ray; local replicas import tests.apps.*
        # even when a working_dir makes them start elsewhere.
        for name, value in LOOPBACK_ENV.items():
            patch.setenv(name, value)
        patch.setenv("PYTHONPATH", str(REPO_ROOT))
        started = start_cluster(state_dir, config)
    yield started
    stop_cluster(started)


@pytest.fixture
def client(cluster: Cluster) -> Iterator[ControlPlaneClient]:
    """A client of the module's cluster; every deployment a test made is
    deleted (and its replicas stopped) after it."""
    client = cluster.client()
    yield client
    # All at once: each drains for its graceful_shutdown_wait_loop_s first.
    for deployment in client.list():
        client.delete(deployment.spec.name, wait=False)
    eventually_sync(
        lambda: not client.list(), "every deployment to be deleted", timeout_s=30, interval_s=0.05
    )
    client.close()


# -- 1. the same seed example on every executor --------------------------------


@pytest.mark.timeout(90)  # the first test also starts Ray, sshd and the cluster
def test_the_seed_example_answers_the_same_on_every_executor(
    client: ControlPlaneClient, cluster: Cluster
) -> None:
    class MyFirstDeployment:
        # Take the message to return as an argument to the constructor.
        def __init__(self, msg):
            self.msg = msg

        def __call__(self, request):
            return self.msg

        def other_method(self, arg):
            return self.msg

    base = serve.deployment(MyFirstDeployment).options(
        init_args=("Hello world!",), ray_actor_options={"num_cpus": SMALL_CPUS}
    )
    apply_all(
        client,
        [
            base.options(name=f"first_{executor}", route_prefix=f"/{executor}/first")
            .options(executor=executor)
            .to_spec()
            for executor in EXECUTORS
        ],
    )

    answers = {}
    for executor in EXECUTORS:
        response = get(cluster, f"/{executor}/first")
        answers[executor] = (response.status_code, response.headers["content-type"], response.text)
    assert answers["local"] == (200, "text/plain; charset=utf-8", "Hello world!")
    assert answers["ssh"] == answers["ray"] == answers["local"]
    for executor in EXECUTORS:
        assert {r.executor for r in client.get(f"first_{executor}").replicas} == {executor}


# -- 2. placement across SSH hosts --------------------------------------------


def test_replicas_on_ssh_land_one_on_each_host(
    client: ControlPlaneClient, cluster: Cluster
) -> None:
    client.apply(
        probe("spread", executor="ssh", num_replicas=2, num_cpus=1), timeout_s=START_TIMEOUT_S
    )

    replicas = client.get("spread").replicas
    assert sorted(r.node for r in replicas) == ["a", "b"]
    assert {r.address.rpartition(":")[0] for r in replicas} == {"127.0.0.1", "127.0.0.2"}
    # Both serve: HTTP reaches two distinct processes.
    assert len(answers_by_pid(cluster, "/spread", replicas=2)) == 2


# -- 3. fractional GPUs --------------------------------------------------------


def test_half_gpu_replicas_pack_two_to_a_device(
    client: ControlPlaneClient, cluster: Cluster
) -> None:
    client.apply(probe("half_gpu", num_replicas=3, num_gpus=0.5), timeout_s=START_TIMEOUT_S)

    seen = answers_by_pid(cluster, "/half_gpu?env=CUDA_VISIBLE_DEVICES", replicas=3)

    devices = collections.Counter(answer["env"]["CUDA_VISIBLE_DEVICES"] for answer in seen.values())
    # Each replica sees its own device only; two share one, the third has
    # the other to itself.
    assert set(devices) == {"0", "1"}
    assert sorted(devices.values()) == [1, 2]


# -- 4. OMP_NUM_THREADS --------------------------------------------------------


def test_omp_num_threads_follows_the_replica_cpus_unless_set(
    client: ControlPlaneClient, cluster: Cluster
) -> None:
    apply_all(
        client,
        [
            probe("two_cpus", num_cpus=2),
            probe("half_cpu", num_cpus=0.5),
            probe("own_omp", num_cpus=2, runtime_env={"env_vars": {"OMP_NUM_THREADS": "7"}}),
        ],
    )

    def threads(name: str) -> str:
        return get(cluster, f"/{name}?env=OMP_NUM_THREADS").json()["env"]["OMP_NUM_THREADS"]

    assert threads("two_cpus") == "2"
    assert threads("half_cpu") == "1"
    assert threads("own_omp") == "7"


# -- 5. PENDING until capacity frees -------------------------------------------


def test_a_replica_waits_pending_with_its_reason_until_room_frees(
    client: ControlPlaneClient, cluster: Cluster
) -> None:
    client.apply(probe("holder", resources={"accel": 2}), timeout_s=START_TIMEOUT_S)
    client.apply(probe("waiter", resources={"accel": 1}), wait=False)

    def pending_replica() -> cp.Replica | None:
        # A new replica is PENDING until placed; one that fits nowhere
        # stays so, with why.
        replicas = client.get("waiter").replicas
        pending = cp.REPLICA_STATE_PENDING
        return next((r for r in replicas if r.state == pending and r.message), None)

    replica = eventually_sync(pending_replica, "the waiter's replica to be PENDING", timeout_s=10)
    assert '"accel"' in replica.message
    waiter = eventually_sync(
        lambda: _with_message(client, "waiter"), "the waiter's message", timeout_s=10
    )
    assert waiter.state == cp.DEPLOYMENT_STATE_UPDATING
    assert "pending" in waiter.message and '"accel"' in waiter.message

    client.delete("holder")

    eventually_sync(
        lambda: _is_healthy(client, "waiter"), "the waiter to start", timeout_s=START_TIMEOUT_S
    )
    assert client.get("waiter").message == ""
    assert eventually_sync(
        lambda: _answers(cluster, "/waiter"), "the waiter to answer", timeout_s=10
    )


def _with_message(client: ControlPlaneClient, name: str) -> cp.Deployment | None:
    deployment = client.get(name)
    return deployment if deployment.message else None


def _is_healthy(client: ControlPlaneClient, name: str) -> bool:
    return client.get(name).state == cp.DEPLOYMENT_STATE_HEALTHY


def _answers(cluster: Cluster, path: str) -> bool:
    return get(cluster, path).status_code == 200


# -- 6. runtime_env on every executor ------------------------------------------


def test_env_vars_reach_replicas_on_every_executor(
    client: ControlPlaneClient, cluster: Cluster
) -> None:
    apply_all(
        client,
        [
            probe(
                f"env_{executor}",
                executor=executor,
                runtime_env={"env_vars": {"CAPSTAN_GREETING": f"hello from {executor}"}},
            )
            for executor in EXECUTORS
        ],
    )

    for executor in EXECUTORS:
        answer = get(cluster, f"/env_{executor}?env=CAPSTAN_GREETING").json()
        assert answer["env"] == {"CAPSTAN_GREETING": f"hello from {executor}"}, executor


def test_logs_dir_holds_the_replica_log_on_every_executor(
    client: ControlPlaneClient, tmp_path: pathlib.Path
) -> None:
    # Every host here is this machine, so each replica's logs_dir is readable.
    specs = []
    for executor in EXECUTORS:
        spec = probe(f"logs_{executor}", executor=executor)
        spec.logging_config.CopyFrom(
            deployment_pb2.LoggingConfig(
                encoding="JSON",
                logs_dir=str(tmp_path / executor),
                additional_log_standard_attrs=["funcName"],
            )
        )
        specs.append(spec)
    apply_all(client, specs)

    for executor in EXECUTORS:
        [replica] = client.get(f"logs_{executor}").replicas
        [path] = (tmp_path / executor).glob(f"replica_*_{replica.id}.log")
        entries = [json.loads(line) for line in path.read_text().splitlines()]
        assert any(e["message"].startswith("serving Probe") for e in entries), entries
        assert all(e["funcName"] for e in entries), executor


@pytest.mark.parametrize("executor", ["local", "ssh", "ray"])
def test_a_working_dir_is_importable_in_the_replica(
    executor: str, client: ControlPlaneClient, cluster: Cluster, tmp_path: pathlib.Path
) -> None:
    # A module that exists only in the shipped folder, holding a fresh value.
    module = f"shipped_{uuid.uuid4().hex[:8]}"
    token = uuid.uuid4().hex
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / f"{module}.py").write_text(f"VALUE = {token!r}\n")
    runtime_env = {"working_dir": str(tmp_path / "app")}
    # The class itself, not its import path: an import path must resolve
    # inside the uploaded working_dir, and Probe is on the replicas' path.
    spec = probe("shipped", executor=executor, code=Probe, runtime_env=runtime_env)
    apply_all(client, [spec])

    # HEALTHY is the control plane's word; the proxy learns the route a moment later.
    answer = eventually_sync(
        lambda: (r := get(cluster, f"/shipped?module={module}")).status_code == 200 and r,
        "the proxy to route /shipped",
    )
    assert answer.json()["module"] == token


# -- helpers -------------------------------------------------------------------


def probe(
    name: str, *, executor: str = "local", code: Any = PROBE, **actor_options: Any
) -> deployment_pb2.DeploymentSpec:
    """The Probe app as deployment `name` (at `/name`); `num_replicas` goes
    to the deployment, everything else to its replica options."""
    num_replicas = actor_options.pop("num_replicas", 1)
    deployment = serve.deployment(
        code, name=name, executor=executor, num_replicas=num_replicas,
        ray_actor_options={"num_cpus": SMALL_CPUS, **actor_options},
        # Loopback routers learn of a removal at once: no need to wait 2 s.
        graceful_shutdown_wait_loop_s=0.1,
    )  # fmt: skip
    return deployment.to_spec()


def apply_all(client: ControlPlaneClient, specs: list[deployment_pb2.DeploymentSpec]) -> None:
    """Applies every spec at once, then waits until each is HEALTHY: the
    executors start their replicas side by side."""
    for spec in specs:
        client.apply(spec, wait=False)
    for spec in specs:
        eventually_sync(
            lambda name=spec.name: _healthy_or_failed(client, name),
            f"{spec.name} to be HEALTHY",
            timeout_s=START_TIMEOUT_S,
        )


def _healthy_or_failed(client: ControlPlaneClient, name: str) -> bool:
    deployment = client.get(name)
    if deployment.state == cp.DEPLOYMENT_STATE_DEPLOY_FAILED:
        raise AssertionError(f"{name} failed to deploy: {deployment.message}")
    return deployment.state == cp.DEPLOYMENT_STATE_HEALTHY


def get(cluster: Cluster, path: str) -> httpx.Response:
    return httpx.get(cluster.http_url + path, timeout=30)


def answers_by_pid(cluster: Cluster, path: str, replicas: int) -> dict[int, dict]:
    """A Probe answer from each of `replicas` distinct processes behind
    `path`, asking until all have answered (routing is least-loaded, so
    sequential requests reach every replica soon)."""
    seen: dict[int, dict] = {}

    def all_answered() -> bool:
        response = get(cluster, path)
        if response.status_code == 200:
            answer = response.json()
            seen[answer["pid"]] = answer
        return len(seen) >= replicas

    eventually_sync(
        all_answered, f"{replicas} replicas to answer {path}", timeout_s=15, interval_s=0
    )
    assert len(seen) == replicas, f"more processes than replicas answered: {sorted(seen)}"
    return seen

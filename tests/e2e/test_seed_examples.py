"""Every code example of the Ray Serve deployment guides (shared/seeds), run on
Capstan with only the import changed (`from capstan import serve`) and
`ray.get(handle.remote())` written `handle.remote().result()`."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import httpx
import pytest

from tests.support.cluster import Cluster


def get(cluster: Cluster, path: str) -> httpx.Response:
    return httpx.get(cluster.http_url + path, timeout=30)


def replica_pids(serve, name: str, calls: int = 40) -> set[int]:
    """The pids answering a deployment's `pid` method, over enough calls to
    reach every replica."""
    handle = serve.get_deployment(name).get_handle()
    return {handle.pid.remote().result(timeout_s=30) for _ in range(calls)}


def test_creating_a_deployment(serve, cluster: Cluster) -> None:
    @serve.deployment
    class MyFirstDeployment:
        # Take the message to return as an argument to the constructor.
        def __init__(self, msg):
            self.msg = msg

        def __call__(self, request):
            return self.msg

        def other_method(self, arg):
            return self.msg

    MyFirstDeployment.deploy("Hello world!")

    assert get(cluster, "/MyFirstDeployment").text == "Hello world!"
    handle = MyFirstDeployment.get_handle()
    assert handle.other_method.remote("ignored").result() == "Hello world!"


def test_list_and_get_deployments(serve, cluster: Cluster) -> None:
    @serve.deployment
    def A(request):
        return "a"

    @serve.deployment
    class MyFirstDeployment:
        def __init__(self, msg):
            self.msg = msg

        def __call__(self, request):
            return self.msg

    A.deploy()
    MyFirstDeployment.deploy("Hello world!")

    listed = serve.list_deployments()
    assert set(listed) == {"A", "MyFirstDeployment"}
    assert repr(listed["A"]) == "Deployment(name=A,version=None,route_prefix=/A)"
    assert (
        repr(listed["MyFirstDeployment"])
        == "Deployment(name=MyFirstDeployment,version=None,route_prefix=/MyFirstDeployment)"
    )

    # Returns the same object as the original MyFirstDeployment object.
    # This can be used to redeploy, get a handle, etc.
    deployment = serve.get_deployment("MyFirstDeployment")
    assert deployment.get_handle().remote(None).result() == "Hello world!"
    deployment.options(num_replicas=2).deploy()
    assert get(cluster, "/MyFirstDeployment").text == "Hello world!"
    assert serve.get_deployment("MyFirstDeployment").num_replicas == 2


def test_exposing_a_deployment(serve, cluster: Cluster) -> None:
    @serve.deployment(name="http_deployment", route_prefix="/api")
    class HTTPDeployment:
        def __call__(self, request):
            return "Hello world!"

    HTTPDeployment.deploy()

    assert get(cluster, "/api").text == "Hello world!"
    assert get(cluster, "/api/sub/path").text == "Hello world!"
    assert get(cluster, "/apix").status_code == 404

    # To get a handle from the same script, use the Deployment object directly:
    handle = HTTPDeployment.get_handle()
    assert handle.remote().result() == "Hello world!"

    # To get a handle from a different script, reference it by name:
    script = textwrap.dedent(
        """
        from capstan import serve
        serve.start()
        handle = serve.get_deployment("http_deployment").get_handle()
        print(handle.remote().result())
        """
    )
    env = {**os.environ, "CAPSTAN_ADDRESS": cluster.address}
    output = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert output.returncode == 0, output.stderr
    assert output.stdout.strip() == "Hello world!"


def test_updating_without_version_redeploys(serve, cluster: Cluster) -> None:
    @serve.deployment(name="my_deployment", num_replicas=1)
    class SimpleDeployment:
        pass

    # Creates one initial replica.
    SimpleDeployment.deploy()
    assert _running(serve, "my_deployment") == 1

    # Re-deploys, creating an additional replica.
    @serve.deployment(name="my_deployment", num_replicas=2)
    class SimpleDeployment:
        def pid(self):
            return os.getpid()

    SimpleDeployment.deploy()
    assert _running(serve, "my_deployment") == 2
    first = replica_pids(serve, "my_deployment")

    # You can also use Deployment.options() to change options without redefining
    # the class. Without a version, every deploy is a new version: new replicas.
    SimpleDeployment.options(num_replicas=2).deploy()
    second = replica_pids(serve, "my_deployment")
    assert len(second) == 2
    assert first.isdisjoint(second)


def test_updating_with_version_is_a_no_op_until_it_changes(serve) -> None:
    @serve.deployment(name="versioned", version="1", num_replicas=2)
    class Versioned:
        def pid(self):
            return os.getpid()

    Versioned.deploy()
    first = replica_pids(serve, "versioned")
    assert len(first) == 2

    Versioned.deploy()  # same version: a no-op
    assert replica_pids(serve, "versioned") == first

    Versioned.options(num_replicas=3).deploy()  # same version: scales in place
    scaled = replica_pids(serve, "versioned", calls=60)
    assert len(scaled) == 3 and first <= scaled

    Versioned.options(version="2", num_replicas=3).deploy()  # new version: rolling update
    updated = replica_pids(serve, "versioned", calls=60)
    assert len(updated) == 3 and updated.isdisjoint(scaled)


def test_scaling_out_and_back(serve) -> None:
    # Create with a single replica.
    @serve.deployment(num_replicas=1, version="v")
    def func(*args):
        return os.getpid()

    func.deploy()
    assert _running(serve, "func") == 1

    # Scale up to 10 replicas.
    func.options(num_replicas=10).deploy()
    assert _running(serve, "func") == 10
    handle = func.get_handle()
    assert len({handle.remote().result() for _ in range(200)}) == 10

    # Scale back down to 1 replica.
    func.options(num_replicas=1).deploy()
    assert _running(serve, "func") == 1


def test_user_configuration(serve, cluster: Cluster) -> None:
    @serve.deployment(route_prefix="/threshold")
    class Threshold:
        def __init__(self):
            # self.model won't be changed by reconfigure.
            self.model = random.Random()  # Imagine this is some heavyweight model.

        def reconfigure(self, config):
            # This will be called when the class is created and when
            # the user_config field of BackendConfig is updated.
            self.threshold = config["threshold"]

        def __call__(self, request):
            return self.model.random() > self.threshold

    Threshold.options(user_config={"threshold": 0.01}, version="1").deploy()
    pids = replica_pids_of(serve, "Threshold")
    assert get(cluster, "/threshold").text == "true"  # true, probably (p = 0.99)

    Threshold.options(user_config={"threshold": 0.99}, version="1").deploy()
    answers = [get(cluster, "/threshold").text for _ in range(5)]
    assert answers.count("false") >= 4  # false, probably
    # Same version: reconfigured in place, not restarted.
    assert replica_pids_of(serve, "Threshold") == pids


def replica_pids_of(serve, name: str) -> set[str]:
    return {r.address for r in serve.connect().get(name).replicas}


def test_omp_num_threads_in_constructor(serve) -> None:
    @serve.deployment
    class MyDeployment:
        def __init__(self, parallelism):
            os.environ["OMP_NUM_THREADS"] = parallelism
            # Download model weights, initialize model, etc.

        def __call__(self):
            return os.environ["OMP_NUM_THREADS"]

    MyDeployment.deploy("12")
    assert MyDeployment.get_handle().remote().result() == "12"


def test_omp_num_threads_defaults_to_replica_cpus(serve) -> None:
    @serve.deployment
    def threads():
        return os.environ.get("OMP_NUM_THREADS")

    threads.deploy()
    assert threads.get_handle().remote().result() == "1"


def test_autoscaling_config_is_accepted(serve, cluster: Cluster) -> None:
    @serve.deployment(
        autoscaling_config={
            "min_replicas": 1,
            "max_replicas": 5,
            "target_num_ongoing_requests_per_replica": 10,
        }
    )
    def autoscaled(request):
        return "scaled"

    autoscaled.deploy()
    assert get(cluster, "/autoscaled").text == "scaled"
    assert _running(serve, "autoscaled") == 1


def test_delete(serve, cluster: Cluster) -> None:
    @serve.deployment
    def doomed(request):
        return "here"

    doomed.deploy()
    assert get(cluster, "/doomed").text == "here"
    doomed.delete()
    assert "doomed" not in serve.list_deployments()
    assert get(cluster, "/doomed").status_code == 404


def _running(serve, name: str) -> int:
    from capstan.v1 import controlplane_pb2 as cp

    replicas = serve.connect().get(name).replicas
    return sum(r.state == cp.REPLICA_STATE_RUNNING for r in replicas)


@pytest.fixture(autouse=True)
def _fresh_seed() -> None:
    random.seed(0)

"""What a user relies on beyond the seed examples: updates under load,
concurrency limits, composition, and bad input that is refused clearly."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest

import capstan
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import deployment_pb2 as pb
from tests.support.cluster import Cluster
from tests.support.load import HttpLoad


def test_rolling_update_under_load_fails_no_request(serve, cluster: Cluster) -> None:
    @serve.deployment(name="rolling", num_replicas=5, version="1")
    class Rolling:
        def __init__(self, tag):
            self.tag = tag

        def __call__(self, request):
            return self.tag

    Rolling.deploy("v1")
    with HttpLoad(cluster.http_url + "/rolling", threads=4) as load:
        Rolling.options(version="2").deploy("v2")
    load.assert_no_failure({"v1", "v2"})
    assert load.results.count("v1") > 0 and load.results.count("v2") > 0
    assert httpx.get(cluster.http_url + "/rolling").text == "v2"


def test_max_concurrent_queries_is_never_exceeded(serve) -> None:
    @serve.deployment(num_replicas=2, max_concurrent_queries=1)
    class Guarded:
        def __init__(self):
            self.active = 0
            self.peak = 0

        async def __call__(self):
            self.active += 1
            self.peak = max(self.peak, self.active)
            await asyncio.sleep(0.02)
            self.active -= 1
            return os.getpid()

        def report(self):
            return os.getpid(), self.peak

    Guarded.deploy()
    handle = Guarded.get_handle()
    responses = [handle.remote() for _ in range(60)]
    pids = {r.result(timeout_s=60) for r in responses}
    assert len(pids) == 2  # both replicas served
    peaks = dict(handle.report.remote().result() for _ in range(20))
    assert set(peaks) == pids
    assert max(peaks.values()) == 1


def test_handle_call_from_inside_a_replica(serve, cluster: Cluster) -> None:
    @serve.deployment
    class Model:
        def __call__(self, x):
            return x * 2

    @serve.deployment
    class Driver:
        def __init__(self, model):
            self.model = model

        async def __call__(self, request):
            doubled = await self.model.remote(int(request.query_params["x"]))
            by_name = capstan.serve.get_deployment_handle("Model")
            return {"doubled": doubled, "again": await by_name.remote(doubled)}

    Model.deploy()
    Driver.deploy(Model.get_handle())
    response = httpx.get(cluster.http_url + "/Driver?x=21", timeout=30)
    assert response.json() == {"doubled": 42, "again": 84}


def test_bind_and_run(serve) -> None:
    @serve.deployment
    class Adder:
        def __init__(self, amount):
            self.amount = amount

        def __call__(self, x):
            return x + self.amount

    @serve.deployment
    class Front:
        def __init__(self, adder):
            self.adder = adder

        async def __call__(self, x):
            return await self.adder.remote(x)

    handle = serve.run(Front.bind(Adder.bind(5)))
    assert handle.remote(1).result() == 6


def test_user_exception_is_500_over_http_and_raised_by_handle(serve, cluster: Cluster) -> None:
    @serve.deployment
    class Broken:
        def __call__(self, request=None):
            raise ValueError("no good")

    Broken.deploy()
    response = httpx.get(cluster.http_url + "/Broken", timeout=30)
    assert response.status_code == 500
    assert "no good" not in response.text and "Traceback" not in response.text
    with pytest.raises(capstan.UserCodeError, match="ValueError: no good"):
        Broken.get_handle().remote().result()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "bad name"}, "name 'bad name' must be"),
        ({"route_prefix": "api"}, 'route_prefix "api" must start with "/"'),
        ({"num_replicas": -1}, "num_replicas must be >= 0"),
        (
            {"num_replicas": 2, "autoscaling_config": {"min_replicas": 1, "max_replicas": 2}},
            "num_replicas and autoscaling_config cannot both be set",
        ),
        ({"user_config": {"a": object()}}, "user_config must be JSON-serialisable"),
        ({"max_concurrent_queries": 0}, "max_concurrent_queries must be >= 1"),
    ],
)
def test_malformed_spec_names_the_field(serve, options: dict, message: str) -> None:
    @serve.deployment
    def fine(request):
        return "ok"

    with pytest.raises(capstan.InvalidSpec, match=message):
        fine.options(**options).deploy()


def test_import_path_that_does_not_import(serve) -> None:
    spec = pb.DeploymentSpec(name="ghost", code=pb.Code(import_path="no_such_module:App"))
    with pytest.raises(capstan.DeployFailed, match="no_such_module"):
        serve.connect().apply(spec, wait=True)
    status = serve.connect().get("ghost")
    assert status.state == cp.DEPLOYMENT_STATE_DEPLOY_FAILED
    assert "no_such_module" in status.message


def test_constructor_that_raises_keeps_the_previous_version(serve, cluster: Cluster) -> None:
    @serve.deployment(name="fragile", version="1")
    class Fragile:
        def __init__(self, fail):
            if fail:
                raise RuntimeError("cannot load the model")

        def __call__(self, request):
            return "still serving"

    Fragile.deploy(False)
    with pytest.raises(capstan.DeployFailed, match="cannot load the model"):
        Fragile.options(version="2").deploy(True)
    assert httpx.get(cluster.http_url + "/fragile", timeout=30).text == "still serving"
    status = serve.connect().get("fragile")
    assert "cannot load the model" in status.message
    assert status.version == "1"


def test_reconfigure_that_raises_keeps_the_previous_config(serve, cluster: Cluster) -> None:
    @serve.deployment(name="picky", version="1")
    class Picky:
        def reconfigure(self, config):
            if config["level"] > 9:
                raise ValueError("level must be at most 9")
            self.level = config["level"]

        def __call__(self, request):
            return self.level

    Picky.options(user_config={"level": 3}).deploy()
    with pytest.raises(capstan.DeployFailed, match="level must be at most 9"):
        Picky.options(user_config={"level": 10}).deploy()
    assert httpx.get(cluster.http_url + "/picky", timeout=30).json() == 3


def test_prev_version_mismatch_changes_nothing(serve) -> None:
    @serve.deployment(name="guarded_update", version="a")
    def guarded_update(request):
        return "a"

    guarded_update.deploy()
    with pytest.raises(capstan.VersionConflict, match="prev_version"):
        guarded_update.options(version="b", prev_version="zzz").deploy()
    assert serve.get_deployment("guarded_update").version == "a"
    guarded_update.options(version="b", prev_version="a").deploy()
    assert serve.get_deployment("guarded_update").version == "b"


def test_unknown_deployment(serve, cluster: Cluster) -> None:
    with pytest.raises(capstan.NotFound, match="nowhere"):
        serve.get_deployment("nowhere")
    response = httpx.get(cluster.http_url + "/nowhere", timeout=30)
    assert response.status_code == 404 and "/-/routes" in response.text


def test_route_prefix_taken(serve) -> None:
    @serve.deployment(route_prefix="/shared")
    def first(request):
        return "first"

    first.deploy()
    with pytest.raises(capstan.AlreadyExists, match="/shared"):
        first.options(name="second").deploy()


def test_bad_input_loses_nothing(serve, cluster: Cluster) -> None:
    @serve.deployment
    def survivor(request):
        return "alive"

    survivor.deploy()
    for bad in ({"route_prefix": "x"}, {"num_replicas": -5}):
        with pytest.raises(capstan.InvalidSpec):
            survivor.options(**bad).deploy()
    spec = pb.DeploymentSpec(name="survivor", code=pb.Code(import_path="nope:x"))
    with pytest.raises(capstan.DeployFailed):
        serve.connect().apply(spec, wait=True)
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:  # every answer stays correct for a while
        assert httpx.get(cluster.http_url + "/survivor", timeout=30).text == "alive"
    assert "survivor" in serve.list_deployments()


def test_generators_stream_over_http_and_through_handles(serve, cluster: Cluster) -> None:
    @serve.deployment
    class Counter:
        def __call__(self, request):
            n = int(request.query_params["n"])
            return (f"{i}\n" for i in range(n))

        async def count(self, n):
            for i in range(n):
                yield i

    Counter.deploy()
    with httpx.stream("GET", cluster.http_url + "/Counter?n=4", timeout=30) as response:
        chunks = [chunk for chunk in response.iter_text() if chunk]
    assert "".join(chunks) == "0\n1\n2\n3\n"
    handle = Counter.get_handle().options(method_name="count", stream=True)
    assert list(handle.remote(5)) == [0, 1, 2, 3, 4]

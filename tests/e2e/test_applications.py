"""Ray Serve 2.x applications: serve.run(graph, name=...) deploys a named set
of deployments, one route for the ingress, replaced as a whole by the next
serve.run of that name and deleted as a whole (the shapes of Ray's docs:
managing deployments, key concepts, model composition)."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import httpx
import pytest

import capstan
from tests.support.cluster import Cluster
from tests.support.waiting import eventually_sync

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _names(serve) -> set[str]:
    return set(serve.list_deployments())


def test_run_serves_the_ingress_at_root_and_replaces_the_app(serve, cluster: Cluster) -> None:
    @serve.deployment(name="my_deployment", num_replicas=1)
    class SimpleDeployment:
        def __call__(self, request):
            return {"x": request.query_params.get("x")}

    handle = serve.run(SimpleDeployment.bind())
    assert httpx.get(cluster.http_url + "/?x=3", timeout=30).json() == {"x": "3"}
    assert handle.remote().result() == {"x": None}

    serve.run(SimpleDeployment.options(num_replicas=2).bind())
    status = serve.status().applications["default"]
    assert status.status == "RUNNING"
    assert status.deployments["my_deployment"].replica_states == {"RUNNING": 2}

    @serve.deployment
    def func(request):
        return "func"

    serve.run(func.bind())  # the same app name: my_deployment goes
    assert _names(serve) == {"default.func"}
    assert httpx.get(cluster.http_url + "/", timeout=30).text == "func"


def test_composition_routes_only_the_ingress(serve, cluster: Cluster) -> None:
    @serve.deployment
    class Adder:
        def __init__(self, increment: int):
            self.increment = increment

        def add(self, x: int) -> int:
            return x + self.increment

    @serve.deployment
    class Multiplier:
        def __init__(self, factor: int):
            self.factor = factor

        def multiply(self, x: int) -> int:
            return x * self.factor

    @serve.deployment
    class Ingress:
        def __init__(self, adder, multiplier):
            self.adder = adder
            self.multiplier = multiplier

        async def __call__(self, request) -> int:
            x = int(request.query_params["x"])
            # A response passed to another call is resolved first.
            return await self.multiplier.multiply.remote(self.adder.add.remote(x))

    app = Ingress.bind(Adder.bind(2), Multiplier.bind(3))
    serve.run(app, name="compose", route_prefix="/math")
    assert httpx.get(cluster.http_url + "/math?x=1", timeout=30).json() == 9
    assert httpx.get(cluster.http_url + "/Adder", timeout=30).status_code == 404

    adder = serve.get_deployment_handle("Adder", app_name="compose")
    assert adder.add.remote(5).result() == 7
    assert serve.get_app_handle("compose").remote is not None
    assert set(serve.status().applications["compose"].deployments) == {
        "Adder",
        "Multiplier",
        "Ingress",
    }

    serve.delete("compose")
    assert not {n for n in _names(serve) if n.startswith("compose.")}
    assert "compose" not in serve.status().applications
    with pytest.raises(capstan.NotFound):
        serve.get_app_handle("compose")


def test_same_deployment_in_two_apps(serve, cluster: Cluster) -> None:
    @serve.deployment
    class Echo:
        def __init__(self, word: str):
            self.word = word

        def __call__(self, request):
            return self.word

    serve.run(Echo.bind("a"), name="a", route_prefix="/a")
    serve.run(Echo.bind("b"), name="b", route_prefix="/b")
    assert httpx.get(cluster.http_url + "/a", timeout=30).text == "a"
    assert httpx.get(cluster.http_url + "/b", timeout=30).text == "b"
    with pytest.raises(capstan.AlreadyExists, match="route_prefix"):
        serve.run(Echo.bind("c"), name="c", route_prefix="/a")
    assert httpx.get(cluster.http_url + "/a", timeout=30).text == "a"


def test_one_x_deployment_beside_an_application(serve, cluster: Cluster) -> None:
    @serve.deployment(route_prefix="/legacy")
    class Legacy:
        def __call__(self, request):
            return "1.x"

    @serve.deployment
    class Modern:
        def __init__(self, legacy):
            self.legacy = legacy

        async def __call__(self, request):
            return "2.x+" + await self.legacy.remote()

    Legacy.deploy()
    serve.run(Modern.bind(Legacy.get_handle()), name="modern", route_prefix="/modern")
    assert httpx.get(cluster.http_url + "/legacy", timeout=30).text == "1.x"
    assert httpx.get(cluster.http_url + "/modern", timeout=30).text == "2.x+1.x"
    serve.delete("modern")
    assert httpx.get(cluster.http_url + "/legacy", timeout=30).text == "1.x"


def test_replica_context_names_app_deployment_and_replica(serve) -> None:
    @serve.deployment
    class Who:
        def __init__(self):
            self.seen_at_init = serve.get_replica_context().deployment

        def __call__(self):
            context = serve.get_replica_context()
            return [context.app_name, context.deployment, self.seen_at_init,
                    context.replica_id.unique_id]  # fmt: skip

    app_name, deployment, at_init, replica = serve.run(Who.bind(), name="who").remote().result()
    assert (app_name, deployment, at_init) == ("who", "Who", "Who")
    assert replica
    with pytest.raises(RuntimeError, match="within a deployment"):
        serve.get_replica_context()


def test_local_testing_mode_runs_the_graph_in_process() -> None:
    from capstan import serve

    @serve.deployment
    class Doubler:
        def double(self, x: int) -> int:
            return 2 * x

    @serve.deployment(user_config={"offset": 1})
    class Front:
        def __init__(self, doubler):
            self.doubler = doubler
            self.offset = 0

        def reconfigure(self, config):
            self.offset = config["offset"]

        async def __call__(self, x: int) -> int:
            return await self.doubler.double.remote(x) + self.offset

    handle = serve.run(Front.bind(Doubler.bind()), _local_testing_mode=True)
    assert handle.remote(20).result() == 41


def _capstan_run(cluster: Cluster, *argv: str, url: str, expect: str, cwd=None) -> None:
    """Runs `capstan run ...` against the cluster until `url` answers `expect`,
    then stops it as Ctrl-C does."""
    command = [sys.executable, "-m", "capstan", "--address", cluster.address, "run", *argv]
    env = {**os.environ, "CAPSTAN_HTTP_URL": cluster.http_url}
    process = subprocess.Popen(command, env=env, cwd=cwd or ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:

        def answered():
            if process.poll() is not None:
                raise AssertionError(f"capstan run exited: {process.stdout.read()}")
            try:
                return httpx.get(url, timeout=5).text == expect
            except httpx.HTTPError:
                return False

        eventually_sync(answered, f"{url} to answer {expect!r}", timeout_s=60)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        process.stdout.close()


def test_capstan_run_builder_with_arguments(serve, cluster: Cluster) -> None:
    _capstan_run(
        cluster, "tests.apps.builder:app_builder", "greeting=Howdy", "name=pardner",
        "--name", "built", "--route-prefix", "/built",
        url=cluster.http_url + "/built", expect="Howdy, pardner",
    )  # fmt: skip
    assert serve.status().applications["built"].status == "RUNNING"


def test_capstan_run_script_that_only_binds(serve, cluster: Cluster, tmp_path) -> None:
    script = tmp_path / "compose.py"
    script.write_text(
        "from capstan import serve\n"
        "from tests.apps.builder import Greeter, Greeting\n"
        "app = Greeter.bind(Greeting.bind('Hey'), 'script')\n"
    )
    _capstan_run(cluster, str(script), "--route-prefix", "/script",
                 url=cluster.http_url + "/script", expect="Hey, script")  # fmt: skip


def test_a_request_right_after_run_finds_the_route(serve, cluster: Cluster) -> None:
    @serve.deployment(ray_actor_options={"num_cpus": 0})
    def ping(request) -> str:
        return "pong"

    for i in range(8):  # each a new route the proxy has never seen
        serve.run(ping.bind(), name=f"ping{i}", route_prefix=f"/ping{i}")
        assert httpx.get(f"{cluster.http_url}/ping{i}", timeout=30).text == "pong"

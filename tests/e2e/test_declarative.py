"""Declarative deploys from Ray Serve config files, plans before changes,
and rollouts one can undo, through the CLI against a real local Capstan."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
import warnings

import httpx
import pytest
import yaml

import capstan
from tests.support.cluster import Cluster
from tests.support.load import HttpLoad
from tests.support.waiting import eventually_sync

APP_MODULE = """
import os

from capstan import serve


@serve.deployment
class Price:
    def __init__(self):
        self.markup = 0

    def reconfigure(self, config):
        self.markup = config["markup"]

    def price(self, item):
        return 10 + self.markup


@serve.deployment
class Shop:
    def __init__(self, price):
        self.price = price

    async def __call__(self, request):
        price = await self.price.price.remote("tea")
        return {"price": price, "region": os.environ.get("REGION")}


app = Shop.bind(Price.bind())


@serve.deployment
class Greeter:
    def __init__(self, greeting):
        self.greeting = greeting

    def __call__(self, request):
        return f"{self.greeting}, {os.environ.get('WHO', 'world')}"


def greeter_builder(args):
    return Greeter.bind(args["greeting"])
"""

# Ray Serve's documented format (`serve build` writes this shape); Ray's own
# schema accepts it, and Capstan deploys it unchanged.
CONFIG = """\
proxy_location: EveryNode
http_options:
  host: 0.0.0.0
  port: 8000
logging_config:
  encoding: TEXT
  log_level: INFO
applications:
- name: shop
  route_prefix: /shop
  import_path: shop_app:app
  runtime_env:
    working_dir: local://{folder}
    env_vars:
      REGION: eu
  deployments:
  - name: Shop
    num_replicas: 2
    max_ongoing_requests: 10
    ray_actor_options:
      num_cpus: 0.1
  - name: Price
    num_replicas: 1
    user_config:
      markup: 1
    ray_actor_options:
      num_cpus: 0.1
- name: greet
  route_prefix: /greet
  import_path: shop_app:greeter_builder
  args:
    greeting: hello
  runtime_env:
    working_dir: local://{folder}
    env_vars: {{WHO: capstan}}
  deployments:
  - name: Greeter
    ray_actor_options: {{num_cpus: 0.1}}
"""


def capstan_cli(cluster: Cluster, *argv: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "capstan", "--address", cluster.address, *argv]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def project(tmp_path: pathlib.Path) -> pathlib.Path:
    """Config files here; the code in app/, the working_dir, which ships as
    a whole (so the config files written here do not change it)."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "shop_app.py").write_text(APP_MODULE)
    (tmp_path / "app.yaml").write_text(CONFIG.format(folder=tmp_path / "app"))
    return tmp_path


def test_ray_serve_config_file_deploys_unchanged(serve, cluster: Cluster, project) -> None:
    with warnings.catch_warnings():  # Ray's own pydantic deprecations, not ours
        warnings.simplefilter("ignore")
        from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(yaml.safe_load((project / "app.yaml").read_text()))
    done = capstan_cli(cluster, "deploy", "app.yaml", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "proxy_location is a Ray option Capstan ignores" in done.stderr
    assert httpx.get(cluster.http_url + "/shop").json() == {"price": 11, "region": "eu"}
    assert httpx.get(cluster.http_url + "/greet").text == "hello, capstan"
    assert len(cluster.client().get("shop.Shop").replicas) == 2

    again = capstan_cli(cluster, "deploy", "--dry-run", "app.yaml", cwd=project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing would change" in again.stdout

    applied = yaml.safe_load(capstan_cli(cluster, "config", "shop", cwd=project).stdout)
    (shop,) = applied["applications"]
    assert shop["import_path"] == "shop_app:app" and shop["route_prefix"] == "/shop"
    by_name = {d["name"]: d for d in shop["deployments"]}
    assert by_name["Price"]["user_config"] == {"markup": 1}
    assert by_name["Shop"]["num_replicas"] == 2


def test_dry_run_of_an_edited_copy_shows_the_plan(serve, cluster: Cluster, project) -> None:
    assert capstan_cli(cluster, "deploy", "app.yaml", cwd=project).returncode == 0
    config = yaml.safe_load((project / "app.yaml").read_text())
    shop = config["applications"][0]
    shop["deployments"][0]["num_replicas"] = 3  # Shop: scale 2 -> 3
    shop["deployments"][1]["user_config"] = {"markup": 5}  # Price: reconfigure
    shop["runtime_env"]["env_vars"]["REGION"] = "us"  # every replica: new environment
    del config["applications"][1]  # greet: deleted
    (project / "edited.yaml").write_text(yaml.safe_dump(config))

    done = capstan_cli(cluster, "deploy", "--dry-run", "-o", "json", "edited.yaml", cwd=project)
    assert done.returncode == 2, done.stderr
    plan = json.loads(done.stdout)
    deployments = {d["id"]: d for app in plan["applications"] for d in app["deployments"]}
    assert deployments["shop.Shop"]["changes"] == ["PLAN_CHANGE_ROLL_OUT", "PLAN_CHANGE_SCALE"]
    assert deployments["shop.Shop"]["replicas_before"] == 2
    assert deployments["shop.Shop"]["replicas_after"] == 3
    assert deployments["shop.Shop"]["restarts"] == 2
    assert deployments["shop.Shop"]["is_surge"] is True
    assert deployments["shop.Price"]["changes"] == ["PLAN_CHANGE_ROLL_OUT"]
    assert "user_config" in deployments["shop.Price"]["changed_fields"]
    assert deployments["greet.Greeter"]["changes"] == ["PLAN_CHANGE_DELETE"]
    assert plan["is_unchanged"] is False
    # The plan changed nothing.
    assert httpx.get(cluster.http_url + "/greet").text == "hello, capstan"

    text = capstan_cli(cluster, "deploy", "--dry-run", "edited.yaml", cwd=project).stdout
    assert "scale 2 -> 3" in text and "- greet.Greeter  delete: 1 replica stop" in text

    # Only user_config and the count: in place, nothing restarts.
    shop["runtime_env"]["env_vars"]["REGION"] = "eu"
    (project / "edited.yaml").write_text(yaml.safe_dump(config))
    done = capstan_cli(cluster, "deploy", "--dry-run", "-o", "json", "edited.yaml", cwd=project)
    deployments = {
        d["id"]: d for a in json.loads(done.stdout)["applications"] for d in a["deployments"]
    }
    assert deployments["shop.Price"]["changes"] == ["PLAN_CHANGE_RECONFIGURE"]
    assert deployments["shop.Shop"]["changes"] == ["PLAN_CHANGE_SCALE"]
    assert deployments["shop.Shop"]["restarts"] == 0

    before = {r.id for r in cluster.client().get("shop.Price").replicas}
    done = capstan_cli(cluster, "deploy", "edited.yaml", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "the running code is kept" not in done.stderr  # the same code, imported by path
    assert httpx.get(cluster.http_url + "/shop").json()["price"] == 15
    assert {r.id for r in cluster.client().get("shop.Price").replicas} == before
    assert httpx.get(cluster.http_url + "/greet").status_code == 404  # declarative


def test_a_bad_file_names_line_and_field(serve, cluster: Cluster, project) -> None:
    text = (project / "app.yaml").read_text().replace("max_ongoing_requests", "max_ongoing")
    (project / "bad.yaml").write_text(text)
    done = capstan_cli(cluster, "deploy", "bad.yaml", cwd=project)
    line = text.splitlines().index("    max_ongoing: 10") + 1
    assert done.returncode == 1
    assert f"bad.yaml:{line}: applications[0].deployments[0].max_ongoing: Extra inputs" in (
        done.stderr
    )


def test_build_writes_a_file_deploy_takes(serve, cluster: Cluster, project) -> None:
    done = capstan_cli(cluster, "build", "shop_app:app", "-o", "../built.yaml", cwd=project / "app")
    assert done.returncode == 0, done.stderr
    built = yaml.safe_load((project / "built.yaml").read_text())
    assert built["applications"][0]["import_path"] == "shop_app:app"
    assert [d["name"] for d in built["applications"][0]["deployments"]] == ["Price", "Shop"]
    built["applications"][0]["runtime_env"] = {"working_dir": "app"}
    (project / "built.yaml").write_text(yaml.safe_dump(built))
    assert capstan_cli(cluster, "deploy", "built.yaml", cwd=project).returncode == 0
    assert httpx.get(cluster.http_url + "/").json()["price"] == 10


@pytest.mark.parametrize(
    ("actor_options", "expected"),
    [
        ({"num_gpus": 1}, "needs 1 GPU but no node of executor 'local'"),
        ({"num_cpus": 1000}, "declare more with executors.local.num_cpus"),
        ({"resources": {"tpu": 1}}, "declare more with executors.local.resources.tpu"),
    ],
)
def test_a_replica_that_can_never_fit_fails_at_once(serve, actor_options, expected) -> None:
    @serve.deployment(ray_actor_options=actor_options)
    def huge(request):
        return "never"

    started = time.monotonic()
    with pytest.raises(capstan.InvalidSpec, match="can never be placed") as raised:
        serve.run(huge.bind(), name="huge")
    assert expected in str(raised.value)
    assert time.monotonic() - started < 10
    assert "huge" not in serve.status().applications


def test_gpu_in_a_file_fails_before_anything_is_applied(serve, cluster: Cluster, project) -> None:
    text = (project / "app.yaml").read_text().replace("{num_cpus: 0.1}", "{num_gpus: 1}")
    (project / "gpu.yaml").write_text(text)
    done = capstan_cli(cluster, "deploy", "gpu.yaml", cwd=project)
    assert done.returncode == 1
    assert "executors.local.gpu_ids" in done.stderr and "(0 at most on one node" in done.stderr
    assert "shop" not in serve.status().applications


def test_scale_in_place_and_history(serve, cluster: Cluster, project) -> None:
    @serve.deployment(name="scaled", num_replicas=2)
    def scaled(request):
        return "ok"

    scaled.deploy()
    before = {r.id for r in cluster.client().get("scaled").replicas}
    done = capstan_cli(cluster, "scale", "scaled", "3", cwd=project)
    assert done.returncode == 0, done.stderr
    after = cluster.client().get("scaled")
    assert before < {r.id for r in after.replicas} and len(after.replicas) == 3
    history = capstan_cli(cluster, "history", "scaled", cwd=project).stdout.splitlines()
    assert len(history) == 2 and history[-1].endswith("3 replicas  (current)")

    @serve.deployment(name="auto", autoscaling_config={"min_replicas": 1, "max_replicas": 2})
    def auto(request):
        return "ok"

    auto.deploy()
    done = capstan_cli(cluster, "scale", "auto", "2", cwd=project)
    assert done.returncode == 1 and "is autoscaled" in done.stderr


def test_surge_rollout_keeps_two_routable_replicas(serve, cluster: Cluster) -> None:
    @serve.deployment(name="surge", num_replicas=2, version="1")
    class Surge:
        def __init__(self, tag):
            self.tag = tag

        def __call__(self, request):
            return self.tag

    Surge.deploy("v1")
    with (
        _RouteWatch(cluster, "surge") as routes,
        HttpLoad(cluster.http_url + "/surge", threads=2) as load,
    ):
        eventually_sync(lambda: routes.counts and load.results, what="load and routes")
        Surge.options(version="2").deploy("v2")
        eventually_sync(lambda: load.results[-1] == "v2", what="v2 answering")
    assert min(routes.counts) >= 2, routes.counts
    load.assert_no_failure({"v1", "v2"})


def test_rollback_after_a_bad_rollout_under_load(serve, cluster: Cluster, project) -> None:
    @serve.deployment(name="answer", num_replicas=2, version="good")
    class Answer:
        def __init__(self, tag):
            self.tag = tag

        def __call__(self, request):
            return self.tag

    Answer.deploy("right")
    Answer.options(version="bad").deploy("wrong")
    with HttpLoad(cluster.http_url + "/answer", threads=2) as load:
        eventually_sync(lambda: load.results, what="load")
        done = capstan_cli(cluster, "rollback", "answer", cwd=project)
        assert done.returncode == 0, done.stderr
        assert "rolled back to version good" in done.stdout
        eventually_sync(lambda: load.results[-1] == "right", what="the good version answering")
    load.assert_no_failure({"right", "wrong"})
    assert cluster.client().get("answer").version == "good"
    assert httpx.get(cluster.http_url + "/answer").text == "right"


class _RouteWatch:
    """Follows the route table the proxies route with (WatchRoutes) and
    records how many replicas `name` has in each revision."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        import threading

        import grpc

        from capstan.v1 import controlplane_pb2 as cp
        from capstan.v1 import controlplane_pb2_grpc

        self._channel = grpc.insecure_channel(cluster.address)
        stub = controlplane_pb2_grpc.ControlPlaneServiceStub(self._channel)
        self._stream = stub.WatchRoutes(cp.WatchRoutesRequest())
        self._name = name
        self.counts: list[int] = []
        self._thread = threading.Thread(target=self._follow)

    def _follow(self) -> None:
        import grpc

        try:
            for table in self._stream:
                for endpoint in table.endpoints:
                    if endpoint.name == self._name:
                        self.counts.append(len(endpoint.replicas))
        except grpc.RpcError:
            pass  # cancelled when the block ends

    def __enter__(self) -> _RouteWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.cancel()
        self._thread.join(timeout=10)
        self._channel.close()

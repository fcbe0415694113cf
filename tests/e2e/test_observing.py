"""What an operator watches, against a real local Capstan: the event stream,
`capstan status` as text, JSON and YAML, `capstan logs`, and the CLI's
one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from capstan.errors import NotFound, Unavailable
from tests.support.cluster import Cluster
from tests.support.ports import free_ports

pytestmark = pytest.mark.timeout(90)


def capstan(cluster: Cluster, *args: str, timeout_s: float = 30) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "capstan", "--address", cluster.address, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture
def talker(serve):
    @serve.deployment(name="talker", num_replicas=2, version="v1")
    class Talker:
        def __init__(self) -> None:
            print("talker constructed", flush=True)

        def __call__(self, request) -> str:
            print(f"talker answered {request.url.path}", flush=True)
            return "said"

    Talker.deploy()
    return Talker


def test_events_tell_the_rollout(talker, cluster: Cluster) -> None:
    client = cluster.client()
    events = list(client.watch_events(deployment="talker", backlog=50, follow=False))
    kinds = [e.kind for e in events]
    assert kinds.count("started") == 2 and "applied" in kinds, kinds
    assert all(e.deployment == "talker" for e in events)
    assert [e.id for e in events] == sorted(e.id for e in events)
    # Resuming from a cursor sends only what came after it.
    stream = client.watch_events(deployment="talker", after_id=events[-1].id)
    talker.options(num_replicas=1).deploy()
    later = next(stream)
    assert later.id > events[-1].id and later.deployment == "talker"
    stream.close()


def test_status_as_json_and_yaml(talker, cluster: Cluster) -> None:
    as_json = json.loads(capstan(cluster, "status", "-o", "json").stdout)
    [deployment] = [d for d in as_json["deployments"] if d["id"] == "talker"]
    assert deployment["version"] == "v1" and len(deployment["replicas"]) == 2
    assert "sdk_object" not in deployment["spec"].get("code", {})
    as_yaml = yaml.safe_load(capstan(cluster, "status", "talker", "-o", "yaml").stdout)
    assert as_yaml["deployments"][0]["state"] == "DEPLOYMENT_STATE_HEALTHY"


def test_status_and_run_print_the_real_urls(talker, cluster: Cluster) -> None:
    first = capstan(cluster, "status").stdout.splitlines()[0]
    assert f"HTTP {cluster.http_url}" in first and f"dashboard {cluster.metrics_url}/" in first
    info = cluster.client().server_info()
    assert (info.proxy_url, info.metrics_url) == (cluster.http_url, cluster.metrics_url)


def test_status_piped_to_head_is_quiet(talker, cluster: Cluster) -> None:
    command = f"{sys.executable} -m capstan --address {cluster.address} status | head -c 1"
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30)
    assert done.stderr == ""


def test_logs_show_each_replicas_output(talker, cluster: Cluster) -> None:
    client = cluster.client()
    lines = [(r.replica, r.line) for r in client.stream_logs("talker")]
    constructed = {replica for replica, line in lines if line == "talker constructed"}
    assert len(constructed) == 2
    one = sorted(constructed)[0]
    done = capstan(cluster, "logs", "talker", "--replica", one)
    assert "talker constructed" in done.stdout.splitlines()
    with pytest.raises(NotFound, match='no replica "nope"'):
        list(client.stream_logs("talker", replica="nope"))


def test_logs_follow_new_lines(talker, cluster: Cluster) -> None:
    import httpx

    follow = cluster.client().stream_logs("talker", follow=True)
    httpx.get(f"{cluster.http_url}/talker/followed", timeout=10)
    for reply in follow:
        if reply.line == "talker answered /talker/followed":
            break
    follow.close()


def test_cli_errors_are_one_line_that_say_what_to_do(cluster: Cluster) -> None:
    [port] = free_ports(1)
    nothing = subprocess.run(
        [sys.executable, "-m", "capstan", "--address", f"127.0.0.1:{port}", "status"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert nothing.returncode == 1
    assert nothing.stderr.strip().count("\n") == 0
    assert "start one with `capstan start`" in nothing.stderr
    other = subprocess.run(  # the proxy's DataPlane: gRPC, but not a control plane
        [sys.executable, "-m", "capstan", "--address", cluster.grpc_address, "status"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "is not a Capstan control plane" in other.stderr, other.stderr
    with pytest.raises(Unavailable):
        cluster.client().__class__(f"127.0.0.1:{port}").list()
    assert capstan(cluster, "--version").stdout.startswith("capstan ")


@pytest.mark.parametrize(
    ("config", "named"),
    [("executors:\n  local: {num_cpus: many}\n", "executors.local.num_cpus"),
     ("executors: [1\n", "line 1")],
)  # fmt: skip
def test_a_bad_config_is_one_line_naming_the_key(tmp_path, config: str, named: str) -> None:
    path = tmp_path / "capstan.yaml"
    path.write_text(config)
    ports = [str(p) for p in free_ports(4)]
    done = subprocess.run(
        [sys.executable, "-m", "capstan", "--address", f"127.0.0.1:{ports[0]}", "start",
         "--state-dir", str(tmp_path / "state"), "--http-port", ports[1], "--grpc-port",
         ports[2], "--metrics-port", ports[3], "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and named in done.stderr, done.stderr


def test_a_waiting_deploy_says_why_within_two_seconds(serve, cluster: Cluster) -> None:
    import io
    import time

    from capstan import progress
    from capstan.errors import DeadlineExceeded

    # Two replicas of 40 CPUs on a node of 64: the second waits for capacity.
    @serve.deployment(name="greedy", num_replicas=2, ray_actor_options={"num_cpus": 40})
    def greedy(request) -> str:
        return "mine"

    client = cluster.client()
    out = io.StringIO()
    started = time.monotonic()
    with (
        progress.reporting(client, deployment="greedy", out=out),
        pytest.raises(DeadlineExceeded),
    ):
        client.apply(greedy.to_spec(), wait=True, timeout_s=2.5)
    elapsed = time.monotonic() - started
    pending = [line for line in out.getvalue().splitlines() if "pending:" in line]
    assert pending and "CPU" in pending[0], out.getvalue()
    assert elapsed < 4.0


def test_tracebacks_name_the_users_file_and_line(serve, cluster: Cluster) -> None:
    import httpx

    @serve.deployment(name="raiser")
    def raiser(request) -> str:
        raise RuntimeError("raised on purpose")  # the line the traceback names

    raiser.deploy()
    assert httpx.get(f"{cluster.http_url}/raiser", timeout=10).status_code == 500
    line = raiser.func_or_class.__code__.co_firstlineno + 2
    where = f'File "{__file__}", line {line}, in raiser'

    def logged() -> bool:
        return any(where in reply.line for reply in cluster.client().stream_logs("raiser"))

    from tests.support.waiting import eventually_sync

    eventually_sync(logged, "the traceback in the replica's log", timeout_s=10)

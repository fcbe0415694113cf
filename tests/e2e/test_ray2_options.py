"""Ray Serve 2.x names and behaviours beyond applications: request ids,
2.x options (num_replicas="auto", logging_config, typo suggestions) and the
seed's rule that an unchanged version is not redeployed."""

from __future__ import annotations

import json
import logging
import pathlib
import subprocess
import sys

import httpx
import pytest

import capstan
from tests.support.cluster import Cluster
from tests.support.waiting import eventually_sync


def test_responses_carry_a_request_id(serve, cluster: Cluster) -> None:
    @serve.deployment
    class Seen:
        def __call__(self, request):
            return request.headers.get("x-request-id", "")

    serve.run(Seen.bind(), name="ids", route_prefix="/ids")
    made = httpx.get(cluster.http_url + "/ids", timeout=30)
    assert len(made.headers["x-request-id"]) == 32
    assert made.text == made.headers["x-request-id"]  # the replica saw the same id
    given = httpx.get(cluster.http_url + "/ids", headers={"X-Request-ID": "abc-1"}, timeout=30)
    assert given.headers["x-request-id"] == "abc-1" and given.text == "abc-1"
    missing = httpx.get(cluster.http_url + "/ids/x/../../nothing-here", timeout=30)
    assert missing.status_code == 404


def test_num_replicas_auto_is_autoscaling_with_ray_defaults(serve) -> None:
    @serve.deployment(num_replicas="auto")
    def auto(request):
        return "ok"

    serve.run(auto.bind(), name="auto", route_prefix="/auto")
    spec = serve.connect().get("auto.auto").spec
    assert (spec.autoscaling_config.min_replicas, spec.autoscaling_config.max_replicas) == (1, 100)
    assert spec.autoscaling_config.target_num_ongoing_requests_per_replica == 2


def test_unknown_options_suggest_the_close_match(serve) -> None:
    with pytest.raises(capstan.InvalidSpec, match="did you mean 'max_ongoing_requests'"):

        @serve.deployment(max_ongoing_request=5)
        def typo(request):
            return "never"

    with pytest.raises(capstan.InvalidSpec, match="did you mean 'upscale_delay_s'"):

        @serve.deployment(autoscaling_config={"upscale_delay": 1})
        def typo2(request):
            return "never"

        typo2.to_spec()


def test_max_ongoing_requests_is_the_2x_name(serve) -> None:
    @serve.deployment(max_ongoing_requests=3, max_queued_requests=7)
    def bounded(request):
        return "ok"

    serve.run(bounded.bind(), name="bounded", route_prefix="/bounded")
    spec = serve.connect().get("bounded.bounded").spec
    assert (spec.max_concurrent_queries, spec.max_queued_requests) == (3, 7)


def test_logging_config_json_lines(serve, cluster: Cluster) -> None:
    @serve.deployment(logging_config={"encoding": "JSON", "log_level": "DEBUG"})
    class Chatty:
        def __call__(self, request):
            logging.getLogger("user.code").debug("debug from user code")
            return serve.get_replica_context().replica_id.unique_id

    with pytest.raises(capstan.InvalidSpec, match="log_level"):
        Chatty.options(logging_config={"log_level": "LOUD"})
    serve.run(Chatty.bind(), name="chatty", route_prefix="/chatty")
    replica = httpx.get(cluster.http_url + "/chatty", timeout=30).text

    def logged():
        logs = list(cluster.state_dir.rglob(f"{replica}.log"))
        lines = logs[0].read_text().splitlines() if logs else []
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in entries if e["message"] == "debug from user code"]

    [entry] = eventually_sync(logged, "the user's debug line in the replica log", timeout_s=10)
    assert entry["levelname"] == "DEBUG" and entry["deployment"] == "Chatty"


def test_logging_config_attrs_logs_dir_and_no_access_lines(
    serve, cluster: Cluster, tmp_path: pathlib.Path
) -> None:
    logging_config = {
        "encoding": "JSON",
        "additional_log_standard_attrs": ["funcName", "lineno"],
        "enable_access_log": False,
        "logs_dir": str(tmp_path),
    }

    @serve.deployment(logging_config=logging_config)
    class Quiet:
        def __call__(self, request):
            logging.getLogger("user.code").info("quiet answered")
            return serve.get_replica_context().replica_id.unique_id

    handle = serve.run(Quiet.bind(), name="quiet", route_prefix="/quiet")
    replica = httpx.get(cluster.http_url + "/quiet", timeout=30).text
    assert handle.remote().result() == replica  # a handle call too

    def answered(lines: list[str]) -> list[dict]:
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in entries if e["message"] == "quiet answered"]

    def in_logs_dir() -> list[str] | None:
        files = list(tmp_path.glob(f"replica_*_{replica}.log"))
        lines = files[0].read_text().splitlines() if files else []
        return lines if len(answered(lines)) == 2 else None

    lines = eventually_sync(in_logs_dir, "both answers in the logs_dir file", timeout_s=10)
    shown = [r.line for r in cluster.client().stream_logs("quiet.Quiet", replica=replica)]
    for where in (lines, shown):
        entries = answered(where)
        assert len(entries) == 2, where
        assert all(e["funcName"] == "__call__" and e["lineno"] > 0 for e in entries)
        assert not [line for line in where if "capstan.replica.access" in line], where


def test_access_lines_when_enabled(serve, cluster: Cluster) -> None:
    @serve.deployment(logging_config={"encoding": "JSON", "enable_access_log": True})
    class Loud:
        def __call__(self, request):
            return "ok"

    serve.run(Loud.bind(), name="loud", route_prefix="/loud")
    headers = {"X-Request-ID": "loud-1"}
    httpx.get(cluster.http_url + "/loud/x", headers=headers, timeout=30).raise_for_status()

    def access_lines() -> list[dict]:
        lines = [r.line for r in cluster.client().stream_logs("loud.Loud")]
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in entries if e["name"] == "capstan.replica.access"]

    [entry] = eventually_sync(access_lines, "the access line of GET /loud/x", timeout_s=10)
    assert entry["message"].startswith("GET /loud/x [loud-1] 200 ")


def test_unchanged_version_keeps_the_running_code(serve) -> None:
    @serve.deployment(name="versioned", version="1")
    def first(request):
        return "first"

    first.deploy()
    before = {r.id for r in serve.connect().get("versioned").replicas}

    @serve.deployment(name="versioned", version="1")
    def second(request):
        return "second"

    reply = serve.connect().apply(second.to_spec())  # what second.deploy() sends
    [warning] = reply.warnings
    assert 'version "1" is unchanged' in warning and "running code is kept" in warning
    assert second.get_handle().remote().result() == "first"
    assert {r.id for r in serve.connect().get("versioned").replicas} == before


_STABLE_SCRIPT = """
import sys
from capstan import serve

@serve.deployment(name="stable", version="1")
class Stable:
    def __call__(self, request):
        return "same code"

serve.start(address=sys.argv[1])
print(len(serve.connect().apply(Stable.to_spec()).warnings))
"""


def test_rerunning_a_script_with_the_same_version_is_quiet(serve, cluster: Cluster, tmp_path):
    """Pickles of one class differ from process to process; an unchanged
    script with an unchanged version must neither warn nor restart."""
    script = tmp_path / "stable.py"
    script.write_text(_STABLE_SCRIPT)
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, str(script), cluster.address],
                              capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
        runs.append(
            (done.stdout.split()[-1], {r.id for r in serve.connect().get("stable").replicas})
        )
    assert runs[0] == ("0", runs[1][1]) and runs[1][0] == "0"

"""The Ruby client (clients/ruby, generated from protos/ with Debian's
ruby-grpc-tools) against a real Capstan, with no Python on the client's side:
one Ruby program writes a Python module, uploads it as a package, deploys it,
calls it through the DataPlane (unary and streaming) and over HTTP, scales it,
decodes a structured INVALID_ARGUMENT and deletes it."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

from tests.support.cluster import Cluster

pytestmark = pytest.mark.timeout(180)

RUBY = pathlib.Path(__file__).resolve().parents[2] / "clients" / "ruby"


def test_ruby_client_ships_code_and_uses_it(cluster: Cluster) -> None:
    command = ["ruby", "-I", str(RUBY / "lib"), "-I", str(RUBY / "examples")]
    command += [str(RUBY / "examples" / "deploy_greeter.rb")]
    command += [cluster.address, cluster.grpc_address, cluster.http_url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["package_uri"].startswith("capstan-package://")
    assert seen["again_already_stored"] is True
    assert seen["applied_state"] == "DEPLOYMENT_STATE_HEALTHY"
    assert seen["result"] == "Hello, Ada?"
    assert seen["streamed"] == ["A", "d", "a"]
    assert seen["http"] == [200, {"greeting": "Hello, Ada!"}]
    assert seen["scaled_running"] == 2
    invalid = seen["invalid"]
    assert invalid["code"] == "INVALID_ARGUMENT", invalid
    assert invalid["error_info"]["domain"] == "capstan.v1"
    assert invalid["error_info"]["reason"] == "INVALID_SPEC"
    assert [v["field"] for v in invalid["field_violations"]] == ["replica_options.num_cpus"]
    assert "ruby_greeter" not in seen["after_delete"]

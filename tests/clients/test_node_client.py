"""The Node client (issue 10), with no Python on its side: clients/node/
example.mjs packs and uploads a folder, deploys it, calls it through the
DataPlane and over HTTP, scales it, reads a structured error and deletes it,
against a real Capstan. Its TypeScript types check."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess

import pytest

from tests.support.cluster import Cluster

NODE_CLIENT = pathlib.Path(__file__).resolve().parents[2] / "clients" / "node"

pytestmark = pytest.mark.timeout(180)


def test_node_client_ships_deploys_calls_scales_and_deletes(cluster: Cluster) -> None:
    command = ["node", "example.mjs", cluster.address, cluster.grpc_address, cluster.http_url]
    done = subprocess.run(command, cwd=NODE_CLIENT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, f"{done.stderr}\n{cluster.log()}"
    seen = json.loads(done.stdout)
    assert re.fullmatch(r"capstan-package://[0-9a-f]{64}", seen["package_uri"])
    assert seen["applied_replicas"] == 1
    assert seen["init_args"] == ["Hi"]
    assert seen["result"] == "Hi, Ada?"
    assert seen["streamed"] == ["A", "d", "a"]
    assert seen["http"] == {"status": 200, "body": {"greeting": "Hi, Grace!"}}
    assert seen["scaled_running"] == 2
    invalid = seen["invalid"]
    assert (invalid["code"], invalid["reason"]) == ("INVALID_ARGUMENT", "INVALID_SPEC")
    assert invalid["fields"] == ["replica_options.num_cpus"]
    assert "replica_options.num_cpus" in invalid["message"]
    assert (seen["unknown"]["code"], seen["unknown"]["reason"]) == ("NOT_FOUND", "NOT_FOUND")
    assert seen["deleted"] is True
    assert "node_greeter" not in seen["after_delete"]


def test_typescript_types_check_the_example() -> None:
    """tsc (checkJs, noEmit) reads example.mjs against the generated .d.ts
    files: a wrong field name, oneof case or enum would fail here."""
    tsc = NODE_CLIENT / "node_modules" / ".bin" / "tsc"
    command = [str(tsc), "-p", "."]
    done = subprocess.run(command, cwd=NODE_CLIENT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

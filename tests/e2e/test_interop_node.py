"""Generated clients in any language work: a Node client built from protos/
deploys, lists, calls and deletes, with no Python in the loop."""

from __future__ import annotations

import json
import pathlib
import subprocess

from tests.support.cluster import Cluster

CLIENT = pathlib.Path(__file__).parent.parent / "interop" / "client.mjs"


def test_node_client_deploys_and_calls(cluster: Cluster) -> None:
    result = subprocess.run(
        ["node", str(CLIENT), cluster.address, cluster.grpc_address],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["applied_state"] == "DEPLOYMENT_STATE_HEALTHY"
    assert ["node_greeter", 2] in seen["listed"]
    assert seen["init_args"] == ["Hi"]
    assert seen["result"] == "Hi, Ada?"
    assert seen["unknown"][0] == "NOT_FOUND" and "no_such_deployment" in seen["unknown"][1]
    assert seen["invalid"][0] == "INVALID_ARGUMENT" and "name" in seen["invalid"][1]
    assert "node_greeter" not in seen["after_delete"]

"""The Go client (clients/go), generated from protos/ with Debian's
protoc-gen-go and protoc-gen-go-grpc, deploys Python code with no Python on
the caller's side: its example program writes a folder, zips and uploads it,
deploys it, calls it through the DataPlane and over HTTP, scales it, reads a
structured error and deletes it.

The program is built offline in GOPATH mode against Debian's Go sources in
/usr/share/gocode (clients/go/README.md); scripts/test.sh installs them. A
cold build takes 10-13 s on this 2-CPU machine, so it is built once, with
its build cache in the session's temp folder."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import pytest

from tests.support.cluster import Cluster

GO_CLIENT = pathlib.Path(__file__).resolve().parents[2] / "clients" / "go"
DEBIAN_GOPATH = "/usr/share/gocode"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """clients/go/example, built; its module path, from go.mod, is where it
    sits in a GOPATH of its own (a link to clients/go)."""
    assert shutil.which("go"), "no Go toolchain: run scripts/test.sh (it installs golang-go)"
    root = tmp_path_factory.mktemp("go")
    module = (GO_CLIENT / "go.mod").read_text().split()[1]
    link = root / "src" / module
    link.parent.mkdir(parents=True)
    link.symlink_to(GO_CLIENT)
    binary = root / "example"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{root}:{DEBIAN_GOPATH}",
        "GOCACHE": str(root / "cache"),
        "GOFLAGS": "",
    }
    command = ["go", "build", "-o", str(binary), f"{module}/example"]
    built = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert built.returncode == 0, f"go build failed (run scripts/test.sh):\n{built.stderr}"
    return binary


def test_go_client_ships_deploys_calls_scales_and_deletes(
    example: pathlib.Path, cluster: Cluster
) -> None:
    command = [str(example), "-control", cluster.address, "-dataplane", cluster.grpc_address]
    command += ["-http", cluster.http_url, "-name", "go_greeter"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, f"{done.stderr}\n{cluster.log()}"
    seen = json.loads(done.stdout)

    assert seen["package_uri"].startswith("capstan-package://")
    assert seen["applied_state"] == "DEPLOYMENT_STATE_HEALTHY"
    assert seen["result"] == "Hello, Ada?"
    assert seen["stream"] == [{"i": i, "square": i * i} for i in range(3)]
    assert seen["http"] == {"greeting": "Hello, Grace!", "path": "/go_greeter"}
    assert seen["scaled_replicas"] == 2
    invalid = seen["invalid"]
    assert (invalid["code"], invalid["domain"]) == ("InvalidArgument", "capstan.v1")
    assert invalid["reason"] == "INVALID_SPEC"
    assert [v["field"] for v in invalid["field_violations"]] == ["replica_options.num_cpus"]
    assert seen["after_delete"] == "NotFound"

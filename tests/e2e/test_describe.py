"""DescribeDeployment against a real local Capstan: what a deployment answers,
asked over real gRPC, shown true by calling a listed streaming method through
the DataPlane; `capstan describe`; and the NOT_FOUND and UNAVAILABLE cases."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest
from fastapi import FastAPI
from google.protobuf import json_format, struct_pb2

from capstan.errors import NotFound, Unavailable
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import controlplane_pb2_grpc, dataplane_pb2, dataplane_pb2_grpc, deployment_pb2
from tests.support.cluster import Cluster

pytestmark = pytest.mark.timeout(120)

APP = "describe_app"
DEPLOYMENT = f"{APP}.Described"


@pytest.fixture
def described(serve) -> str:
    @serve.deployment
    class Described:
        def __call__(self, name: str) -> str:
            """Greets someone.

            More lines that the summary leaves out."""
            return f"hello {name}"

        def add(self, a: int, b: int = 1) -> int:
            return a + b

        def count(self, n: int):
            """Counts from 0 to n - 1."""
            yield from range(n)

    serve.run(Described.bind(), name=APP, route_prefix=None)
    return DEPLOYMENT


def describe(cluster: Cluster, name: str) -> cp.DescribeDeploymentResponse:
    """DescribeDeployment as any gRPC client makes it: a generated stub."""
    with grpc.insecure_channel(cluster.address) as channel:
        stub = controlplane_pb2_grpc.ControlPlaneServiceStub(channel)
        return stub.DescribeDeployment(cp.DescribeDeploymentRequest(name=name), timeout=30)


def call_stream(cluster: Cluster, deployment: str, method: str, *args: object) -> list[object]:
    arguments = deployment_pb2.Arguments(args=struct_pb2.ListValue())
    arguments.args.extend(args)
    request = dataplane_pb2.CallStreamRequest(
        deployment=deployment, method_name=method, arguments=arguments
    )
    with grpc.insecure_channel(cluster.grpc_address) as channel:
        replies = dataplane_pb2_grpc.DataPlaneServiceStub(channel).CallStream(request, timeout=30)
        return [json_format.MessageToDict(reply.item) for reply in replies]


def capstan(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "capstan", "--address", cluster.address, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def test_describe_lists_what_the_dataplane_answers(described: str, cluster: Cluster) -> None:
    reply = describe(cluster, described)
    assert (reply.id, reply.serves_http) == (described, False)
    methods = {
        m.name: (m.is_streaming, list(m.parameters), m.summary) for m in reply.callable_methods
    }
    assert methods == {
        "__call__": (False, ["name"], "Greets someone."),
        "add": (False, ["a", "b"], ""),
        "count": (True, ["n"], "Counts from 0 to n - 1."),
    }
    [streaming] = [m.name for m in reply.callable_methods if m.is_streaming]
    assert call_stream(cluster, described, streaming, 3) == [0, 1, 2]


def test_cli_describes_as_text_and_json(described: str, cluster: Cluster) -> None:
    text = capstan(cluster, "describe", described)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == [
        described,
        "  __call__(name)  — Greets someone.",
        "  add(a, b)",
        "  count(n)  streams  — Counts from 0 to n - 1.",
    ]
    document = json.loads(capstan(cluster, "describe", described, "-o", "json").stdout)
    assert document["id"] == described and document["serves_http"] is False
    assert document["callable_methods"][2] == {
        "name": "count",
        "is_streaming": True,
        "parameters": ["n"],
        "summary": "Counts from 0 to n - 1.",
    }


def test_an_ingress_serves_http_and_lists_no_routes(serve, cluster: Cluster) -> None:
    api = FastAPI()

    @serve.deployment
    @serve.ingress(api)
    class Api:
        @api.get("/hello")
        def hello(self) -> str:
            return "hello"

        def reload(self) -> None:
            """Not a route."""

    serve.run(Api.bind(), name="describe_api", route_prefix="/describe-api")
    reply = describe(cluster, "describe_api.Api")
    assert reply.serves_http is True
    assert [(m.name, m.summary) for m in reply.callable_methods] == [("reload", "Not a route.")]


def test_unknown_deployment_is_not_found(serve, cluster: Cluster) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        describe(cluster, "nobody")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == 'deployment "nobody" not found'
    with pytest.raises(NotFound):
        cluster.client().describe_deployment("nobody")


def test_deployment_scaled_to_zero_is_unavailable(described: str, cluster: Cluster) -> None:
    client = cluster.client()
    client.scale(described, 0)
    with pytest.raises(grpc.RpcError) as caught:
        describe(cluster, described)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f'deployment "{described}" has no running replica' in caught.value.details()
    with pytest.raises(Unavailable, match=described):
        client.describe_deployment(described)
    refused = capstan(cluster, "describe", described)
    assert refused.returncode == 1 and refused.stderr.startswith("capstan: ")

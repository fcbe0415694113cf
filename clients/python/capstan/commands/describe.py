"""`capstan describe NAME`: the methods a deployment answers, each with its
parameters and whether it streams, as one of its running replicas reports
them (the code is only known where it is loaded)."""

from __future__ import annotations

import argparse
import json

from google.protobuf import json_format

from capstan.client import ControlPlaneClient
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import deployment_pb2


def register(commands: argparse._SubParsersAction) -> None:
    describe = commands.add_parser("describe", help="list the methods a deployment answers")
    describe.add_argument("name", help='a deployment ("app.Name" for one of an application)')
    describe.add_argument(
        "-o", "--output", choices=("text", "json"), default="text",
        help="text for people (default), json for programs",
    )  # fmt: skip
    describe.set_defaults(command=run)


def run(args: argparse.Namespace) -> None:
    reply = ControlPlaneClient(args.address).describe_deployment(args.name)
    print(render(reply, args.output))


def render(reply: cp.DescribeDeploymentResponse, output: str) -> str:
    """The description as text or as the API's JSON (every field present)."""
    if output == "json":
        document = json_format.MessageToDict(
            reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        return json.dumps(document, indent=2)
    lines = [reply.id + ("  (serves HTTP at its route prefix)" if reply.serves_http else "")]
    lines += [f"  {_signature(method)}" for method in reply.callable_methods] or ["  (no methods)"]
    return "\n".join(lines)


def _signature(method: deployment_pb2.MethodDescription) -> str:
    line = f"{method.name}({', '.join(method.parameters)})"
    if method.is_streaming:
        line += "  streams"
    if method.summary:
        line += f"  — {method.summary}"
    return line

"""The proto JSON the README shows is real: each grpcurl request parses into
its RPC's request message, and each answer into the message its fence
names (```json capstan.v1.CallResponse), so renaming a field breaks this."""

from __future__ import annotations

import pathlib
import re

import pytest
from google.protobuf import descriptor, descriptor_pool, json_format, message, message_factory
from google.rpc import error_details_pb2, status_pb2  # noqa: F401 - loads their types

from capstan.v1 import controlplane_pb2_grpc, dataplane_pb2_grpc, packages_pb2_grpc  # noqa: F401 - registers the services

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## From any language: the API as JSON"
# grpcurl ... -d '<json>' <address> <service>/<method>
_REQUEST = re.compile(r"-d '(?P<json>[^']*)'\s+\S+\s+(?P<service>[\w.]+)/(?P<method>\w+)")
_ANSWER = re.compile(r"^```json (?P<type>[\w.]+)\n(?P<json>.*?)^```$", re.MULTILINE | re.DOTALL)


def section() -> str:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else None]


def requests() -> list[tuple[str, str]]:
    """(RPC as "service/method", JSON) of each grpcurl call in the section."""
    return [(f"{m['service']}/{m['method']}", m["json"]) for m in _REQUEST.finditer(section())]


def answers() -> list[tuple[str, str]]:
    """(message type, JSON) of each typed ```json block in the section."""
    return [(m["type"], m["json"]) for m in _ANSWER.finditer(section())]


def test_the_section_shows_an_apply_a_call_and_their_answers() -> None:
    assert {rpc for rpc, _ in requests()} == {
        "capstan.v1.PackageService/GetPackage",
        "capstan.v1.ControlPlaneService/ApplyDeployment",
        "capstan.v1.DataPlaneService/Call",
    }
    assert {name for name, _ in answers()} == {
        "capstan.v1.GetPackageResponse",
        "capstan.v1.ApplyDeploymentResponse",
        "capstan.v1.CallResponse",
        "google.rpc.Status",
    }


@pytest.mark.parametrize(("rpc", "text"), requests(), ids=[rpc for rpc, _ in requests()])
def test_each_request_parses_as_its_rpc_takes_it(rpc: str, text: str) -> None:
    service, method = rpc.split("/")
    found = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(method)
    _parse(text, found.input_type)


@pytest.mark.parametrize(("name", "text"), answers(), ids=[name for name, _ in answers()])
def test_each_answer_parses_as_its_message(name: str, text: str) -> None:
    _parse(text, _descriptor(name))


def test_the_apply_names_the_package_shown_and_sends_plain_json() -> None:
    [(_, stored)] = [(n, t) for n, t in answers() if n.endswith("GetPackageResponse")]
    [(_, apply)] = [(r, t) for r, t in requests() if r.endswith("/ApplyDeployment")]
    package = _parse(stored, _descriptor("capstan.v1.GetPackageResponse")).package
    spec = _parse(apply, _descriptor("capstan.v1.ApplyDeploymentRequest")).spec
    assert spec.replica_options.runtime_env.working_dir == package.uri
    assert package.uri == f"capstan-package://{package.sha256}"
    assert spec.code.import_path == "greeter:Greeter"
    assert json_format.MessageToDict(spec.init_arguments) == {
        "args": ["Hello"],
        "kwargs": {"punctuation": "!"},
    }
    assert json_format.MessageToDict(spec)["userConfig"] == {
        "shout": False,
        "languages": ["en", "fr"],
    }


def _descriptor(name: str) -> descriptor.Descriptor:
    return descriptor_pool.Default().FindMessageTypeByName(name)


def _parse(text: str, kind: descriptor.Descriptor) -> message.Message:
    """`text` parsed into a message of type `kind`; an unknown field fails."""
    return json_format.Parse(text, message_factory.GetMessageClass(kind)())

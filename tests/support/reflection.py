"""Asking a gRPC server what it serves, through server reflection (v1alpha,
the protocol grpcurl and most tools speak)."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


async def reflected_services(channel: grpc.aio.Channel, version: str = "v1alpha") -> set[str]:
    """The full names of the services the server lists, asked with
    reflection `version` ("v1alpha" or "v1": the same messages)."""
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    [reply] = await _ask(channel, request, version)
    return {service.name for service in reply.list_services_response.service}


async def reflected_methods(channel: grpc.aio.Channel, service: str) -> set[str]:
    """The method names of `service`, from the file descriptor the server
    sends for it: what a client without our protos would call."""
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
    [reply] = await _ask(channel, request)
    package, _, name = service.rpartition(".")
    for data in reply.file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(data)
        for described in proto.service:
            if proto.package == package and described.name == name:
                return {method.name for method in described.method}
    raise AssertionError(f"reflection sent no descriptor of {service}: {reply}")


async def _ask(
    channel: grpc.aio.Channel,
    request: reflection_pb2.ServerReflectionRequest,
    version: str = "v1alpha",
) -> list[reflection_pb2.ServerReflectionResponse]:
    if version == "v1alpha":
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([request]), timeout=10)
    else:
        method = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        call = method(iter([request]), timeout=10)
    return [reply async for reply in call]

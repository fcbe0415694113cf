"""gRPC server reflection on every Capstan server, as both
`grpc.reflection.v1` (what current tools ask for first) and `v1alpha` (what
grpcio-reflection implements). The two are the same messages under another
package name, so one servicer answers both: v1 calls are decoded with the
v1alpha message classes, which read the same bytes."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serves reflection for `service_names` (plus health and reflection's
    own, which callers list too) under both protocol versions."""
    names = (*service_names, reflection.SERVICE_NAME)
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    handlers = grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": v1})
    server.add_generic_rpc_handlers((handlers,))

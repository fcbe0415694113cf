"""Serving one fake servicer on a real grpc.aio server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable

import grpc


async def serve(
    add_servicer: Callable[[object, grpc.aio.Server], None], servicer: object, port: int = 0
) -> tuple[grpc.aio.Server, int]:
    """A started server for `servicer` (registered by the generated
    `add_...Servicer_to_server`) on 127.0.0.1, and its port."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    add_servicer(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound

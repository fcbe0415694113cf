"""How Exchange messages stay far below gRPC's size limit.

gRPC ends the whole stream, not one request, when a message is over its
limit, and every request from one caller to a replica shares that stream.
So bodies travel in chunks of at most CHUNK_BYTES, a writer's batch of
frames stops growing at BATCH_BYTES, and a single frame that would still be
too big (a huge pickled argument or result) fails its own request instead.

Part of the core: both ends of the stream (proxy and replica) use it.
"""

from __future__ import annotations

from collections.abc import Iterator

from capstan.channels import MAX_MESSAGE_BYTES
from capstan.internal.v1 import replica_pb2

CHUNK_BYTES = 256 << 10
BATCH_BYTES = 1 << 20
# Leaves room for the rest of a batch; a frame past this fails alone.
MAX_FRAME_BYTES = MAX_MESSAGE_BYTES - 2 * BATCH_BYTES


def pieces(data: bytes, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """`data` in slices of at most `size` bytes (at least one, maybe empty)."""
    view = memoryview(data)
    yield bytes(view[:size])
    for start in range(size, len(data), size):
        yield bytes(view[start : start + size])


def split_http(frame: replica_pb2.ResponseFrame) -> list[replica_pb2.ResponseFrame]:
    """An HTTP response frame whose body is over CHUNK_BYTES as several: the
    first keeps status and headers, the last keeps `done`."""
    http = frame.http
    parts = list(pieces(http.body))
    first = replica_pb2.HttpResponse(status=http.status, headers=http.headers, body=parts[0])
    frames = [replica_pb2.ResponseFrame(id=frame.id, http=first)]
    frames += (
        replica_pb2.ResponseFrame(id=frame.id, http=replica_pb2.HttpResponse(body=part))
        for part in parts[1:]
    )
    frames[-1].done = frame.done
    return frames


def too_large(frame_id: int, size: int, what: str) -> replica_pb2.ResponseFrame:
    """The final frame for a request whose `what` came to `size` bytes."""
    message = (
        f"the {what} is {size} bytes, over the {MAX_FRAME_BYTES}-byte limit of one "
        "message; stream it (a generator, or a streamed body) instead"
    )
    error = replica_pb2.Error(code=8, message=message)  # RESOURCE_EXHAUSTED
    return replica_pb2.ResponseFrame(id=frame_id, done=True, error=error)

"""How bodies are cut into frames that keep Exchange messages small."""

from __future__ import annotations

import pytest

from capstan.framing import CHUNK_BYTES, MAX_FRAME_BYTES, pieces, split_http, too_large
from capstan.internal.v1 import replica_pb2


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, [0]),
        (1, [1]),
        (CHUNK_BYTES, [CHUNK_BYTES]),
        (CHUNK_BYTES + 1, [CHUNK_BYTES, 1]),
        (3 * CHUNK_BYTES, [CHUNK_BYTES] * 3),
    ],
)
def test_pieces(size: int, expected: list[int]) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    parts = list(pieces(data))
    assert [len(p) for p in parts] == expected
    assert b"".join(parts) == data


@pytest.mark.parametrize("done", [True, False])
def test_split_http_keeps_head_first_and_done_last(done: bool) -> None:
    body = b"x" * (2 * CHUNK_BYTES + 5)
    headers = [replica_pb2.Header(name=b"content-type", value=b"text/plain")]
    http = replica_pb2.HttpResponse(status=201, headers=headers, body=body)
    frames = split_http(replica_pb2.ResponseFrame(id=7, done=done, http=http))
    assert [len(f.http.body) for f in frames] == [CHUNK_BYTES, CHUNK_BYTES, 5]
    assert frames[0].http.status == 201 and list(frames[0].http.headers) == headers
    assert all(f.http.status == 0 and not f.http.headers for f in frames[1:])
    assert [f.done for f in frames] == [False, False, done]
    assert {f.id for f in frames} == {7}


def test_too_large_names_the_size_and_the_limit() -> None:
    frame = too_large(3, MAX_FRAME_BYTES + 1, "response")
    assert frame.done and frame.error.code == 8  # RESOURCE_EXHAUSTED
    assert str(MAX_FRAME_BYTES + 1) in frame.error.message
    assert str(MAX_FRAME_BYTES) in frame.error.message

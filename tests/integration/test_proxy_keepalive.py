"""Idle Exchange streams outlive keepalive pings.

A replica that accepted pings less often than its callers send them would
answer an idle stream's pings with GOAWAY "too_many_pings" after two strikes,
dropping every request on the stream. Both sides here use one short
`Keepalive` (a ping a second, as often as a gRPC client pings at all) so that
the idle wait spans several pings; a real replica (`start_replica`, in this
process) serves tests/apps/echo.py. Both ways of being idle share one wait.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from capstan.channels import Keepalive, channel_options
from capstan.internal.v1 import replica_pb2, replica_pb2_grpc
from executors.replica import RunningReplica, start_replica
from proxy.replica_client import ReplicaClient
from tests.contract.exchange_client import invocation
from tests.contract.specs import LINKS, replica_config

pytestmark = pytest.mark.timeout(30)

KEEPALIVE = Keepalive(interval_ms=1_000, timeout_ms=5_000, server_min_interval_ms=500)
# Six ping intervals: a replica that refused these pings would have sent
# GOAWAY after its third strike, four pings into the wait.
IDLE_S = 6 * KEEPALIVE.interval_ms / 1000
REPLY_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
async def replica() -> AsyncIterator[RunningReplica]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CAPSTAN_REPLICA_ID", "")  # start_replica exports it; restored after
        replica = await start_replica(replica_config("tests.apps.echo:Echo"), keepalive=KEEPALIVE)
        yield replica
        await replica.stop(1.0)


def _exchange(request_id: int, method: str, *args: Any) -> replica_pb2.ExchangeRequest:
    frame = replica_pb2.RequestFrame(id=request_id, invocation=invocation(method, *args))
    return replica_pb2.ExchangeRequest(frames=[frame])


async def _reply(call: grpc.aio.StreamStreamCall) -> Any:
    async with asyncio.timeout(REPLY_TIMEOUT_S):
        message = await call.read()
    [frame] = message.frames
    assert frame.HasField("result"), frame
    return json.loads(frame.result.data)


async def test_idle_exchange_streams_still_answer_on_the_same_stream(
    replica: RunningReplica,
) -> None:
    async with asyncio.timeout(IDLE_S + 2 * REPLY_TIMEOUT_S):
        await asyncio.gather(
            _quiet_between_requests(replica.address), _quiet_during_a_request(replica.address)
        )


async def _quiet_between_requests(address: str) -> None:
    async with grpc.aio.insecure_channel(address, options=channel_options(KEEPALIVE)) as channel:
        call = replica_pb2_grpc.ReplicaServiceStub(channel).Exchange(metadata=LINKS.metadata)
        await call.write(_exchange(1, "hello", "before"))
        assert await _reply(call) == "hello before"
        await asyncio.sleep(IDLE_S)  # the idle wait itself: nothing is sent either way
        await call.write(_exchange(2, "hello", "after"))
        assert await _reply(call) == "hello after"
        await call.done_writing()


async def _quiet_during_a_request(address: str) -> None:
    """The proxy's client: the replica sleeps for IDLE_S on a request, so no
    frame crosses the stream until the reply."""
    client = ReplicaClient(address, links=LINKS, keepalive=KEEPALIVE)
    try:
        payload = await client.call(invocation("sleep", IDLE_S))
        assert json.loads(payload.data) == IDLE_S
    finally:
        await client.close()


def test_servers_accept_pings_at_least_as_often_as_clients_send_them() -> None:
    with pytest.raises(ValueError, match="server_min_interval_ms"):
        Keepalive(interval_ms=1_000, server_min_interval_ms=2_000)

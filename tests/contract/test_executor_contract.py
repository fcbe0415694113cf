"""The Executor contract: what every executor plugin must do, written against
`executors.base` only. Each test runs once per executor in conftest.EXECUTORS."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from capstan.internal.v1 import replica_pb2
from executors.base import Executor, ExecutorError, LaunchSpec, ReplicaRef, ReplicaStartError
from tests.contract.exchange_client import ExchangeClient
from tests.contract.specs import REPO_ROOT, launch_spec, launch_spec_of, replica_config
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(120)

MakeExecutor = Callable[[], Executor]
# How long past its timeout a forced stop may take (Ray allows 2 s for the
# actor's own stop before it kills it; SSH adds a round trip or two).
FORCE_MARGIN_S = 10.0


async def _running_ids(executor: Executor) -> set[str]:
    return {ref.replica_id for ref in await executor.observe()}


async def test_capacity_names_nodes_and_their_cpus(make_executor: MakeExecutor) -> None:
    nodes = await make_executor().capacity()
    assert nodes, "an executor offers at least one node"
    for node in nodes:
        assert node.name
        assert node.num_cpus > 0
        assert node.num_gpus == len(node.gpu_ids)


async def test_launched_replica_serves_requests(make_executor: MakeExecutor) -> None:
    executor = make_executor()
    spec = launch_spec("tests.apps.echo:Echo", init_args=["> "])
    ref = await executor.launch(spec)
    assert (ref.replica_id, ref.executor, ref.nonce) == (
        spec.replica_id,
        executor.name,
        spec.config.nonce,
    )
    assert ReplicaRef.from_json(ref.to_json()) == ref
    async with ExchangeClient(ref) as client:
        assert await client.call("hello", "ann") == "> hello ann"
        stats = await client.stub.GetStats(replica_pb2.GetStatsRequest())
        described = await client.stub.Describe(replica_pb2.DescribeRequest())
    assert (stats.replica_id, stats.nonce) == (spec.replica_id, spec.config.nonce)
    streams = {m.name: m.is_streaming for m in described.callable_methods}
    assert (streams["hello"], streams["count"], "_private" in streams) == (False, True, False)


async def test_replica_reconfigures_in_place(make_executor: MakeExecutor) -> None:
    executor = make_executor()
    ref = await executor.launch(
        launch_spec("tests.apps.configured:Threshold", user_config={"threshold": 1})
    )
    async with ExchangeClient(ref) as client:
        assert await client.call("get") == 1
        await client.stub.Reconfigure(
            replica_pb2.ReconfigureRequest(user_config='{"threshold": 7}')
        )
        assert await client.call("get") == 7


async def test_stop_lets_the_request_in_flight_finish(make_executor: MakeExecutor) -> None:
    executor = make_executor()
    ref = await executor.launch(launch_spec("tests.apps.echo:Echo"))
    async with ExchangeClient(ref) as client:
        request_id = await client.start("sleep", 1.0)
        # The request is admitted before stop begins.
        await eventually(client.ongoing_requests, "the request to be in flight")
        stopping = asyncio.create_task(executor.stop(ref, timeout_s=15.0))
        messages = await client.responses(request_id)
        await stopping
    assert messages[-1].result.data == b"1.0"
    assert ref.replica_id not in await _running_ids(executor)
    await executor.stop(ref, timeout_s=1.0)  # idempotent


async def test_observe_lists_running_replicas_and_not_stopped_ones(
    make_executor: MakeExecutor,
) -> None:
    executor = make_executor()
    first, second = await asyncio.gather(
        executor.launch(launch_spec("tests.apps.echo:Echo")),
        executor.launch(launch_spec("tests.apps.echo:shout")),
    )
    assert {first.replica_id, second.replica_id} <= await _running_ids(executor)
    await executor.stop(first, timeout_s=5.0)
    running = await _running_ids(executor)
    assert first.replica_id not in running
    assert second.replica_id in running
    observed = {ref.replica_id: ref for ref in await executor.observe()}[second.replica_id]
    assert (observed.address, observed.nonce) == (second.address, second.nonce)


async def test_new_instance_adopts_replicas_after_a_restart(make_executor: MakeExecutor) -> None:
    old = make_executor()
    if not old.capabilities.adopts_replicas:
        pytest.skip(f"executor {old.name} declares that it does not adopt replicas")
    ref = await old.launch(launch_spec("tests.apps.echo:Echo"))
    await old.close()  # the control plane goes away; the replica keeps running

    new = make_executor()
    adopted = {r.replica_id: r for r in await new.observe()}
    assert ref.replica_id in adopted
    assert (adopted[ref.replica_id].address, adopted[ref.replica_id].nonce) == (
        ref.address,
        ref.nonce,
    )
    async with ExchangeClient(ref) as client:
        assert await client.call("hello", "again") == "hello again"
    await new.stop(adopted[ref.replica_id], timeout_s=5.0)
    assert ref.replica_id not in await _running_ids(new)


async def test_failed_start_raises_and_leaves_nothing_running(make_executor: MakeExecutor) -> None:
    executor = make_executor()
    spec: LaunchSpec = launch_spec("tests.apps.configured:Broken")
    with pytest.raises(ReplicaStartError, match="constructor of Broken raised ValueError: boom"):
        await executor.launch(spec)
    assert spec.replica_id not in await _running_ids(executor)


async def test_prepare_is_idempotent_and_launch_follows_it(make_executor: MakeExecutor) -> None:
    executor = make_executor()
    spec = launch_spec("tests.apps.echo:Echo")
    await asyncio.gather(executor.prepare(spec), executor.prepare(spec))
    await executor.prepare(spec)
    ref = await executor.launch(spec)
    async with ExchangeClient(ref) as client:
        assert await client.call("hello", "ann") == "hello ann"


async def test_an_environment_it_cannot_build_is_a_final_error(
    make_executor: MakeExecutor,
) -> None:
    executor = make_executor()
    config = replica_config("tests.apps.echo:Echo")
    config.deployment.replica_options.runtime_env.conda = "capstan-contract-no-such-env"
    spec = launch_spec_of(config, env={"PYTHONPATH": str(REPO_ROOT)})
    # NotSupported from prepare, or a build that fails in prepare or launch.
    with pytest.raises(ExecutorError) as caught:
        await executor.prepare(spec)
        await executor.launch(spec)
    assert not caught.value.retryable, caught.value
    assert spec.replica_id not in await _running_ids(executor)


async def test_stop_forces_a_replica_that_does_not_exit_in_time(
    make_executor: MakeExecutor,
) -> None:
    executor = make_executor()
    # An hour's graceful timeout: asked to stop, the replica waits for `hang`.
    spec = launch_spec("tests.apps.stuck:Stuck", graceful_shutdown_timeout_s=3600)
    ref = await executor.launch(spec)
    loop = asyncio.get_running_loop()
    async with ExchangeClient(ref) as client:
        await client.start("hang")
        await eventually(client.ongoing_requests, "the hanging request to be in flight")
        began = loop.time()
        await executor.stop(ref, timeout_s=1.0)
        took_s = loop.time() - began
        await eventually(client.ended.is_set, "the replica to end the stream")
    assert 1.0 <= took_s < 1.0 + FORCE_MARGIN_S, took_s
    assert ref.replica_id not in await _running_ids(executor)
    await executor.stop(ref, timeout_s=1.0)  # idempotent

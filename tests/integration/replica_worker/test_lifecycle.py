"""The replica worker, driven as callers drive it (real worker processes, started
by the local executor or `python -m executors.replica` directly): reconfigure,
health, admission, drain, start-up failures and shutdown."""

from __future__ import annotations

import asyncio
import fractions
import json
import pathlib
import pickle
import signal
import sys

import grpc
import pytest
from google.protobuf import struct_pb2

from capstan.internal.v1 import replica_pb2
from executors.base import ReplicaStartError
from executors.local import LocalExecutor
from tests.contract.exchange_client import ExchangeClient
from tests.contract.specs import REPO_ROOT, launch_spec, replica_config
from tests.integration.replica_worker.conftest import Launch
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

Code = grpc.StatusCode


# Reconfigure, health, admission, drain.


async def test_user_config_applies_at_start_and_later(launch: Launch) -> None:
    ref = await launch("tests.apps.configured:Threshold", user_config={"threshold": 1})
    async with ExchangeClient(ref) as client:
        assert await client.call("get") == 1
        await client.stub.Reconfigure(
            replica_pb2.ReconfigureRequest(user_config='{"threshold": 5}')
        )
        assert await client.call("get") == 5
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await client.stub.Reconfigure(
                replica_pb2.ReconfigureRequest(user_config='{"threshold": -1}')
            )
        assert failure.value.code() == Code.INVALID_ARGUMENT
        assert failure.value.details() == "reconfigure raised ValueError: threshold must be >= 0"
        assert await client.call("get") == 5  # the old config is back in force
        with pytest.raises(grpc.aio.AioRpcError, match="not valid JSON"):
            await client.stub.Reconfigure(replica_pb2.ReconfigureRequest(user_config="{"))


# A check_health that raises, or that hangs past the caller's deadline:
# either way the replica answers UNAVAILABLE, before the deadline, saying why.
@pytest.mark.parametrize(
    ("method", "value", "timeout_s", "message"),
    [
        pytest.param("set_healthy", False, 5, "model weights are gone", id="raising"),
        pytest.param("set_hanging", True, 0.5, "check_health did not return within", id="hanging"),
    ],
)
async def test_failing_check_health_is_unavailable(
    launch: Launch, method: str, value: bool, timeout_s: float, message: str
) -> None:
    ref = await launch("tests.apps.configured:Threshold")
    async with ExchangeClient(ref) as client:
        await client.stub.CheckHealth(replica_pb2.CheckHealthRequest(), timeout=5)
        await client.call(method, value)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await client.stub.CheckHealth(replica_pb2.CheckHealthRequest(), timeout=timeout_s)
    assert failure.value.code() == Code.UNAVAILABLE
    assert message in failure.value.details()


async def test_deployment_wrapper_stands_for_its_class(launch: Launch) -> None:
    ref = await launch("tests.apps.echo:wrapped")
    async with ExchangeClient(ref) as client:
        assert await client.call("hello", "wrapped") == "hello wrapped"


async def test_admission_rejects_above_max_concurrent_queries(launch: Launch) -> None:
    ref = await launch("tests.apps.echo:Echo", max_concurrent_queries=2)
    async with ExchangeClient(ref) as client:
        slow = [await client.start("sleep", 1.0) for _ in range(2)]
        [rejected] = await client.invoke("hello", "x")
        assert rejected.error.rejected and rejected.error.code == Code.RESOURCE_EXHAUSTED.value[0]
        assert rejected.ongoing_requests == 2
        await client.stub.Reconfigure(replica_pb2.ReconfigureRequest(max_concurrent_queries=3))
        assert await client.call("hello", "x") == "hello x"
        for request_id in slow:
            assert (await client.responses(request_id))[-1].HasField("result")


async def test_drain_waits_for_in_flight_then_rejects(launch: Launch) -> None:
    ref = await launch("tests.apps.echo:Echo")
    async with ExchangeClient(ref) as client:
        slow = await client.start("sleep", 0.5)
        await eventually(client.ongoing_requests, "the request to be in flight")
        drained = await client.stub.Drain(replica_pb2.DrainRequest(timeout_s=10))
        assert drained.ongoing_requests == 0
        assert (await client.responses(slow))[-1].HasField("result")
        [rejected] = await client.invoke("hello", "late")
        assert rejected.error.rejected and rejected.error.code == Code.UNAVAILABLE.value[0]
        again = await client.stub.Drain(replica_pb2.DrainRequest(timeout_s=0))
        assert again.ongoing_requests == 0
        assert (await client.stub.GetStats(replica_pb2.GetStatsRequest())).draining


# Start-up failures and shutdown.


@pytest.mark.parametrize(
    ("import_path", "message"),
    [
        ("tests.apps.configured:Broken", "constructor of Broken raised ValueError: boom"),
        ("tests.apps.nope:Thing", "cannot import 'tests.apps.nope:Thing': ModuleNotFoundError"),
        ("tests.apps.echo:Missing", "cannot import 'tests.apps.echo:Missing': AttributeError"),
    ],
)
async def test_start_failure_names_the_cause(
    executor: LocalExecutor, import_path: str, message: str
) -> None:
    spec = launch_spec(import_path)
    with pytest.raises(ReplicaStartError, match=message):
        await executor.launch(spec)
    assert spec.replica_id not in {r.replica_id for r in await executor.observe()}


async def test_pickled_code_is_loaded_by_value(executor: LocalExecutor) -> None:
    import cloudpickle

    class Local:  # defined here, so cloudpickle ships it by value
        def __init__(self, base: int) -> None:
            self.base = base

        def add(self, n: int) -> int:
            return self.base + n

    spec = launch_spec("tests.apps.echo:Echo")
    code = replica_pb2.PythonObject(cloudpickle=cloudpickle.dumps(Local))
    spec.config.deployment.code.sdk_object.Pack(code)
    # A Fraction is no JSON: the SDK pickles such init arguments.
    pickled = replica_pb2.EncodedArguments(
        encoding=replica_pb2.ENCODING_PICKLE, args=pickle.dumps((fractions.Fraction(40),))
    )
    spec.config.deployment.sdk_init_arguments.Pack(pickled)
    ref = await executor.launch(spec)
    async with ExchangeClient(ref) as client:
        assert await client.call("add", 2, pickled=True) == fractions.Fraction(42)


async def test_code_that_does_not_unpickle_fails_the_start(executor: LocalExecutor) -> None:
    spec = launch_spec("tests.apps.echo:Echo")
    spec.config.deployment.code.sdk_object.Pack(replica_pb2.PythonObject(cloudpickle=b"junk"))
    with pytest.raises(ReplicaStartError, match="cannot unpickle the deployment's code"):
        await executor.launch(spec)


async def test_another_sdks_object_is_refused_naming_its_type(executor: LocalExecutor) -> None:
    spec = launch_spec("tests.apps.echo:Echo")
    spec.config.deployment.code.sdk_object.Pack(struct_pb2.Struct())  # say, a Node SDK's
    with pytest.raises(ReplicaStartError) as refused:
        await executor.launch(spec)
    assert "code holds a 'type.googleapis.com/google.protobuf.Struct'" in str(refused.value)
    assert "type.googleapis.com/capstan.internal.v1.PythonObject" in str(refused.value)


async def test_reconfigure_raising_at_start_fails_the_start(executor: LocalExecutor) -> None:
    spec = launch_spec("tests.apps.configured:Threshold", user_config={"threshold": -3})
    with pytest.raises(ReplicaStartError, match="reconfigure raised ValueError"):
        await executor.launch(spec)


async def test_sigterm_finishes_in_flight_requests_and_exits_0(tmp_path: pathlib.Path) -> None:
    config = replica_config("tests.apps.echo:Echo")
    config_path, ready = tmp_path / "config.pb", tmp_path / "ready.json"
    config_path.write_bytes(config.SerializeToString())
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "executors.replica", "--config", str(config_path),
        "--ready-file", str(ready), cwd=REPO_ROOT, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await eventually(ready.exists, "the ready file")
        record = json.loads(ready.read_text())
        assert (record["pid"], record["nonce"]) == (process.pid, config.nonce)
        async with ExchangeClient(record["address"]) as client:
            slow = await client.start("sleep", 0.5)
            await eventually(client.ongoing_requests, "the request to be in flight")
            process.send_signal(signal.SIGTERM)
            assert (await client.responses(slow))[-1].HasField("result")
            async with asyncio.timeout(10):
                assert await process.wait() == 0
            await asyncio.wait_for(client.ended.wait(), 5)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

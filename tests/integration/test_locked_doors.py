"""Every door locked (issue 8): a stranger on this machine can neither run
code through a replica's port nor drain it; `capstan start` takes its token
from a file (never argv, so `ps` never shows it) and serves the control API,
the DataPlane and HTTPS over TLS; the public DataPlane takes no pickles.
Real processes on 127.0.0.1; none left behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import pickle
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import grpc
import httpx
import pytest

from capstan.client import ControlPlaneClient
from capstan.errors import Unavailable
from capstan.internal.v1 import replica_pb2, replica_pb2_grpc
from capstan.json_values import to_value
from capstan.v1 import dataplane_pb2, dataplane_pb2_grpc, deployment_pb2
from controlplane.cluster_keys import ClusterKeys
from executors.base import ReplicaRef
from executors.local import LocalExecutor
from tests.contract.exchange_client import call_once, stats
from tests.contract.specs import LINKS, launch_spec
from tests.support.ports import free_ports
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.timeout(90)

TOKEN = "t0ken-that-must-not-leak"


class _CreatesFile:
    """Unpickling this opens (so creates) `path`: a stand-in for any code."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
async def replica(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ReplicaRef]:
    executor = LocalExecutor({"num_cpus": 2}, tmp_path_factory.mktemp("replicas"))
    ref = await executor.launch(launch_spec("tests.apps.echo:Echo"))
    try:
        yield ref
    finally:
        await executor.stop(ref, 5.0)
        await executor.close()


def _pickled_call(path: pathlib.Path) -> replica_pb2.ExchangeRequest:
    arguments = replica_pb2.EncodedArguments(
        encoding=replica_pb2.ENCODING_PICKLE, args=pickle.dumps(_CreatesFile(path))
    )
    invocation = replica_pb2.Invocation(method_name="hello", arguments=arguments)
    return replica_pb2.ExchangeRequest(
        frames=[replica_pb2.RequestFrame(id=1, invocation=invocation)]
    )


async def _exchange_once(address: str, request, metadata=()) -> replica_pb2.ExchangeResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        call = replica_pb2_grpc.ReplicaServiceStub(channel).Exchange(metadata=metadata)
        await call.write(request)
        return await asyncio.wait_for(call.read(), timeout=10)


async def test_a_strangers_pickle_is_refused_unread(
    replica: ReplicaRef, tmp_path: pathlib.Path
) -> None:
    planted = tmp_path / "planted"
    for metadata in [(), (("capstan-cluster-secret", "guess"),)]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _exchange_once(replica.address, _pickled_call(planted), metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "cluster secret" in (refused.value.details() or "")
    assert not planted.exists()
    # The payload is live: on the authenticated internal link it is loaded.
    await _exchange_once(replica.address, _pickled_call(planted), LINKS.metadata)
    assert planted.exists()


async def test_a_strangers_drain_is_refused_and_the_replica_keeps_serving(
    replica: ReplicaRef,
) -> None:
    async with grpc.aio.insecure_channel(replica.address) as channel:
        stub = replica_pb2_grpc.ReplicaServiceStub(channel)
        for method, request in [
            (stub.Drain, replica_pb2.DrainRequest(timeout_s=0)),
            (stub.Reconfigure, replica_pb2.ReconfigureRequest(max_concurrent_queries=1)),
            (stub.GetStats, replica_pb2.GetStatsRequest()),
            (stub.Describe, replica_pb2.DescribeRequest()),
            (stub.CheckHealth, replica_pb2.CheckHealthRequest()),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await method(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not (await stats(replica)).draining
    assert await call_once(replica, "hello", "x") == "hello x"


def test_local_replicas_listen_on_loopback_only(replica: ReplicaRef) -> None:
    assert replica.address.startswith("127.0.0.1:") and not replica.tls


# -- capstan start: token file and TLS ---------------------------------------


def _operator_certificate(folder: pathlib.Path) -> tuple[pathlib.Path, ...]:
    """A CA, and a certificate it signed for 127.0.0.1 and localhost with its
    key, as an operator would bring them (made with cryptography, through the
    same issuing code as the cluster CA: any CA will do)."""
    authority = ClusterKeys.generate()
    cert, key = authority.issue(["127.0.0.1", "localhost"])
    files = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    for path, data in zip(files, (authority.ca_cert, cert, key), strict=True):
        path.write_bytes(data)
    return files


class Started:
    def __init__(self, tmp_path: pathlib.Path) -> None:
        self.state_dir = tmp_path / "state"
        self.ca, self.cert, self.key = _operator_certificate(tmp_path)
        self.token_file = tmp_path / "token"
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)
        control, self.http_port, self.grpc_port = free_ports(3)
        self.address = f"127.0.0.1:{control}"
        self.env = {**os.environ, "CAPSTAN_TLS_CA": str(self.ca)}
        self.env.pop("CAPSTAN_TOKEN", None)
        self.process: subprocess.Popen | None = None

    def command(self, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "capstan", "--address", self.address, "start",
            "--state-dir", str(self.state_dir), "--http-port", str(self.http_port),
            "--grpc-port", str(self.grpc_port), *extra,
        ]  # fmt: skip

    def start(self, *extra: str) -> None:
        command = self.command(
            "--token-file", str(self.token_file),
            "--tls-cert", str(self.cert), "--tls-key", str(self.key), *extra,
        )  # fmt: skip
        self.state_dir.mkdir()
        with open(self.state_dir / "capstan.log", "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True,
            )  # fmt: skip
        try:
            eventually_sync(self._is_ready, "capstan start to serve over TLS", timeout_s=60)
        except BaseException:
            self.stop()
            raise

    def _is_ready(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log()
        try:
            response = httpx.get(self.https("/-/healthz"), verify=self.tls_context(), timeout=1)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and self.client(TOKEN).is_reachable(0.5)

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(self.cert, self.key)  # for a proxy that checks clients
        return context

    def https(self, path: str) -> str:
        return f"https://127.0.0.1:{self.http_port}{path}"

    def client(self, token: str) -> ControlPlaneClient:
        # TLS: this process has CAPSTAN_TLS_CA set by the fixture.
        return ControlPlaneClient(self.address, token=token)

    def log(self) -> str:
        logs = [self.state_dir / "capstan.log", *sorted((self.state_dir / "logs").glob("*"))]
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in logs if p.exists())

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            self.client(TOKEN).shutdown()
        except Exception as error:  # a failed test may have left it half up
            print(f"shutdown failed: {error!r}", file=sys.stderr)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        proxy = self.state_dir / "proxy.json"
        if proxy.exists():  # the proxy outlived its control plane: end it
            pid = json.loads(proxy.read_text())["pid"]
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def started(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Started]:
    capstan = Started(tmp_path)
    monkeypatch.setenv("CAPSTAN_TLS_CA", str(capstan.ca))
    monkeypatch.delenv("CAPSTAN_TOKEN", raising=False)
    for name in ("CAPSTAN_TLS_CERT", "CAPSTAN_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
        capstan.env.pop(name, None)
    capstan.start()
    yield capstan
    capstan.stop()


def test_token_file_and_tls_keep_the_token_out_of_ps_and_the_wire(started: Started) -> None:
    processes = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True)
    assert "--token-file" in processes.stdout  # the start command is there...
    assert TOKEN not in processes.stdout  # ...its token is not
    assert started.client(TOKEN).list() == []
    with pytest.raises(Exception, match="bearer token"):
        started.client("wrong").list()
    # HTTPS on the proxy, checked against the operator's certificate.
    response = httpx.get(started.https("/nothing"), verify=started.tls_context(), timeout=5)
    assert response.status_code == 404


def test_a_plaintext_client_is_refused_by_the_tls_control_api(
    started: Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as plain:
        plain.delenv("CAPSTAN_TLS_CA")
        plaintext = ControlPlaneClient(started.address, token=TOKEN)
    with pytest.raises(Unavailable):
        plaintext.list()
    plaintext.close()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{started.http_port}/-/healthz", timeout=5)


async def test_the_dataplane_serves_tls(started: Started) -> None:
    # No pickle test here any more: the DataPlane's arguments are
    # google.protobuf.Values, so there is no field a pickle could ride in.
    credentials = grpc.ssl_channel_credentials(started.ca.read_bytes())
    target = f"127.0.0.1:{started.grpc_port}"
    async with grpc.aio.secure_channel(target, credentials) as channel:
        stub = dataplane_pb2_grpc.DataPlaneServiceStub(channel)
        request = dataplane_pb2.CallRequest(deployment="echo", method_name="hello")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Call(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'echo'" in (refused.value.details() or "")


def test_a_token_on_the_command_line_is_refused(tmp_path: pathlib.Path) -> None:
    capstan = Started(tmp_path)
    result = subprocess.run(
        capstan.command("--token", TOKEN), capture_output=True, text=True, env=capstan.env,
        timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--token-file" in result.stderr and "ps" in result.stderr
    assert not capstan.state_dir.exists()  # nothing was started


def test_client_certificates_are_required_with_a_client_ca(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    capstan = Started(tmp_path)
    monkeypatch.setenv("CAPSTAN_TLS_CA", str(capstan.ca))
    monkeypatch.setenv("CAPSTAN_TLS_CERT", str(capstan.cert))  # for stop()'s client too
    monkeypatch.setenv("CAPSTAN_TLS_KEY", str(capstan.key))
    for name in ("CAPSTAN_TLS_CERT", "CAPSTAN_TLS_KEY"):
        capstan.env.pop(name, None)  # its own proxy presents the server's by default
    capstan.start("--tls-client-ca", str(capstan.ca))
    try:
        assert capstan.client(TOKEN).list() == []
        with monkeypatch.context() as anonymous:
            anonymous.delenv("CAPSTAN_TLS_CERT")
            anonymous.delenv("CAPSTAN_TLS_KEY")
            stranger = ControlPlaneClient(capstan.address, token=TOKEN)
        with pytest.raises(Unavailable):
            stranger.list()
        stranger.close()
        # A deployment answers over HTTPS: the proxy, presenting a certificate,
        # got the route and the cluster secret from the control plane.
        hello = deployment_pb2.DeploymentSpec(
            name="hello", route_prefix="/hello", user_config=to_value("over tls", "user_config")
        )
        hello.code.import_path = "tests.apps.hello:Hello"
        capstan.client(TOKEN).apply(hello, timeout_s=60)
        context = capstan.tls_context()

        def answer() -> httpx.Response | None:
            response = httpx.get(capstan.https("/hello"), verify=context, timeout=5)
            return response if response.status_code == 200 else None

        served = eventually_sync(answer, "/hello to answer over HTTPS", timeout_s=30)
        assert served.json() == {"config": "over tls"}
        capstan.client(TOKEN).delete("hello")
        plain_context = ssl.create_default_context(cafile=str(capstan.ca))
        with pytest.raises(httpx.HTTPError):
            httpx.get(capstan.https("/-/healthz"), verify=plain_context, timeout=5)
    finally:
        capstan.stop()

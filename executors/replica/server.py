"""The ReplicaService gRPC server, and the library entry that starts one.

`start_replica` is what executors that host the worker in-process call (the
Ray executor runs it inside an actor); `python -m executors.replica` wraps
it for executors that start a process.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from capstan import defaults, json_values
from capstan.call_guard import MetadataGuard
from capstan.channels import KEEPALIVE, Keepalive, server_options
from capstan.context import ReplicaID, loaded_models, set_replica_context, set_servable_object
from capstan.errors import CapstanError, answers_errors
from capstan.framing import BATCH_BYTES, MAX_FRAME_BYTES, too_large
from capstan.internal.v1 import replica_pb2, replica_pb2_grpc
from capstan.links import SECRET_KEY
from capstan.reflection import enable_reflection
from capstan.tls import ServerTls, listen
from executors.replica.description import describe
from executors.replica.exchange import ExchangeStream
from executors.replica.ingress import Lifespan, bind_methods
from executors.replica.loader import LoadError, load
from executors.replica.logs import apply_logging_config
from executors.replica.worker import Worker

log = logging.getLogger("capstan.replica")

SERVICE_NAME = replica_pb2.DESCRIPTOR.services_by_name["ReplicaService"].full_name
# After draining, how long the last responses get to reach callers.
_STOP_GRACE_S = 1.0
# Answer a health check a little before the caller's deadline, so the
# caller sees why rather than DEADLINE_EXCEEDED.
_DEADLINE_MARGIN_S = 0.05


class ReplicaServicer(replica_pb2_grpc.ReplicaServiceServicer):
    """capstan.internal.v1.ReplicaService over one `Worker`."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._streams: set[ExchangeStream] = set()

    async def Exchange(
        self,
        request_iterator: AsyncIterator[replica_pb2.ExchangeRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        stream = ExchangeStream(self._worker)
        self._streams.add(stream)
        reader = asyncio.get_running_loop().create_task(stream.read(context))
        try:
            await self._write(stream, context)
        finally:
            self._streams.discard(stream)
            reader.cancel()
            stream.cancel_all()
            await asyncio.wait([reader])
            if not reader.cancelled() and reader.exception() is not None:
                log.warning("Exchange stream read failed: %s", reader.exception())

    async def _write(self, stream: ExchangeStream, context: grpc.aio.ServicerContext) -> None:
        """The stream's only writer. Response frames queue up on `out` from
        every request's task; each write takes what queued meanwhile, up to
        BATCH_BYTES. A frame too big for any message fails its request alone."""
        out, write, worker = stream.out, context.write, self._worker
        models_sent = 0  # the revision of loaded_models() this stream has seen
        while (frame := await out.get()) is not None:
            frames, size = [], 0
            while True:
                frame_size = frame.ByteSize()
                if frame_size > MAX_FRAME_BYTES:
                    frame = too_large(frame.id, frame_size, "response")
                frames.append(frame)
                size += frame_size
                if size >= BATCH_BYTES or out.empty():
                    break
                frame = out.get_nowait()
                if frame is None:
                    break
            message = replica_pb2.ExchangeResponse(frames=frames, ongoing_requests=worker.ongoing)
            revision, model_ids = loaded_models()
            if revision != models_sent:
                models_sent = revision
                message.loaded_models.ids.extend(model_ids)
            await write(message)
            if frame is None:
                return

    def close_streams(self) -> None:
        """Ends every Exchange stream once its requests finish."""
        for stream in list(self._streams):
            stream.close()

    @answers_errors
    async def Reconfigure(
        self, request: replica_pb2.ReconfigureRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.ReconfigureResponse:
        await self._worker.reconfigure(
            request.user_config if request.HasField("user_config") else None,
            request.max_concurrent_queries if request.HasField("max_concurrent_queries") else None,
        )
        return replica_pb2.ReconfigureResponse()

    @answers_errors
    async def CheckHealth(
        self, request: replica_pb2.CheckHealthRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.CheckHealthResponse:
        remaining = context.time_remaining()
        budget = None if remaining is None else max(0.0, remaining - _DEADLINE_MARGIN_S)
        try:
            async with asyncio.timeout(budget):
                await self._worker.check_health()
        except TimeoutError:
            message = f"check_health did not return within {budget:.3f}s"
            await context.abort(grpc.StatusCode.UNAVAILABLE, message)
        return replica_pb2.CheckHealthResponse()

    @answers_errors
    async def Drain(
        self, request: replica_pb2.DrainRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.DrainResponse:
        remaining = await self._worker.drain(request.timeout_s)
        return replica_pb2.DrainResponse(ongoing_requests=remaining)

    @answers_errors
    async def GetStats(
        self, request: replica_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.GetStatsResponse:
        stats = self._worker.stats()
        if request.with_metrics:
            from capstan import metrics  # prometheus_client, only when scraped

            stats.metrics = metrics.exposition()
        return stats

    @answers_errors
    async def Describe(
        self, request: replica_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.DescribeResponse:
        return describe(self._worker.user)


class RunningReplica:
    """A started replica: its address, and how to stop it."""

    def __init__(
        self,
        address: str,
        worker: Worker,
        servicer: ReplicaServicer,
        server: grpc.aio.Server,
        health_servicer: health.aio.HealthServicer,
        lifespan: Lifespan | None,
    ) -> None:
        self.address = address
        self.worker = worker
        self._servicer = servicer
        self._server = server
        self._health = health_servicer
        self._lifespan = lifespan
        self._stopping: asyncio.Task[None] | None = None

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stops gracefully: health goes NOT_SERVING, new requests are
        rejected, in-flight ones get `timeout_s` (default: the deployment's
        graceful_shutdown_timeout_s) to finish. Idempotent."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop(timeout_s))
        await asyncio.shield(self._stopping)

    async def _stop(self, timeout_s: float | None) -> None:
        if timeout_s is None:
            spec = self.worker.config.deployment
            has_timeout = spec.HasField("graceful_shutdown_timeout_s")
            timeout_s = (
                spec.graceful_shutdown_timeout_s
                if has_timeout
                else defaults.GRACEFUL_SHUTDOWN_TIMEOUT_S
            )
        await self._health.enter_graceful_shutdown()
        left = await self.worker.drain(timeout_s)
        if left:
            log.warning("stopping with %d requests still in flight", left)
        self._servicer.close_streams()
        await self._server.stop(_STOP_GRACE_S)
        if self._lifespan is not None:
            await self._lifespan.shutdown()
        self.worker.invoker.close()

    async def wait_closed(self) -> None:
        """Returns when the server has stopped."""
        await self._server.wait_for_termination()


async def start_replica(
    config: replica_pb2.ReplicaConfig, *, keepalive: Keepalive = KEEPALIVE
) -> RunningReplica:
    """Loads and constructs the user's code, applies its user_config, and
    serves ReplicaService on `config.host` at a free port, accepting the
    keepalive pings of clients that use the same `keepalive`.

    Every call but health checks and reflection must carry the config's
    cluster secret; with a certificate in the config it serves TLS.

    Raises `LoadError` when the user's code fails to import, construct or
    reconfigure; the message names the cause, and `ValueError` for a config
    without a cluster secret."""
    if not config.cluster_secret:
        raise ValueError(
            f"replica {config.replica_id}: the config has no cluster_secret; "
            "a replica never serves without one"
        )
    _export_environment(config)
    apply_logging_config(config)
    spec = config.deployment
    set_replica_context(ReplicaID(config.replica_id, spec.name, spec.application))
    worker = Worker(config, load(config))
    set_servable_object(worker.user.target)
    try:
        await _apply_user_config(worker)
        lifespan = await _start_app(worker)
    except LoadError:
        worker.invoker.close()
        raise
    return await _serve(worker, lifespan, config.host or "127.0.0.1", keepalive)


async def _apply_user_config(worker: Worker) -> None:
    spec = worker.config.deployment
    if spec.HasField("user_config"):
        try:
            await worker.reconfigure(json_values.to_json_text(spec.user_config), None)
        except CapstanError as error:
            raise LoadError(f"{worker.user.name}: {error.message}") from error.__cause__


async def _start_app(worker: Worker) -> Lifespan | None:
    user = worker.user
    if user.asgi_app is None:
        return None
    if user.asgi_app is not user.target:
        bind_methods(user.asgi_app, type(user.target))
    lifespan = Lifespan(user.asgi_app)
    try:
        await lifespan.startup()
    except Exception as error:
        raise LoadError(f"the ASGI app of {user.name} failed to start: {error}") from error
    worker.asgi_state = lifespan.state
    return lifespan


def _export_environment(config: replica_pb2.ReplicaConfig) -> None:
    # SDK handles used inside the user's code find the control plane here
    # (and the cluster's links in the route table it sends them).
    if config.control_plane_address:
        os.environ["CAPSTAN_ADDRESS"] = config.control_plane_address
    if config.token:
        os.environ["CAPSTAN_TOKEN"] = config.token
    os.environ["CAPSTAN_REPLICA_ID"] = config.replica_id


async def _serve(
    worker: Worker, lifespan: Lifespan | None, host: str, keepalive: Keepalive
) -> RunningReplica:
    config = worker.config
    guard = MetadataGuard(SECRET_KEY, config.cluster_secret, "missing or wrong cluster secret")
    server = grpc.aio.server(options=server_options(keepalive), interceptors=[guard])
    servicer = ReplicaServicer(worker)
    replica_pb2_grpc.add_ReplicaServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server, (SERVICE_NAME, health.SERVICE_NAME))
    bind_host = f"[{host}]" if ":" in host else host
    tls = ServerTls(config.tls_cert, config.tls_key) if config.tls_cert else None
    port = listen(server, f"{bind_host}:0", tls)
    await server.start()
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %s on %s:%d%s", worker.user.name, host, port, " (TLS)" if tls else "")
    address = f"{bind_host}:{port}"
    return RunningReplica(address, worker, servicer, server, health_servicer, lifespan)

"""The control plane's HTTP app (Starlette): `/metrics` for Prometheus, the
dashboard at `/`, and the JSON it polls under `/api/`. The API answers come
from the control plane's own gRPC API, called like any client calls it, so
the dashboard shows nothing a client could not see."""

from __future__ import annotations

import dataclasses
import pathlib

import grpc
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from capstan.channels import channel_options
from capstan.json_values import readable_deployment
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import controlplane_pb2_grpc
from controlplane.http.metrics import ControlPlaneMetrics
from controlplane.http.traffic import TrafficHistory
from controlplane.reconciler.replica_client import ReplicaClient

_DASHBOARD = pathlib.Path(__file__).with_name("dashboard.html")
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LOG_LINES = 2000


@dataclasses.dataclass
class Sources:
    """What the HTTP app reads from. Create inside the running loop."""

    address: str
    token: str
    metrics: ControlPlaneMetrics
    traffic: TrafficHistory | None
    replicas: ReplicaClient
    # How to reach a control API that serves TLS; None: plaintext.
    credentials: grpc.ChannelCredentials | None = None

    def __post_init__(self) -> None:
        if self.credentials is None:
            self.channel = grpc.aio.insecure_channel(self.address, options=channel_options())
        else:
            self.channel = grpc.aio.secure_channel(
                self.address, self.credentials, options=channel_options()
            )
        self.stub = controlplane_pb2_grpc.ControlPlaneServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {self.token}"),) if self.token else None

    async def close(self) -> None:
        await self.channel.close()
        await self.replicas.close()


def make_app(sources: Sources) -> Starlette:
    """The routes, bound to `sources`."""

    async def metrics(request: Request) -> Response:
        body = await sources.metrics.exposition(sources.replicas)
        return Response(body, media_type=_METRICS_TYPE)

    async def dashboard(request: Request) -> Response:
        return FileResponse(_DASHBOARD, media_type="text/html; charset=utf-8")

    async def deployments(request: Request) -> Response:
        return JSONResponse([readable_deployment(d) for d in await _all_deployments(sources)])

    async def events(request: Request) -> Response:
        after = int(request.query_params.get("after", "0") or 0)
        asked = cp.WatchEventsRequest(after_id=after, backlog=30, no_follow=True)
        stream = sources.stub.WatchEvents(asked, metadata=sources.metadata, timeout=5)
        found = [json_format.MessageToDict(r.event, preserving_proto_field_name=True)
                 async for r in stream]  # fmt: skip
        return JSONResponse(found)

    async def traffic(request: Request) -> Response:
        history = sources.traffic.points if sources.traffic else {}
        return JSONResponse(
            {name: [dataclasses.asdict(p) for p in points] for name, points in history.items()}
        )

    async def logs(request: Request) -> Response:
        deployment, replica = request.path_params["deployment"], request.path_params["replica"]
        asked = cp.StreamLogsRequest(deployment=deployment, replica=replica)
        stream = sources.stub.StreamLogs(asked, metadata=sources.metadata, timeout=10)
        try:
            lines = [reply.line async for reply in stream]
        except grpc.aio.AioRpcError as error:
            return PlainTextResponse(f"{error.details()}\n", status_code=404)
        return PlainTextResponse("\n".join(lines[-_LOG_LINES:]) + "\n")

    return Starlette(
        routes=[
            Route("/", dashboard),
            Route("/metrics", metrics),
            Route("/api/deployments", deployments),
            Route("/api/events", events),
            Route("/api/traffic", traffic),
            Route("/api/logs/{deployment}/{replica}", logs),
        ]
    )


async def _all_deployments(sources: Sources) -> list[cp.Deployment]:
    """Every deployment, page by page: one page may be cut short to stay
    under the message limit."""
    found: list[cp.Deployment] = []
    request = cp.ListDeploymentsRequest()
    while True:
        reply = await sources.stub.ListDeployments(request, metadata=sources.metadata, timeout=5)
        found.extend(reply.deployments)
        if not reply.next_page_token:
            return found
        request.page_token = reply.next_page_token

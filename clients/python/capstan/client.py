"""A blocking client for the ControlPlaneService, with errors mapped to
capstan.errors. The SDK and the CLI use it; any gRPC client may do the same."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import grpc

from capstan import defaults
from capstan.channels import channel_options
from capstan.errors import CapstanError, error_for_code, from_rpc_error
from capstan.tls import control_plane_credentials
from capstan.uploads import Uploader
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import controlplane_pb2_grpc, deployment_pb2

_T = TypeVar("_T")


def default_address() -> str:
    """The control plane to talk to: $CAPSTAN_ADDRESS, else the local default."""
    return os.environ.get("CAPSTAN_ADDRESS", defaults.CONTROL_PLANE_ADDRESS)


def default_token() -> str:
    """The bearer token to send: $CAPSTAN_TOKEN, else none."""
    return os.environ.get("CAPSTAN_TOKEN", "")


class ControlPlaneClient:
    """One channel to one control plane; methods block and raise CapstanError.

    `token` (default $CAPSTAN_TOKEN) goes with every call as a bearer token;
    an empty one sends none. With $CAPSTAN_TLS_CA set the channel is TLS
    (see `capstan.tls.control_plane_credentials`).
    """

    def __init__(self, address: str | None = None, token: str | None = None) -> None:
        self.address = address or default_address()
        token = default_token() if token is None else token
        self._metadata = [("authorization", f"Bearer {token}")] if token else None
        credentials = control_plane_credentials()
        self._channel = (
            grpc.insecure_channel(self.address, options=channel_options())
            if credentials is None
            else grpc.secure_channel(self.address, credentials, options=channel_options())
        )
        self._stub = controlplane_pb2_grpc.ControlPlaneServiceStub(self._channel)
        # Local working_dir folders go up as packages before the spec does.
        self._uploader = Uploader(self._channel, self._metadata)

    def is_reachable(self, timeout_s: float = 0.5) -> bool:
        """Whether a control plane answers at the address within the timeout."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            return False
        return True

    def apply(
        self, spec: deployment_pb2.DeploymentSpec, *, wait: bool = True, timeout_s: float = 0
    ) -> cp.ApplyDeploymentResponse:
        spec = self._uploader.ship_deployment(spec)
        request = cp.ApplyDeploymentRequest(spec=spec, wait=wait, timeout_s=timeout_s)
        return self._call(self._stub.ApplyDeployment, request)

    def apply_application(
        self, app: cp.ApplicationSpec, *, wait: bool = True, timeout_s: float = 0
    ) -> cp.ApplyApplicationResponse:
        app = self._uploader.ship_application(app)
        request = cp.ApplyApplicationRequest(application=app, wait=wait, timeout_s=timeout_s)
        return self._call(self._stub.ApplyApplication, request)

    def delete_application(self, name: str, *, wait: bool = True) -> None:
        request = cp.DeleteApplicationRequest(name=name, wait=wait)
        self._call(self._stub.DeleteApplication, request)

    def get_application(self, name: str) -> cp.Application:
        request = cp.GetApplicationRequest(name=name)
        return self._call(self._stub.GetApplication, request).application

    def list_applications(self) -> list[cp.Application]:
        """Every application, page by page."""
        return self._all_pages(
            self._stub.ListApplications, cp.ListApplicationsRequest(), "applications"
        )

    def plan_application(self, app: cp.ApplicationSpec) -> cp.PlanApplicationResponse:
        """What applying `app` would do; changes nothing (but uploads its
        local working_dirs, as the apply would, so the plan compares like
        with like; uploads are content-addressed, so the apply sends none)."""
        app = self._uploader.ship_application(app)
        return self._call(self._stub.PlanApplication, cp.PlanApplicationRequest(application=app))

    def scale(
        self, name: str, num_replicas: int, *, wait: bool = True, timeout_s: float = 0
    ) -> cp.Deployment:
        """Sets num_replicas in place; no replica restarts."""
        request = cp.ScaleDeploymentRequest(
            name=name, num_replicas=num_replicas, wait=wait, timeout_s=timeout_s
        )
        return self._call(self._stub.ScaleDeployment, request).deployment

    def versions(self, name: str) -> list[cp.DeploymentVersion]:
        """Every stored apply of `name`, oldest first."""
        request = cp.ListDeploymentVersionsRequest(name=name)
        return list(self._call(self._stub.ListDeploymentVersions, request).versions)

    def rollback(
        self, name: str, version: str = "", *, wait: bool = True, timeout_s: float = 0
    ) -> cp.RollbackDeploymentResponse:
        """Applies a stored version again (default: the one before the current)."""
        request = cp.RollbackDeploymentRequest(
            name=name, version=version, wait=wait, timeout_s=timeout_s
        )
        return self._call(self._stub.RollbackDeployment, request)

    def delete(self, name: str, *, wait: bool = True) -> None:
        self._call(self._stub.DeleteDeployment, cp.DeleteDeploymentRequest(name=name, wait=wait))

    def get(self, name: str) -> cp.Deployment:
        return self._call(self._stub.GetDeployment, cp.GetDeploymentRequest(name=name)).deployment

    def describe_deployment(self, name: str) -> cp.DescribeDeploymentResponse:
        """The methods deployment `name` answers ("app.Name" for one of an
        application), each with its parameters and whether it streams, as a
        running replica reports them. Raises NotFound for an unknown
        deployment, Unavailable when none of its replicas runs."""
        request = cp.DescribeDeploymentRequest(name=name)
        return self._call(self._stub.DescribeDeployment, request)

    def list(self) -> list[cp.Deployment]:
        """Every deployment, page by page."""
        return self._all_pages(
            self._stub.ListDeployments, cp.ListDeploymentsRequest(), "deployments"
        )

    def shutdown(self, *, keep_deployments: bool = False) -> None:
        request = cp.ShutdownRequest(keep_deployments=keep_deployments)
        self._call(self._stub.Shutdown, request)

    def watch_events(
        self,
        *,
        deployment: str = "",
        application: str = "",
        after_id: int = 0,
        backlog: int = 0,
        follow: bool = True,
    ) -> Stream[cp.Event]:
        """The stored events (after `after_id`, or the latest `backlog`), then
        with `follow` each new one until the stream is closed."""
        request = cp.WatchEventsRequest(
            deployment=deployment, application=application, after_id=after_id,
            backlog=backlog, no_follow=not follow,
        )  # fmt: skip
        call = self._stub.WatchEvents(request, metadata=self._metadata)
        return Stream(call, lambda reply: reply.event, self._error)

    def server_info(self) -> cp.GetServerInfoResponse:
        """Where this Capstan serves (proxy URL, metrics URL, state folder)."""
        return self._call(self._stub.GetServerInfo, cp.GetServerInfoRequest())

    def last_event_id(self) -> int:
        """The newest event's id (0 if none): a cursor to watch from."""
        return max((event.id for event in self.watch_events(backlog=1, follow=False)), default=0)

    def stream_logs(
        self, deployment: str, *, replica: str = "", since_s: float = 0, follow: bool = False
    ) -> Stream[cp.StreamLogsResponse]:
        """Lines of the deployment's replicas' output (or one replica's)."""
        request = cp.StreamLogsRequest(
            deployment=deployment, replica=replica, since_s=since_s, follow=follow
        )
        call = self._stub.StreamLogs(request, metadata=self._metadata)
        return Stream(call, lambda reply: reply, self._error)

    def proxy_status(self) -> cp.ProxyStatus:
        """The proxy the control plane supervises: state, pid, restarts."""
        return self._call(self._stub.GetProxyStatus, cp.GetProxyStatusRequest()).proxy

    def close(self) -> None:
        self._channel.close()

    def _all_pages(self, method, request, field: str) -> list:
        """The items of `field` over every page of a List call (AIP-158):
        one page alone may be cut short to stay under the message limit."""
        found: list = []
        while True:
            reply = self._call(method, request)
            found.extend(getattr(reply, field))
            if not reply.next_page_token:
                return found
            request.page_token = reply.next_page_token

    def _call(self, method, request):
        try:
            return method(request, metadata=self._metadata)
        except grpc.RpcError as error:
            raise self._error(error) from None

    def _error(self, error: grpc.RpcError) -> CapstanError:
        """The CapstanError for a failed call, saying what to do when nothing
        (or something else) answers at the address."""
        code = error.code()  # type: ignore[attr-defined]
        details = (error.details() or "").lower()  # type: ignore[attr-defined]
        if code == grpc.StatusCode.UNAVAILABLE and "connect" in details:
            return error_for_code(
                code,
                f"nothing is running at {self.address} — start one with `capstan start`, "
                "or point --address (or $CAPSTAN_ADDRESS) at yours",
            )
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return error_for_code(
                code,
                f"{self.address} is not a Capstan control plane (or an older one without "
                "this call); point --address (or $CAPSTAN_ADDRESS) at one",
            )
        return from_rpc_error(error)


class Stream(Generic[_T]):
    """A server stream's messages. `close()`, from any thread, ends it: the
    iteration then stops quietly."""

    def __init__(
        self, call: Any, unwrap: Callable[[Any], _T], to_error: Callable[[grpc.RpcError], Exception]
    ) -> None:
        self._call = call
        self._unwrap = unwrap
        self._to_error = to_error
        self._is_closed = False

    def __iter__(self) -> Stream[_T]:
        return self

    def __next__(self) -> _T:
        try:
            return self._unwrap(next(self._call))
        except grpc.RpcError as error:
            if self._is_closed:
                raise StopIteration from None
            raise self._to_error(error) from None

    def close(self) -> None:
        self._is_closed = True
        self._call.cancel()

"""A blocking client for the ControlPlaneService, with errors mapped to
capstan.errors. The SDK and the CLI use it; any gRPC client may do the same."""

from __future__ import annotations

import os

import grpc

from capstan import defaults
from capstan.channels import channel_options
from capstan.errors import from_rpc_error
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import controlplane_pb2_grpc, deployment_pb2


def default_address() -> str:
    """The control plane to talk to: $CAPSTAN_ADDRESS, else the local default."""
    return os.environ.get("CAPSTAN_ADDRESS", defaults.CONTROL_PLANE_ADDRESS)


def default_token() -> str:
    """The bearer token to send: $CAPSTAN_TOKEN, else none."""
    return os.environ.get("CAPSTAN_TOKEN", "")


class ControlPlaneClient:
    """One channel to one control plane; methods block and raise CapstanError.

    `token` (default $CAPSTAN_TOKEN) goes with every call as a bearer token;
    an empty one sends none.
    """

    def __init__(self, address: str | None = None, token: str | None = None) -> None:
        self.address = address or default_address()
        token = default_token() if token is None else token
        self._metadata = [("authorization", f"Bearer {token}")] if token else None
        self._channel = grpc.insecure_channel(self.address, options=channel_options())
        self._stub = controlplane_pb2_grpc.ControlPlaneServiceStub(self._channel)

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
        request = cp.ApplyDeploymentRequest(spec=spec, wait=wait, timeout_s=timeout_s)
        return self._call(self._stub.ApplyDeployment, request)

    def apply_application(
        self, app: cp.ApplicationSpec, *, wait: bool = True, timeout_s: float = 0
    ) -> cp.ApplyApplicationResponse:
        request = cp.ApplyApplicationRequest(application=app, wait=wait, timeout_s=timeout_s)
        return self._call(self._stub.ApplyApplication, request)

    def delete_application(self, name: str, *, wait: bool = True) -> None:
        request = cp.DeleteApplicationRequest(name=name, wait=wait)
        self._call(self._stub.DeleteApplication, request)

    def get_application(self, name: str) -> cp.Application:
        request = cp.GetApplicationRequest(name=name)
        return self._call(self._stub.GetApplication, request).application

    def list_applications(self) -> list[cp.Application]:
        reply = self._call(self._stub.ListApplications, cp.ListApplicationsRequest())
        return list(reply.applications)

    def delete(self, name: str, *, wait: bool = True) -> None:
        self._call(self._stub.DeleteDeployment, cp.DeleteDeploymentRequest(name=name, wait=wait))

    def get(self, name: str) -> cp.Deployment:
        return self._call(self._stub.GetDeployment, cp.GetDeploymentRequest(name=name)).deployment

    def list(self) -> list[cp.Deployment]:
        return list(self._call(self._stub.ListDeployments, cp.ListDeploymentsRequest()).deployments)

    def shutdown(self, *, keep_deployments: bool = False) -> None:
        request = cp.ShutdownRequest(keep_deployments=keep_deployments)
        self._call(self._stub.Shutdown, request)

    def proxy_status(self) -> cp.ProxyStatus:
        """The proxy the control plane supervises: state, pid, restarts."""
        return self._call(self._stub.GetProxyStatus, cp.GetProxyStatusRequest()).proxy

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request):
        try:
            return method(request, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

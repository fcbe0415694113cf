"""A blocking client for the ControlPlaneService, with errors mapped to
capstan.errors. The SDK and the CLI use it; any gRPC client may do the same."""

from __future__ import annotations

import os

import grpc

from capstan import defaults
from capstan.channels import channel_options
from capstan.errors import from_rpc_error
from capstan.tls import control_plane_credentials
from capstan.uploads import Uploader
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
        reply = self._call(self._stub.ListApplications, cp.ListApplicationsRequest())
        return list(reply.applications)

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

    def list(self) -> list[cp.Deployment]:
        return list(self._call(self._stub.ListDeployments, cp.ListDeploymentsRequest()).deployments)

    def shutdown(self, *, keep_deployments: bool = False) -> None:
        request = cp.ShutdownRequest(keep_deployments=keep_deployments)
        self._call(self._stub.Shutdown, request)

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request):
        try:
            return method(request, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

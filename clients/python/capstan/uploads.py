"""Ships the caller's `runtime_env.working_dir` folders, as Ray does: each
local folder a spec names is packed (`capstan.packing`), uploaded through
PackageService unless the control plane has it already (or resumed where an
interrupted upload stopped), and replaced in the spec by its package URI,
"capstan-package://<sha256>". A spec that already names a package (or any
other URI, which Ray fetches itself) is left as it is."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import grpc

from capstan.errors import from_rpc_error
from capstan.packing import Package, pack
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import deployment_pb2, packages_pb2_grpc
from capstan.v1 import packages_pb2 as pk
from executors.options import package_uri

CHUNK_BYTES = 1 << 20
_FORMATS = {"zip": pk.PACKAGE_FORMAT_ZIP, "tar.gz": pk.PACKAGE_FORMAT_TAR_GZ}
Metadata = Sequence[tuple[str, str]] | None


class Uploader:
    """Uploads packages over one channel, with the caller's call metadata."""

    def __init__(self, channel: grpc.Channel, metadata: Metadata = None) -> None:
        self._stub = packages_pb2_grpc.PackageServiceStub(channel)
        self._metadata = metadata

    def ship_deployment(self, spec: deployment_pb2.DeploymentSpec) -> deployment_pb2.DeploymentSpec:
        """`spec` with its local working_dir (if any) uploaded and named by URI."""
        shipped = deployment_pb2.DeploymentSpec()
        shipped.CopyFrom(spec)
        self._ship([shipped])
        return shipped

    def ship_application(self, app: cp.ApplicationSpec) -> cp.ApplicationSpec:
        """`app` with every deployment's local working_dir uploaded."""
        shipped = cp.ApplicationSpec()
        shipped.CopyFrom(app)
        self._ship(list(shipped.deployments))
        return shipped

    def _ship(self, specs: list[deployment_pb2.DeploymentSpec]) -> None:
        uris: dict[str, str] = {}  # a folder named by several deployments is packed once
        for spec in specs:
            env = spec.replica_options.runtime_env
            if not env.working_dir or "://" in env.working_dir:
                continue  # a package already, or a URI for Ray to fetch (s3://, https://)
            folder = os.path.abspath(env.working_dir)  # relative to the caller, as in Ray
            if folder not in uris:
                uris[folder] = self.upload(pack(folder))
            env.working_dir = uris[folder]

    def upload(self, package: Package) -> str:
        """Makes sure the control plane stores `package`; its URI."""
        state = self._call(self._stub.GetPackage, pk.GetPackageRequest(sha256=package.sha256))
        if state.state != pk.PACKAGE_STATE_STORED:
            offset = state.received_bytes if state.state == pk.PACKAGE_STATE_PARTIAL else 0
            self._call(self._stub.UploadPackage, _requests(package, offset))
        return package_uri(package.sha256)

    def _call(self, method, request):
        try:
            return method(request, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None


def _requests(package: Package, offset: int) -> Iterator[pk.UploadPackageRequest]:
    """The upload's messages: metadata, then the bytes from `offset` on."""
    metadata = pk.PackageMetadata(
        sha256=package.sha256,
        size_bytes=len(package.data),
        format=_FORMATS[package.format],
        offset=offset,
    )
    yield pk.UploadPackageRequest(metadata=metadata)
    for start in range(offset, len(package.data), CHUNK_BYTES):
        yield pk.UploadPackageRequest(chunk=package.data[start : start + CHUNK_BYTES])

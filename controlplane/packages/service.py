"""The gRPC edge of packages: capstan.v1.PackageService. Uploads of one
package are serialised, so that two clients shipping the same folder store
it once; errors become statuses through `answers_errors`."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator

import grpc

from capstan.errors import InvalidSpec, answers_errors
from capstan.v1 import packages_pb2 as pk
from capstan.v1 import packages_pb2_grpc
from controlplane.packages.store import (
    PackageStore,
    UploadMetadata,
    UploadOffsetMismatch,
    check_sha256,
    to_proto,
)

log = logging.getLogger("capstan.controlplane.packages")


class PackageService(packages_pb2_grpc.PackageServiceServicer):
    """Receives uploads into a `PackageStore` and says what it holds."""

    def __init__(self, store: PackageStore) -> None:
        self._store = store
        self._locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )
        # Uploads holding or awaiting each lock: it goes when the last does.
        self._users: collections.Counter[str] = collections.Counter()

    @answers_errors
    async def UploadPackage(
        self,
        request_iterator: AsyncIterator[pk.UploadPackageRequest],
        context: grpc.aio.ServicerContext,
    ) -> pk.UploadPackageResponse:
        """Stores the streamed archive once its hash checks out."""
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("metadata"):
            raise InvalidSpec("the first message of an upload must carry metadata")
        upload = UploadMetadata.from_proto(first.metadata, self._store.max_bytes)
        self._users[upload.sha256] += 1
        try:
            async with self._locks[upload.sha256]:
                return await self._receive(upload, request_iterator)
        finally:
            self._users[upload.sha256] -= 1
            if not self._users[upload.sha256]:
                del self._users[upload.sha256], self._locks[upload.sha256]

    async def _receive(
        self, upload: UploadMetadata, requests: AsyncIterator[pk.UploadPackageRequest]
    ) -> pk.UploadPackageResponse:
        store = self._store
        if (archive := store.archive(upload.sha256)) is not None:
            return pk.UploadPackageResponse(package=to_proto(archive), already_stored=True)
        received = await asyncio.to_thread(store.received, upload.sha256)
        if upload.offset != received:
            raise UploadOffsetMismatch(
                f"package {upload.sha256}: the control plane kept {received} bytes of it; "
                f"resume from offset {received}, not {upload.offset}"
            )
        async for message in requests:
            if not message.HasField("chunk"):
                raise InvalidSpec("only the first message of an upload may carry metadata")
            received += len(message.chunk)
            if received > upload.size_bytes:
                await asyncio.to_thread(store.discard, upload.sha256)
                raise InvalidSpec(
                    f"package {upload.sha256}: more bytes came than size_bytes "
                    f"({upload.size_bytes}); nothing was stored"
                )
            await asyncio.to_thread(store.append, upload.sha256, message.chunk)
        if received < upload.size_bytes:
            raise InvalidSpec(
                f"package {upload.sha256}: the upload ended after {received} of "
                f"{upload.size_bytes} bytes; resume it from offset {received}"
            )
        archive = await asyncio.to_thread(store.finish, upload)
        log.info("stored package %s (%d bytes)", upload.sha256, upload.size_bytes)
        return pk.UploadPackageResponse(package=to_proto(archive))

    @answers_errors
    async def GetPackage(
        self, request: pk.GetPackageRequest, context: grpc.aio.ServicerContext
    ) -> pk.GetPackageResponse:
        """Whether the package is stored, or how much of it an upload left."""
        check_sha256(request.sha256)
        if (archive := self._store.archive(request.sha256)) is not None:
            return pk.GetPackageResponse(state=pk.PACKAGE_STATE_STORED, package=to_proto(archive))
        if received := self._store.received(request.sha256):
            return pk.GetPackageResponse(state=pk.PACKAGE_STATE_PARTIAL, received_bytes=received)
        return pk.GetPackageResponse(state=pk.PACKAGE_STATE_ABSENT)

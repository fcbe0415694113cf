"""PackageService on a real control plane (127.0.0.1:0, local executor):
uploads are content-addressed, idempotent, resumable, checked against their
hash and the size limit; an apply naming a package is checked against it at
once; and packages no stored deployment names are collected."""

from __future__ import annotations

import asyncio
import hashlib
import io
import pathlib
import zipfile
from collections.abc import AsyncIterator, Iterable

import grpc
import pytest

from capstan.errors import Unauthenticated
from capstan.packing import Package, pack
from capstan.uploads import Uploader
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import controlplane_pb2_grpc, deployment_pb2, packages_pb2_grpc
from capstan.v1 import packages_pb2 as pk
from controlplane.server import ControlPlane
from controlplane.settings import Settings
from executors.options import package_uri
from tests.support.reflection import reflected_methods, reflected_services
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

MAX_BYTES = 64 << 10
GRACE_S = 0.5


class Plane:
    """A control plane with its PackageService and ControlPlaneService stubs."""

    def __init__(self, plane: ControlPlane, channel: grpc.aio.Channel) -> None:
        self.plane = plane
        self.packages = packages_pb2_grpc.PackageServiceStub(channel)
        self.control = controlplane_pb2_grpc.ControlPlaneServiceStub(channel)

    async def state(self, sha256: str) -> pk.GetPackageResponse:
        return await self.packages.GetPackage(pk.GetPackageRequest(sha256=sha256), timeout=5)

    async def upload(
        self, package: Package, *, offset: int = 0, data: bytes | None = None, sha256: str = ""
    ) -> pk.UploadPackageResponse:
        """Uploads `data` (default: the package's bytes from `offset`)."""
        metadata = pk.PackageMetadata(
            sha256=sha256 or package.sha256,
            size_bytes=len(package.data),
            format=pk.PACKAGE_FORMAT_ZIP,
            offset=offset,
        )
        body = package.data[offset:] if data is None else data
        chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
        return await self.packages.UploadPackage(requests(metadata, chunks), timeout=10)

    async def apply(self, working_dir: str, import_path: str = "greet:Greeter") -> cp.Deployment:
        spec = deployment_pb2.DeploymentSpec(name="greeter", num_replicas=0)
        spec.code.import_path = import_path
        spec.replica_options.runtime_env.working_dir = working_dir
        request = cp.ApplyDeploymentRequest(spec=spec, wait=True, timeout_s=20)
        return (await self.control.ApplyDeployment(request, timeout=30)).deployment


async def requests(
    metadata: pk.PackageMetadata, chunks: Iterable[bytes]
) -> AsyncIterator[pk.UploadPackageRequest]:
    yield pk.UploadPackageRequest(metadata=metadata)
    for chunk in chunks:
        yield pk.UploadPackageRequest(chunk=chunk)


@pytest.fixture
async def plane(tmp_path: pathlib.Path) -> AsyncIterator[Plane]:
    settings = Settings(
        state_dir=tmp_path / "state",
        port=0,
        reconcile_interval_s=0.05,
        max_package_bytes=MAX_BYTES,
        package_grace_s=GRACE_S,
        package_gc_interval_s=0.1,
    )
    running = await ControlPlane.start(settings)
    channel = grpc.aio.insecure_channel(running.address)
    yield Plane(running, channel)
    await channel.close()
    await running.stop()


def app(tmp_path: pathlib.Path, value: str = "hello") -> Package:
    folder = tmp_path / f"app-{value}"
    folder.mkdir()
    (folder / "greet.py").write_text(
        f"class Greeter:\n    def __call__(self):\n        return {value!r}\n"
    )
    (folder / "notes.txt").write_text("x" * 20_000)  # several chunks
    return pack(folder)


async def test_an_upload_is_stored_once_and_answers_at_once_after(
    plane: Plane, tmp_path: pathlib.Path
) -> None:
    package = app(tmp_path)
    assert (await plane.state(package.sha256)).state == pk.PACKAGE_STATE_ABSENT

    first = await plane.upload(package)
    assert not first.already_stored
    assert first.package.uri == package_uri(package.sha256)
    assert first.package.size_bytes == len(package.data)
    again = await plane.upload(package, data=b"")  # the bytes are not needed again
    assert again.already_stored and again.package == first.package
    assert (await plane.state(package.sha256)).state == pk.PACKAGE_STATE_STORED


async def test_an_interrupted_upload_resumes_where_it_stopped(
    plane: Plane, tmp_path: pathlib.Path
) -> None:
    package = app(tmp_path)
    half = len(package.data) // 2
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await plane.upload(package, data=package.data[:half])
    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"resume it from offset {half}" in ended.value.details()
    kept = await plane.state(package.sha256)
    assert (kept.state, kept.received_bytes) == (pk.PACKAGE_STATE_PARTIAL, half)

    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await plane.upload(package, offset=0)
    assert wrong.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"resume from offset {half}" in wrong.value.details()

    resumed = await plane.upload(package, offset=half)
    assert resumed.package.sha256 == package.sha256
    assert (await plane.state(package.sha256)).state == pk.PACKAGE_STATE_STORED


async def test_bytes_that_do_not_match_the_hash_are_refused_and_dropped(
    plane: Plane, tmp_path: pathlib.Path
) -> None:
    package = app(tmp_path)
    claimed = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await plane.upload(package, sha256=claimed)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"not the declared {claimed}" in refused.value.details()
    assert (await plane.state(claimed)).state == pk.PACKAGE_STATE_ABSENT

    with pytest.raises(grpc.aio.AioRpcError) as unsorted:
        await plane.packages.UploadPackage(requests(pk.PackageMetadata(), []), timeout=5)
    assert unsorted.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sha256" in unsorted.value.details()


async def test_a_package_over_the_limit_is_refused_naming_the_limit(plane: Plane) -> None:
    too_big = Package(hashlib.sha256(b"big").hexdigest(), b"0" * (MAX_BYTES + 1))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await plane.upload(too_big)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"max_package_bytes) is {MAX_BYTES} bytes" in refused.value.details()


async def test_an_apply_is_checked_against_its_package_at_once(
    plane: Plane, tmp_path: pathlib.Path
) -> None:
    package = app(tmp_path)
    uri = package_uri(package.sha256)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await plane.apply(uri)
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{uri!r} is not stored" in missing.value.details()

    await plane.upload(package)
    with pytest.raises(grpc.aio.AioRpcError) as elsewhere:
        await plane.apply(uri, import_path="tests.apps.hello:Hello")
    assert elsewhere.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'tests.apps.hello:Hello'" in elsewhere.value.details()
    assert uri in elsewhere.value.details()

    deployment = await plane.apply(uri)
    assert deployment.spec.replica_options.runtime_env.working_dir == uri


async def test_packages_no_stored_deployment_names_are_collected(
    plane: Plane, tmp_path: pathlib.Path
) -> None:
    used, unused = app(tmp_path, "used"), app(tmp_path, "unused")
    await plane.upload(used)
    await plane.upload(unused)
    await plane.apply(package_uri(used.sha256))

    async def collected(package: Package) -> bool:
        return (await plane.state(package.sha256)).state == pk.PACKAGE_STATE_ABSENT

    await eventually(lambda: collected(unused), "the unused package to be collected")
    assert (await plane.state(used.sha256)).state == pk.PACKAGE_STATE_STORED

    request = cp.DeleteDeploymentRequest(name="greeter", wait=True)
    await plane.control.DeleteDeployment(request, timeout=10)
    await eventually(lambda: collected(used), "the deleted deployment's package to be collected")


async def test_uploads_need_the_control_planes_token(tmp_path: pathlib.Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", port=0, token="s3cret-token")
    running = await ControlPlane.start(settings)
    package = app(tmp_path)

    def upload(token: str) -> str:
        channel = grpc.insecure_channel(running.address)
        try:
            return Uploader(channel, [("authorization", f"Bearer {token}")]).upload(package)
        finally:
            channel.close()

    try:
        with pytest.raises(Unauthenticated):
            await asyncio.to_thread(upload, "wrong")
        assert await asyncio.to_thread(upload, "s3cret-token") == package_uri(package.sha256)
    finally:
        await running.stop()


async def test_the_sdk_resumes_an_interrupted_upload(plane: Plane, tmp_path: pathlib.Path) -> None:
    package = app(tmp_path)
    half = len(package.data) // 2
    with pytest.raises(grpc.aio.AioRpcError):
        await plane.upload(package, data=package.data[:half])

    def upload() -> str:
        channel = grpc.insecure_channel(plane.plane.address)
        try:
            return Uploader(channel).upload(package)
        finally:
            channel.close()

    assert await asyncio.to_thread(upload) == package_uri(package.sha256)
    assert (await plane.state(package.sha256)).package.size_bytes == len(package.data)


async def test_concurrent_uploads_of_one_package_store_it_once(
    plane: Plane, tmp_path: pathlib.Path
) -> None:
    package = app(tmp_path)
    answers = await asyncio.gather(*(plane.upload(package) for _ in range(3)))
    assert sorted(answer.already_stored for answer in answers) == [False, True, True]


async def test_an_archive_reaching_outside_its_folder_is_refused(
    plane: Plane, tmp_path: pathlib.Path
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../escaped.py", "x = 1\n")
    data = buffer.getvalue()
    evil = Package(hashlib.sha256(data).hexdigest(), data)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await plane.upload(evil)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'../escaped.py'" in refused.value.details()
    assert (await plane.state(evil.sha256)).state == pk.PACKAGE_STATE_ABSENT


async def test_the_package_service_is_reflected(plane: Plane) -> None:
    channel = grpc.aio.insecure_channel(plane.plane.address)
    try:
        assert "capstan.v1.PackageService" in await reflected_services(channel)
        methods = await reflected_methods(channel, "capstan.v1.PackageService")
        assert {"UploadPackage", "GetPackage"} <= methods
    finally:
        await channel.close()

"""The control plane's package store: uploaded archives kept under their
sha256 in `<state_dir>/packages/`.

    <sha256>.zip | <sha256>.tar.gz   a stored package (its mtime: last use)
    <sha256>.modules.json            its top-level modules, written first
    uploads/<sha256>.partial         an upload in progress or interrupted

An archive appears by rename only after its hash and contents were checked,
so a stored archive is always whole. Its mtime is bumped whenever an apply
names it, so that the collector's grace period protects a package between
its upload (or the check of an apply) and the stored spec that names it.

Methods do file I/O: callers on the event loop run them in a thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re

import grpc

from capstan.errors import CapstanError, InvalidSpec
from capstan.v1 import packages_pb2 as pk
from controlplane.packages.contents import check_import_path, read_modules
from controlplane.spec import DeploymentSpec
from executors.base import PackageArchive
from executors.options import package_uri

FORMATS = {pk.PACKAGE_FORMAT_ZIP: "zip", pk.PACKAGE_FORMAT_TAR_GZ: "tar.gz"}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HASH_BLOCK = 1 << 20


class PackageTooLarge(CapstanError):
    """An upload is larger than the control plane's package size limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UploadOffsetMismatch(CapstanError):
    """A resumed upload does not start where the kept part ends."""

    code = grpc.StatusCode.FAILED_PRECONDITION


def check_sha256(sha256: str) -> None:
    if not _SHA256.fullmatch(sha256):
        raise InvalidSpec(f"sha256 {sha256!r} must be 64 lowercase hex digits")


@dataclasses.dataclass(frozen=True)
class UploadMetadata:
    """The first message of an upload, checked against the size limit."""

    sha256: str
    size_bytes: int
    format: str
    offset: int

    @classmethod
    def from_proto(cls, msg: pk.PackageMetadata, max_bytes: int) -> UploadMetadata:
        check_sha256(msg.sha256)
        if msg.format not in FORMATS:
            raise InvalidSpec("metadata.format must be PACKAGE_FORMAT_ZIP or PACKAGE_FORMAT_TAR_GZ")
        if msg.size_bytes <= 0:
            raise InvalidSpec(f"metadata.size_bytes must be > 0, got {msg.size_bytes}")
        if msg.size_bytes > max_bytes:
            raise PackageTooLarge(
                f"package {msg.sha256} is {msg.size_bytes} bytes; the control plane's limit "
                f"(max_package_bytes) is {max_bytes} bytes"
            )
        if not 0 <= msg.offset <= msg.size_bytes:
            raise InvalidSpec(f"metadata.offset must lie in [0, size_bytes], got {msg.offset}")
        return cls(msg.sha256, msg.size_bytes, FORMATS[msg.format], msg.offset)


def to_proto(archive: PackageArchive) -> pk.Package:
    fmt = next(code for code, name in FORMATS.items() if name == archive.format)
    size = pathlib.Path(archive.path).stat().st_size
    return pk.Package(
        sha256=archive.sha256, size_bytes=size, format=fmt, uri=package_uri(archive.sha256)
    )


class PackageStore:
    """Uploaded packages in `folder`, each at most `max_bytes`."""

    def __init__(self, folder: pathlib.Path, max_bytes: int) -> None:
        self.folder = folder.resolve()
        self.max_bytes = max_bytes
        self._uploads = self.folder / "uploads"
        self._uploads.mkdir(parents=True, exist_ok=True)

    def archive(self, sha256: str) -> PackageArchive | None:
        """The stored package `sha256`, or None."""
        for archive_format in FORMATS.values():
            path = self.folder / f"{sha256}.{archive_format}"
            if path.is_file():
                return PackageArchive(sha256, str(path), archive_format)
        return None

    def received(self, sha256: str) -> int:
        """Bytes kept of an unfinished upload of `sha256`."""
        try:
            return self._partial(sha256).stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, sha256: str, chunk: bytes) -> None:
        with self._partial(sha256).open("ab") as partial:
            partial.write(chunk)

    def discard(self, sha256: str) -> None:
        self._partial(sha256).unlink(missing_ok=True)

    def finish(self, upload: UploadMetadata) -> PackageArchive:
        """Stores the whole upload once its size, hash and format check out;
        otherwise drops it and raises `InvalidSpec` saying what was wrong."""
        partial = self._partial(upload.sha256)
        try:
            digest = _sha256_of(partial)
            if digest != upload.sha256:
                raise InvalidSpec(
                    f"the upload's sha256 is {digest}, not the declared {upload.sha256}; "
                    "nothing was stored"
                )
            modules = read_modules(partial, upload.format)
        except InvalidSpec:
            partial.unlink(missing_ok=True)
            raise
        self._modules_file(upload.sha256).write_text(json.dumps(sorted(modules)))
        target = self.folder / f"{upload.sha256}.{upload.format}"
        os.replace(partial, target)
        return PackageArchive(upload.sha256, str(target), upload.format)

    def check(self, spec: DeploymentSpec) -> None:
        """Refuses a spec whose working_dir names a package that is not
        stored, or whose import path's module is not in it; marks the
        package used (see the module's docstring)."""
        sha256 = spec.replica.package_sha256
        if not sha256:
            return
        uri = spec.replica.working_dir
        archive = self.archive(sha256)
        if archive is None:
            field = "replica_options.runtime_env.working_dir"
            raise InvalidSpec(
                f"{field} {uri!r} is not stored on the control plane; "
                "upload it first (PackageService.UploadPackage)",
                field,
            )
        os.utime(archive.path)
        if spec.import_path:
            modules = frozenset(json.loads(self._modules_file(sha256).read_text()))
            check_import_path(spec.import_path, modules, uri)

    def collect(self, referenced: set[str], now: float, grace_s: float) -> list[str]:
        """Deletes packages (and unfinished uploads) that no stored spec
        names and that were not used for `grace_s`; their hashes."""
        removed = []
        candidates = [*self.folder.glob("*.zip"), *self.folder.glob("*.tar.gz")]
        for path in [*candidates, *self._uploads.glob("*.partial")]:
            sha256 = path.name.partition(".")[0]
            if sha256 in referenced or _mtime(path) > now - grace_s:
                continue
            path.unlink(missing_ok=True)
            if path.parent == self.folder:
                self._modules_file(sha256).unlink(missing_ok=True)
            removed.append(sha256)
        return removed

    def _partial(self, sha256: str) -> pathlib.Path:
        return self._uploads / f"{sha256}.partial"

    def _modules_file(self, sha256: str) -> pathlib.Path:
        return self.folder / f"{sha256}.modules.json"


def _sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _mtime(path: pathlib.Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")  # gone meanwhile: nothing to delete

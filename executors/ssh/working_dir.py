"""runtime_env.working_dir on SSH hosts: the control plane's folder is packed
into a deterministic archive (identical folders give identical bytes), shipped
once per host under its content hash, and unpacked per replica, which starts
inside its copy with it first on PYTHONPATH. An uploaded package's archive
is shipped the same way and unpacked once per host, into `packages/<sha256>/`."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import pathlib
import posixpath
import shlex
import tarfile
import uuid
from collections.abc import Callable

from executors.base import ExecutorError, PackageArchive
from executors.ssh.remote import Remote

# What a folder of code and small assets needs; a larger one belongs in an
# image or a package index.
MAX_ARCHIVE_BYTES = 100 << 20
# Archives unused this long are removed from the host.
MAX_IDLE_DAYS = 7
_SKIPPED = frozenset({"__pycache__", ".git"})
UNPACKER = "executors.runtime_env.unpack"


async def ship(remote: Remote, folder: str, target: str, python: str) -> None:
    """Unpacks the local `folder` into `target` on the host behind `remote`."""
    digest, archive = await asyncio.to_thread(pack, pathlib.Path(folder))
    archive_path = await _upload_once(remote, f"{digest}.tar.gz", lambda: archive)
    extract = [python, "-m", "tarfile", "-e", archive_path, target]
    await remote.run(f"mkdir -p {shlex.quote(target)} && {shlex.join(extract)}")


async def collect(remote: Remote, max_idle_days: int = MAX_IDLE_DAYS) -> None:
    """Removes the host's archives unused for `max_idle_days`. No live
    replica needs one: each runs in its own unpacked copy, and an archive
    removed meanwhile is shipped again at the next launch that wants it."""
    archives = posixpath.join(remote.workdir, "archives")
    await remote.run(
        f"find {shlex.quote(archives)} -maxdepth 1 -type f "
        f"-mtime +{max_idle_days} -delete 2>/dev/null || true"
    )


async def ship_package(remote: Remote, package: PackageArchive, python: str) -> str:
    """The folder on the host where the uploaded `package` is unpacked:
    its archive is copied there once, and unpacked once, for every replica
    that runs in it (`executors.runtime_env.unpack`)."""
    local = pathlib.Path(package.path)
    archive_path = await _upload_once(
        remote, f"{package.sha256}.{package.format}", local.read_bytes
    )
    target = posixpath.join(remote.workdir, "packages", package.sha256)
    command = [python, "-m", UNPACKER, "--archive", archive_path]
    await remote.run(shlex.join([*command, "--format", package.format, "--target", target]))
    return target


async def _upload_once(remote: Remote, name: str, read: Callable[[], bytes]) -> str:
    """The path of `archives/<name>` on the host, copied there (from
    `read()`) unless it is there already: names are content hashes."""
    archive_path = posixpath.join(remote.workdir, "archives", name)
    if await remote.read(archive_path, 1) is None:
        partial = f"{archive_path}.{uuid.uuid4().hex}.partial"
        await remote.write(partial, await asyncio.to_thread(read))
        # Another launch may be shipping the same archive: rename is atomic.
        await remote.run(f"mv -f {shlex.quote(partial)} {shlex.quote(archive_path)}")
    else:  # used again: its age is how long it has been idle (see collect)
        await remote.run(f"touch {shlex.quote(archive_path)}")
    return archive_path


def pack(folder: pathlib.Path) -> tuple[str, bytes]:
    """The folder as gzipped tar bytes and their sha256, independent of
    timestamps and owners so that the hash names the content."""
    if not folder.is_dir():
        message = f"runtime_env.working_dir {str(folder)!r} is not a folder on the control plane"
        raise ExecutorError(message, retryable=False)
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for path in _files(folder):
            name = path.relative_to(folder).as_posix()
            archive.add(path, arcname=name, recursive=False, filter=_normalise)
    data = buffer.getvalue()
    if len(data) > MAX_ARCHIVE_BYTES:
        message = f"runtime_env.working_dir {str(folder)!r} packs to {len(data) >> 20} MiB"
        raise ExecutorError(
            f"{message}; the limit is {MAX_ARCHIVE_BYTES >> 20} MiB", retryable=False
        )
    return hashlib.sha256(data).hexdigest(), data


def _files(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(
        path
        for path in folder.rglob("*")
        if not _SKIPPED.intersection(path.relative_to(folder).parts)
        and (path.is_file() or path.is_dir())
    )


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info

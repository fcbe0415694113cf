"""runtime_env.working_dir on SSH hosts: the control plane's folder is packed
into a deterministic archive (identical folders give identical bytes), shipped
once per host under its content hash, and unpacked per replica, which starts
inside its copy with it first on PYTHONPATH."""

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

from executors.base import ExecutorError
from executors.ssh.remote import Remote

# What a folder of code and small assets needs; a larger one belongs in an
# image or a package index.
MAX_ARCHIVE_BYTES = 100 << 20
# Archives unused this long are removed from the host.
MAX_IDLE_DAYS = 7
_SKIPPED = frozenset({"__pycache__", ".git"})


async def ship(remote: Remote, folder: str, target: str, python: str) -> None:
    """Unpacks the local `folder` into `target` on the host behind `remote`."""
    digest, archive = await asyncio.to_thread(pack, pathlib.Path(folder))
    archive_path = posixpath.join(remote.workdir, "archives", f"{digest}.tar.gz")
    if await remote.read(archive_path, 1) is None:
        partial = f"{archive_path}.{uuid.uuid4().hex}.partial"
        await remote.write(partial, archive)
        # Another launch may be shipping the same archive: rename is atomic.
        await remote.run(f"mv -f {shlex.quote(partial)} {shlex.quote(archive_path)}")
    else:  # used again: its age is how long it has been idle (see collect)
        await remote.run(f"touch {shlex.quote(archive_path)}")
    extract = [python, "-m", "tarfile", "-e", archive_path, target]
    await remote.run(f"mkdir -p {shlex.quote(target)} && {shlex.join(extract)}")


async def collect(remote: Remote, max_idle_days: int = MAX_IDLE_DAYS) -> None:
    """Removes the host's archives unused for `max_idle_days`. No live
    replica needs one: each runs in its own unpacked copy, and an archive
    removed meanwhile is shipped again at the next launch that wants it."""
    archives = posixpath.join(remote.workdir, "archives")
    await remote.run(
        f"find {shlex.quote(archives)} -maxdepth 1 -name '*.tar.gz' "
        f"-mtime +{max_idle_days} -delete 2>/dev/null || true"
    )


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

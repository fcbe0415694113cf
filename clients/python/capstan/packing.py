"""A local folder as a deterministic zip archive: the package a spec's
`runtime_env.working_dir` ships from the caller's machine.

Entries are sorted, timestamps fixed and modes reduced to "executable or
not", so the same files give the same bytes and the same sha256 on every
machine and every run: re-deploying an unchanged folder names the same
package and rolls nothing out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pathlib
import stat
import zipfile

from capstan.errors import InvalidSpec

# The control plane's default limit too; a larger folder belongs in an image
# or a package index.
MAX_PACKAGE_BYTES = 100 << 20
# Never code: version control, bytecode caches, virtualenvs, Capstan's state.
SKIPPED = frozenset({".git", "__pycache__", ".venv", ".capstan"})
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


@dataclasses.dataclass(frozen=True)
class Package:
    """A packed folder: its archive's bytes and their sha256."""

    sha256: str
    data: bytes
    format: str = "zip"


def pack(folder: str | os.PathLike[str], max_bytes: int = MAX_PACKAGE_BYTES) -> Package:
    """The folder as a zip archive. Raises `InvalidSpec` when it is not a
    folder or packs to more than `max_bytes`."""
    root = pathlib.Path(folder)
    if not root.is_dir():
        raise InvalidSpec(
            f"runtime_env.working_dir {str(folder)!r} is not a folder on this machine"
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in entries(root):
            _add(archive, root, path)
    data = buffer.getvalue()
    if len(data) > max_bytes:
        raise InvalidSpec(
            f"runtime_env.working_dir {str(folder)!r} packs to {len(data)} bytes; the limit is "
            f"{max_bytes} bytes (skip data files, or ship them another way)"
        )
    return Package(hashlib.sha256(data).hexdigest(), data)


def entries(root: pathlib.Path) -> list[pathlib.Path]:
    """Every folder and file under `root` to pack, sorted, without the
    `SKIPPED` names; symbolic links to folders are not followed."""
    found = []
    for folder, folders, files in os.walk(root):
        folders[:] = [name for name in folders if name not in SKIPPED]
        here = pathlib.Path(folder)
        found += [here / name for name in folders]
        found += [here / name for name in files if (here / name).is_file()]
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def _add(archive: zipfile.ZipFile, root: pathlib.Path, path: pathlib.Path) -> None:
    name = path.relative_to(root).as_posix()
    if path.is_dir() and not path.is_symlink():
        info = zipfile.ZipInfo(name + "/", _EPOCH)
        info.external_attr = (stat.S_IFDIR | 0o755) << 16
        archive.writestr(info, b"")
        return
    executable = os.access(path, os.X_OK)
    info = zipfile.ZipInfo(name, _EPOCH)
    info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, path.read_bytes())

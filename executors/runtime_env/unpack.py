"""`python -m executors.runtime_env.unpack`: unpacks an uploaded package's
archive into the folder its replicas run in, once per package on a node.

    --archive FILE --format zip|tar.gz --target FOLDER

Like the builder, it needs only the standard library, so the local executor
calls `unpack` in-process and the SSH executor runs this very program on the
host. A package is named by its content hash, so a folder that exists is
complete and never changes: it is unpacked beside the target and renamed
into place, and of two concurrent unpackers the second one's copy is
dropped. Prints one JSON line, `{"path": FOLDER, "unpacked": BOOL}`; on a bad
archive exits 1 with a message on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import posixpath
import shutil
import sys
import tarfile
import uuid
import zipfile
from collections.abc import Sequence

FORMATS = ("zip", "tar.gz")


class UnpackError(Exception):
    """The archive cannot be unpacked; the message is for the user."""


def unpack(archive: pathlib.Path, archive_format: str, target: pathlib.Path) -> bool:
    """Makes `target` hold the archive's files, unless it already does;
    whether this call unpacked them."""
    if target.is_dir():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        _extract(archive, archive_format, partial)
        try:
            os.rename(partial, target)
        except OSError:
            if not target.is_dir():
                raise
            return False  # another unpacker was first: its copy is the same
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return True


def _extract(archive: pathlib.Path, archive_format: str, folder: pathlib.Path) -> None:
    folder.mkdir(parents=True)
    try:
        if archive_format == "zip":
            with zipfile.ZipFile(archive) as opened:
                _check_names(opened.namelist(), archive)
                opened.extractall(folder)
        elif archive_format == "tar.gz":
            with tarfile.open(archive, "r:gz") as opened:
                _check_names(opened.getnames(), archive)
                opened.extractall(folder, filter="data")
        else:
            raise UnpackError(f"unknown package format {archive_format!r}; known: {FORMATS}")
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as error:
        raise UnpackError(f"cannot unpack package {archive.name}: {error}") from error


def _check_names(names: Sequence[str], archive: pathlib.Path) -> None:
    """Every entry stays inside the folder (no absolute path, no "..")."""
    for name in names:
        if name.startswith("/") or ".." in posixpath.normpath(name).split("/"):
            raise UnpackError(f"package {archive.name} holds an entry outside its folder: {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m executors.runtime_env.unpack")
    parser.add_argument("--archive", required=True, help="the package's archive")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--target", required=True, help="the folder to unpack into")
    args = parser.parse_args(argv)
    try:
        unpacked = unpack(pathlib.Path(args.archive), args.format, pathlib.Path(args.target))
    except UnpackError as error:
        print(error, file=sys.stderr)
        return 1
    print(json.dumps({"path": args.target, "unpacked": unpacked}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

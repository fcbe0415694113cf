"""What an archive holds, as far as an apply needs to know: the top-level
module names it makes importable. Read once, when the upload is checked, so
that an apply never unpacks an archive and never runs user code."""

from __future__ import annotations

import pathlib
import tarfile
import zipfile
from collections.abc import Iterable

from capstan.errors import InvalidSpec

# Suffixes of a file that `import name` can load from the folder's root.
_MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd")


def top_level_modules(names: Iterable[str]) -> frozenset[str]:
    """The module names importable from the root of a folder holding
    `names` (archive entries): `m.py`, a package or namespace folder `m/`,
    an extension `m.cpython-311-x86_64-linux-gnu.so`."""
    modules = set()
    for name in names:
        first, slash, _ = name.lstrip("./").partition("/")
        if slash:
            modules.add(first)
        elif first.endswith(_MODULE_SUFFIXES):
            modules.add(first.partition(".")[0])
    return frozenset(m for m in modules if m.isidentifier())


def read_modules(archive: pathlib.Path, archive_format: str) -> frozenset[str]:
    """The top-level modules of an uploaded archive. Raises `InvalidSpec`
    for one that cannot be read as its format, or that holds an entry
    which would unpack outside its folder (executors refuse those too, but
    only once a replica starts)."""
    try:
        if archive_format == "zip":
            with zipfile.ZipFile(archive) as opened:
                names = opened.namelist()
        else:
            with tarfile.open(archive, "r:gz") as opened:
                names = opened.getnames()
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as error:
        message = f"the upload is not a readable {archive_format} archive: {error}"
        raise InvalidSpec(message) from None
    if outside := [n for n in names if n.startswith("/") or ".." in n.split("/")]:
        raise InvalidSpec(f"the upload holds an entry outside its folder: {outside[0]!r}")
    return top_level_modules(names)


def check_import_path(import_path: str, modules: frozenset[str], uri: str) -> None:
    """Refuses an import path whose top-level module is not in the package:
    the replica would fail to import it only after the apply."""
    top = import_path.partition(":")[0].partition(".")[0]
    if top not in modules:
        shown = ", ".join(sorted(modules)[:10]) or "none"
        raise InvalidSpec(
            f"code.import_path {import_path!r}: module {top!r} is not in the package "
            f"replica_options.runtime_env.working_dir {uri!r} (its top-level modules: {shown})",
            "code.import_path",
        )

"""Packages as pure code: a folder packs to the same bytes wherever and
whenever it is packed, an archive's top-level modules decide whether an
import path can resolve in it, and unpacking stays inside its folder."""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import zipfile

import pytest

from capstan.errors import InvalidSpec
from capstan.packing import pack
from controlplane.packages.contents import check_import_path, top_level_modules
from executors.options import ReplicaOptions, package_uri
from executors.runtime_env.unpack import UnpackError, unpack

SHA = "ab" * 32


def make_app(root: pathlib.Path) -> pathlib.Path:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "mymod.py").write_text("VALUE = 1\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "data.txt").write_text("data\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    for skipped in (".git", "__pycache__", ".venv", "pkg/__pycache__"):
        (root / skipped).mkdir()
        (root / skipped / "junk").write_text("not code\n")
    return root


def names(data: bytes) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(data)).namelist()


def test_a_folder_packs_to_sorted_entries_without_caches_or_version_control(
    tmp_path: pathlib.Path,
) -> None:
    package = pack(make_app(tmp_path / "app"))
    assert names(package.data) == [
        "mymod.py", "pkg/", "pkg/__init__.py", "pkg/sub/", "pkg/sub/data.txt", "run.sh",
    ]  # fmt: skip
    modes = {
        i.filename: i.external_attr >> 16 & 0o777
        for i in zipfile.ZipFile(io.BytesIO(package.data)).infolist()
    }
    assert modes["run.sh"] == 0o755 and modes["mymod.py"] == 0o644


def test_the_same_files_pack_to_the_same_hash_elsewhere_and_later(tmp_path: pathlib.Path) -> None:
    first = pack(make_app(tmp_path / "a"))
    copy = shutil.copytree(tmp_path / "a", tmp_path / "b")
    for path in pathlib.Path(copy).rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))  # other times, same content
    assert pack(copy) == first
    (pathlib.Path(copy) / "mymod.py").write_text("VALUE = 2\n")
    assert pack(copy).sha256 != first.sha256


def test_packing_refuses_a_missing_folder_and_one_over_the_limit(tmp_path: pathlib.Path) -> None:
    with pytest.raises(InvalidSpec, match="is not a folder on this machine"):
        pack(tmp_path / "nowhere")
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "blob.bin").write_bytes(os.urandom(4096))
    with pytest.raises(InvalidSpec, match="the limit is 1000 bytes"):
        pack(tmp_path / "big", max_bytes=1000)


@pytest.mark.parametrize(
    ("entries", "modules"),
    [
        (["mymod.py"], {"mymod"}),
        (["pkg/", "pkg/__init__.py"], {"pkg"}),
        (["ns/mod.py"], {"ns"}),  # a namespace package: no __init__.py
        (["fast.cpython-311-x86_64-linux-gnu.so"], {"fast"}),
        (["./lead.py"], {"lead"}),
        (["README.md", "data/x.csv", "my-app/x.py"], {"data"}),  # "my-app" is no module name
    ],
)
def test_top_level_modules(entries: list[str], modules: set[str]) -> None:
    assert top_level_modules(entries) == modules


@pytest.mark.parametrize(
    ("import_path", "is_found"),
    [
        ("mymod:app", True),
        ("pkg.sub.mod:Model", True),  # only the top-level module is checked
        ("other:app", False),
        ("mymodule:app", False),
    ],
)
def test_an_import_path_resolves_only_through_its_top_level_module(
    import_path: str, is_found: bool
) -> None:
    modules = frozenset({"mymod", "pkg"})
    uri = package_uri(SHA)
    if is_found:
        check_import_path(import_path, modules, uri)
        return
    with pytest.raises(InvalidSpec) as refused:
        check_import_path(import_path, modules, uri)
    assert import_path in refused.value.message and uri in refused.value.message
    assert "mymod, pkg" in refused.value.message


def test_a_package_working_dir_must_name_a_sha256() -> None:
    options = ReplicaOptions(working_dir=package_uri(SHA))
    assert options.is_package and options.package_sha256 == SHA
    assert not ReplicaOptions(working_dir="/srv/app").is_package
    with pytest.raises(InvalidSpec, match="64 lowercase hex digits"):
        ReplicaOptions(working_dir="capstan-package://ABC")


def test_unpacking_happens_once_and_keeps_entries_inside(tmp_path: pathlib.Path) -> None:
    archive = tmp_path / "app.zip"
    archive.write_bytes(pack(make_app(tmp_path / "app")).data)
    target = tmp_path / "cache" / SHA
    assert unpack(archive, "zip", target) is True
    assert (target / "pkg" / "sub" / "data.txt").read_text() == "data\n"
    assert unpack(archive, "zip", target) is False
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".partial")]

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as opened:
        opened.writestr("../escaped.py", "x = 1\n")
    with pytest.raises(UnpackError, match="outside its folder"):
        unpack(evil, "zip", tmp_path / "cache" / "evil")
    assert not (tmp_path / "cache" / "evil").exists()
    assert not (tmp_path / "escaped.py").exists()

"""The public API changes only on purpose: `buf breaking` (FILE rules) against
the release protos/RELEASE names, as its git tag when this clone has it and
as the image scripts/release_protos.py committed (a clone may lack tags).
capstan.internal is exempt: it may change in any release."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.support.buf import ROOT, buf, copy_protos, drop_line

_TAG = "v0.0.1"


def release(root: pathlib.Path) -> str:
    """The release protos/RELEASE names."""
    return (root / "protos" / "RELEASE").read_text().strip()


def baselines(root: pathlib.Path, tag: str) -> list[str]:
    """What `buf breaking` compares with: the committed image, and the git
    tag too when this clone has it."""
    found = [f"protos/releases/{tag}.binpb"]
    ref = f"refs/tags/{tag}"
    if (root / ".git").exists() and _git(root, "rev-parse", "-q", "--verify", ref, check=False):
        found.append(f".git#tag={tag},subdir=protos")
    return found


def breaking(root: pathlib.Path, baseline: str) -> subprocess.CompletedProcess[str]:
    return buf("breaking", "protos", "--against", baseline, cwd=root)


def test_the_public_api_is_compatible_with_the_last_release() -> None:
    tag = release(ROOT)
    assert (ROOT / "protos" / "releases" / f"{tag}.binpb").is_file(), (
        f"protos/RELEASE names {tag} but its image is missing: "
        f"run `python scripts/release_protos.py {tag}`"
    )
    for baseline in baselines(ROOT, tag):
        result = breaking(ROOT, baseline)
        assert result.returncode == 0, (
            f"the public protos break compatibility with release {tag} ({baseline}):\n"
            f"{result.stdout}{result.stderr}"
        )


@pytest.mark.parametrize("is_tagged", [False, True], ids=["image", "git-tag"])
def test_a_deleted_public_field_is_caught(tmp_path: pathlib.Path, is_tagged: bool) -> None:
    copy = _released_copy(tmp_path, is_tagged)
    drop_line(copy / "protos/capstan/v1/dataplane.proto", "google.protobuf.Value result = 1;")
    checked = baselines(copy, release(copy))
    assert len(checked) == 1 + is_tagged
    for baseline in checked:
        result = breaking(copy, baseline)
        assert result.returncode != 0
        assert 'field "1" with name "result" on message "CallResponse" was deleted' in (
            result.stdout
        )


def test_the_internal_package_may_change(tmp_path: pathlib.Path) -> None:
    copy = _released_copy(tmp_path, is_tagged=False)
    drop_line(copy / "protos/capstan/internal/v1/replica.proto", "bytes data = 2;")
    result = breaking(copy, baselines(copy, release(copy))[0])
    assert result.returncode == 0, result.stdout + result.stderr


def _released_copy(folder: pathlib.Path, is_tagged: bool) -> pathlib.Path:
    """buf.yaml and protos/ in `folder` as the release script leaves them
    for _TAG; with `is_tagged`, also a git repository with that tag."""
    copy = copy_protos(folder)
    (copy / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "release_protos.py", copy / "scripts")
    subprocess.run(
        [sys.executable, str(copy / "scripts" / "release_protos.py"), _TAG],
        check=True,
        capture_output=True,
    )
    assert release(copy) == _TAG
    assert [p.name for p in (copy / "protos" / "releases").iterdir()] == [f"{_TAG}.binpb"]
    if is_tagged:
        _git(copy, "init", "-q")
        _git(copy, "add", ".")
        _git(copy, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", _TAG)
        _git(copy, "tag", _TAG)
    return copy


def _git(cwd: pathlib.Path, *args: str, check: bool = True) -> bool:
    """Runs git in `cwd`; whether it succeeded (with `check`, it must)."""
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert not check or result.returncode == 0, result.stderr
    return result.returncode == 0

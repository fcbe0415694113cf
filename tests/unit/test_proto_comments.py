"""buf lint's COMMENTS rules hold for the public protos (every service, RPC,
message, field, enum and value says what it means) and not for
capstan.internal, which clients never read."""

from __future__ import annotations

import pathlib

from tests.support.buf import buf, copy_protos, drop_line


def test_the_protos_pass_buf_lint() -> None:
    result = buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_public_field_without_a_comment_fails_lint(tmp_path: pathlib.Path) -> None:
    copy = copy_protos(tmp_path)
    proto = copy / "protos" / "capstan" / "v1" / "dataplane.proto"
    drop_line(proto, "// As CallRequest.multiplexed_model_id.")
    result = buf("lint", cwd=copy)
    assert result.returncode != 0
    assert 'Field "multiplexed_model_id" should have a non-empty comment' in result.stdout


def test_the_internal_package_needs_no_comments(tmp_path: pathlib.Path) -> None:
    copy = copy_protos(tmp_path)
    proto = copy / "protos" / "capstan" / "internal" / "v1" / "replica.proto"
    drop_line(proto, "// Treated as JSON.")
    result = buf("lint", cwd=copy)
    assert result.returncode == 0, result.stdout + result.stderr

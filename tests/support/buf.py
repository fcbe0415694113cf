"""Running buf (the pinned `buf-bin` beside the test interpreter) on the
protos, or on a copy of them that a test changes on purpose."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Installed by the test extras next to the interpreter, so no PATH lookup.
BUF = pathlib.Path(sys.executable).with_name("buf")


def buf(*args: str, cwd: pathlib.Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`buf ARGS` in `cwd` (a folder holding buf.yaml); never raises on a
    failing check, so a test can assert on its exit code and output."""
    return subprocess.run(
        [str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def copy_protos(folder: pathlib.Path) -> pathlib.Path:
    """A copy of buf.yaml and protos/ in `folder` (returned), for a test to
    edit: buf reads the copy's own config, ignores included."""
    shutil.copy(ROOT / "buf.yaml", folder / "buf.yaml")
    shutil.copytree(ROOT / "protos", folder / "protos")
    return folder


def drop_line(path: pathlib.Path, line: str) -> None:
    """Deletes the one line of `path` equal to `line` (stripped)."""
    lines = path.read_text().splitlines(keepends=True)
    kept = [text for text in lines if text.strip() != line]
    assert len(kept) == len(lines) - 1, f"{path} has no single line {line!r}"
    path.write_text("".join(kept))

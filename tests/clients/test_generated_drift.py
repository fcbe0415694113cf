"""The committed client code of every language is what protos/ produces:
`buf generate` with the repository's buf.gen.yaml (local plugins only)
writes each language's tree again, byte for byte."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUF = pathlib.Path(sys.executable).parent / "buf"

# Each language's folder of generated code only: buf.gen.yaml's `out`, or
# for Go the capstan/ under it (go.mod, README.md and example/ are written
# by hand).
GENERATED = {
    "go": "clients/go/capstan",
    "node": "clients/node/gen",
    "ruby": "clients/ruby/lib",
}


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """One `buf generate` of every plugin; `-o` puts each plugin's `out`
    under the temp folder, so `<tmp>/clients/node/gen` mirrors the tree."""
    out = tmp_path_factory.mktemp("regenerated")
    command = [str(BUF), "generate", "--template", "buf.gen.yaml", "-o", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"buf generate failed:\n{done.stderr}"
    return out


@pytest.mark.parametrize("language", sorted(GENERATED))
def test_committed_code_matches_the_protos(language: str, regenerated: pathlib.Path) -> None:
    folder = GENERATED[language]
    drifted = differing_files(ROOT / folder, regenerated / folder)
    assert not drifted, (
        f"{language} client code in {folder} differs from what protos/ produces: "
        f"{', '.join(drifted)}; run `.venv/bin/buf generate --template buf.gen.yaml` "
        "at the repository's root and commit the result"
    )


def differing_files(committed: pathlib.Path, fresh: pathlib.Path) -> list[str]:
    """Paths (relative to the folders) that are in only one of them or
    whose bytes differ, each marked with why."""
    old, new = _files(committed), _files(fresh)
    drifted = [f"{name} (not generated any more)" for name in sorted(old.keys() - new.keys())]
    drifted += [f"{name} (new, not committed)" for name in sorted(new.keys() - old.keys())]
    both = sorted(old.keys() & new.keys())
    return drifted + [name for name in both if old[name].read_bytes() != new[name].read_bytes()]


def _files(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}

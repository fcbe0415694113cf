"""The committed generated code is exactly what the protos produce."""

from __future__ import annotations

import filecmp
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("capstan/v1", "capstan/internal/v1", "capstan/internal")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("generated")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_generated_code_matches_the_protos(fresh: pathlib.Path, package: str) -> None:
    generated, committed = fresh / package, ROOT / "clients" / "python" / package
    names = sorted(p.name for p in generated.iterdir() if p.is_file())
    assert names == sorted(
        p.name for p in committed.iterdir() if p.is_file() and p.name != "__pycache__"
    )
    _, mismatch, errors = filecmp.cmpfiles(generated, committed, names, shallow=False)
    assert not mismatch and not errors, (
        f"generated code in {package} differs from protos/ in {mismatch + errors}: "
        "run `python scripts/gen_protos.py` and commit the result"
    )

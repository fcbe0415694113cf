"""The committed clients in other languages are exactly what buf.gen.yaml
generates from protos/: a proto change without regenerating fails here."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUF = pathlib.Path(sys.executable).parent / "buf"

# One case per language: the folder its plugins write to, and a glob that
# matches only generated files there (beside them live hand-written READMEs,
# examples and package files).
GENERATED = {
    "go": ("clients/go", "**/*.pb.go"),
}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Every language's code, generated once into a temp folder."""
    out = tmp_path_factory.mktemp("generated")
    command = [str(BUF), "generate", "--template", "buf.gen.yaml", "-o", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"buf generate failed:\n{done.stderr}"
    return out


@pytest.mark.parametrize("language", sorted(GENERATED))
def test_generated_code_matches_the_protos(language: str, fresh: pathlib.Path) -> None:
    folder, pattern = GENERATED[language]
    generated = _files(fresh / folder, pattern)
    committed = _files(ROOT / folder, pattern)
    assert generated, f"buf.gen.yaml generated no {pattern} under {folder}"
    stale = sorted(set(generated) ^ set(committed))
    changed = sorted(n for n in generated if n in committed and committed[n] != generated[n])
    assert not stale and not changed, (
        f"{folder} differs from protos/ (files only on one side: {stale}; changed: {changed}): "
        "run `.venv/bin/buf generate` and commit the result"
    )


def _files(folder: pathlib.Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob(pattern))}

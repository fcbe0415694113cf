"""Generated clients match the protos: `buf generate` with the repository's
buf.gen.yaml, into a temp folder, gives byte for byte the code committed under
clients/<language>/. A case per language; regenerate with
`.venv/bin/buf generate --template buf.gen.yaml` after changing protos/."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
# buf-bin puts the binary beside the interpreter of the test virtualenv.
BUF = pathlib.Path(sys.executable).parent / "buf"

# Each language's folder of generated code: a plugin's `out` in buf.gen.yaml.
GENERATED = {
    "ruby": "clients/ruby/lib",
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("generated")
    command = [str(BUF), "generate", "--template", "buf.gen.yaml", "-o", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return out


def files_under(folder: pathlib.Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("folder", GENERATED.values(), ids=GENERATED.keys())
def test_committed_code_matches_the_protos(generated: pathlib.Path, folder: str) -> None:
    fresh = files_under(generated / folder)
    committed = files_under(ROOT / folder)
    assert fresh, f"buf generate wrote nothing under {folder}"
    drifted = sorted(
        name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name)
    )
    assert not drifted, (
        f"generated code under {folder} differs from protos/ in {drifted}: "
        "run .venv/bin/buf generate --template buf.gen.yaml and commit the result"
    )

"""Regenerates clients/python/capstan/v1 from protos/ (run after editing a .proto);
`python scripts/gen_protos.py DIR` generates into DIR instead.

One -I root that mirrors the package tree gives absolute imports
(`from capstan.v1 import deployment_pb2`) with no rewriting.
"""

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "clients" / "python"


def main(out: pathlib.Path = OUT) -> None:
    """Generates into `out` (a folder that will hold capstan/v1)."""
    package = out / "capstan" / "v1"
    package.mkdir(parents=True, exist_ok=True)
    for old in package.glob("*_pb2*"):
        old.unlink()
    bin_dir = pathlib.Path(sys.executable).parent
    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--plugin=protoc-gen-mypy={shutil.which('protoc-gen-mypy', path=bin_dir)}",
            f"--plugin=protoc-gen-mypy_grpc={shutil.which('protoc-gen-mypy_grpc', path=bin_dir)}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            *protos,
        ],
        check=True,
        cwd=PROTOS,
    )
    docstring = '"""Generated from protos/capstan/v1 by scripts/gen_protos.py."""\n'
    (package / "__init__.py").write_text(docstring)


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)

"""Regenerates clients/python/capstan/v1 from protos/ (run after editing a .proto).

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
PACKAGE = OUT / "capstan" / "v1"


def main() -> None:
    for old in PACKAGE.glob("*_pb2*"):
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
            f"--python_out={OUT}",
            f"--grpc_python_out={OUT}",
            f"--mypy_out={OUT}",
            f"--mypy_grpc_out={OUT}",
            *protos,
        ],
        check=True,
        cwd=PROTOS,
    )
    docstring = '"""Generated from protos/capstan/v1 by scripts/gen_protos.py."""\n'
    (PACKAGE / "__init__.py").write_text(docstring)


if __name__ == "__main__":
    main()

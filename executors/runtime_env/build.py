"""`python -m executors.runtime_env.build`: makes a replica's interpreter on
the node that will run it, and prints where it is.

    --root FOLDER --pip-json '["idna==3.7"]'   a virtualenv for these requirements
    --root FOLDER --conda NAME                 the python of an existing conda env

It runs with the interpreter replicas run on, so it needs nothing but the
standard library and this module, and the local and SSH executors start the
very same program. On success it prints one JSON line, `{"python": PATH,
"built": BOOL}` (whether this run built the env or found it ready);
on failure it exits 1 (4: this node cannot make such an env, as without
conda) with a message for the user on stderr.

A pip environment lives in `FOLDER/<key>/`, where the key hashes the sorted
requirements, the Python version and the creating interpreter: identical
lists share one env, built once. `FOLDER/<key>.lock` (flock) makes concurrent
builds of one env happen once, `FOLDER/<key>/capstan-ready.json` (written last,
by rename) marks it complete, and `FOLDER/<key>.log` keeps pip's output.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import pathlib
import platform
import shutil
import site
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator, Sequence

READY = "capstan-ready.json"
# Exit statuses: the env failed to build, or this node cannot make it at all.
EXIT_FAILED = 1
EXIT_UNSUPPORTED = 4
PARENT_PTH = "_capstan_parent.pth"
_LOCK_POLL_S = 0.1
_PIP_NETWORK_TIMEOUT_S = 60
_TAIL_CHARS = 3000


class BuildError(Exception):
    """The environment cannot be made; the message is for the user."""

    exit_status = EXIT_FAILED


class Unsupported(BuildError):
    """This node cannot make such an environment (it has no conda)."""

    exit_status = EXIT_UNSUPPORTED


def env_key(requirements: Sequence[str]) -> str:
    """Names the env of a requirement list. The creating interpreter is part
    of it because the env sees that interpreter's packages (see `_link_parent`)."""
    material = {
        "pip": sorted(requirements),
        "python": platform.python_version(),
        "parent": sys.prefix,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


def build_pip(requirements: Sequence[str], root: pathlib.Path, deadline: float) -> tuple[str, bool]:
    """The interpreter of the env for `requirements`, built unless it is
    ready, and whether this call built it."""
    root.mkdir(parents=True, exist_ok=True)
    key = env_key(requirements)
    env_dir = root / key
    python = env_dir / "bin" / "python"
    with _locked(root / f"{key}.lock", deadline):
        if (env_dir / READY).is_file():
            (env_dir / READY).touch()  # its age is how long it has been idle (garbage.py)
            return str(python), False
        # A folder without the marker is a build that died half-way.
        shutil.rmtree(env_dir, ignore_errors=True)
        try:
            _create(env_dir)
            _install(python, requirements, root / f"{key}.log", deadline)
            _mark_ready(env_dir, requirements)
        except BaseException:
            shutil.rmtree(env_dir, ignore_errors=True)
            raise
    return str(python), True


@contextlib.contextmanager
def _locked(path: pathlib.Path, deadline: float) -> Iterator[None]:
    with path.open("a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BuildError(f"another build of this env held {path} too long") from None
                time.sleep(_LOCK_POLL_S)  # another process is building this env
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _create(env_dir: pathlib.Path) -> None:
    # Without pip: ensurepip takes seconds, and the parent's pip is visible.
    command = [sys.executable, "-m", "venv", "--without-pip", str(env_dir)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"python -m venv failed: {_tail(result.stderr or result.stdout)}")
    _link_parent(env_dir)
    if importlib.util.find_spec("pip") is None:
        _run_checked([str(env_dir / "bin" / "python"), "-m", "ensurepip"], "ensurepip")


def _link_parent(env_dir: pathlib.Path) -> None:
    """Makes this interpreter's packages (capstan, grpc, cloudpickle, pip)
    importable in the env, after its own: `--system-site-packages` would only
    give the base interpreter's, not a parent venv's. A .pth line runs
    addsitedir, which appends to sys.path behind the env's site-packages (so
    pinned versions win) and also runs the parent's own .pth files (editable
    installs). A requirement the parent already satisfies is therefore not
    installed again; pip leaves the parent's packages untouched ("outside
    environment")."""
    paths = {"base": str(env_dir), "platbase": str(env_dir)}
    target = pathlib.Path(sysconfig.get_path("purelib", "venv", paths))
    lines = [f"import site; site.addsitedir({folder!r})\n" for folder in _parent_site_dirs()]
    (target / PARENT_PTH).write_text("".join(lines))


def _parent_site_dirs() -> list[str]:
    folders = [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    folders += site.getsitepackages()
    return [f for f in dict.fromkeys(folders) if os.path.isdir(f)]


def _install(
    python: pathlib.Path, requirements: Sequence[str], log: pathlib.Path, deadline: float
) -> None:
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    command += ["--timeout", str(_PIP_NETWORK_TIMEOUT_S), *requirements]
    with log.open("w") as output:
        try:
            result = subprocess.run(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BuildError(f"pip install {_listed(requirements)} ran out of time") from None
    if result.returncode != 0:
        output_tail = _tail(log.read_text(errors="replace"))
        message = f"pip install {_listed(requirements)} failed (exit {result.returncode})"
        raise BuildError(f"{message}:\n{output_tail}")


def _mark_ready(env_dir: pathlib.Path, requirements: Sequence[str]) -> None:
    partial = env_dir / f".{READY}.tmp"
    partial.write_text(json.dumps({"pip": list(requirements), "parent": sys.executable}))
    os.replace(partial, env_dir / READY)


def resolve_conda(name: str, node: str, deadline: float) -> str:
    """The interpreter of the existing conda env `name`, checked to import capstan."""
    conda = shutil.which("conda") or os.environ.get("CONDA_EXE")
    if not conda:
        raise Unsupported(
            f"runtime_env.conda needs conda on node {node}, and conda was not found there"
        )
    probe = [conda, "run", "-n", name, "python", "-c", "import sys; print(sys.executable)"]
    output = _run_checked(probe, f"conda env {name!r} on node {node}", deadline)
    python = output.strip().splitlines()[-1]
    check = [python, "-c", "import capstan, executors.replica"]
    if subprocess.run(check, capture_output=True, check=False).returncode != 0:
        raise BuildError(
            f"conda env {name!r} on node {node} cannot import capstan; "
            f"install it there ({python} -m pip install capstan)"
        )
    return python


def _run_checked(command: list[str], what: str, deadline: float | None = None) -> str:
    timeout = None if deadline is None else max(1.0, deadline - time.monotonic())
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what}: {command[0]} ran out of time") from None
    if result.returncode != 0:
        raise BuildError(f"{what}: {_tail(result.stderr or result.stdout)}")
    return result.stdout


def _listed(requirements: Sequence[str]) -> str:
    return " ".join(requirements)


def _tail(text: str) -> str:
    return text.strip()[-_TAIL_CHARS:]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    deadline = time.monotonic() + args.timeout_s
    try:
        if args.conda:
            python, built = resolve_conda(args.conda, args.node, deadline), False
        else:
            requirements = _requirements(args.pip_json)
            python, built = build_pip(requirements, pathlib.Path(args.root), deadline)
    except BuildError as error:
        print(error, file=sys.stderr)
        return error.exit_status
    print(json.dumps({"python": python, "built": built}))
    return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m executors.runtime_env.build")
    parser.add_argument("--root", required=True, help="the folder that holds the envs")
    kinds = parser.add_mutually_exclusive_group(required=True)
    kinds.add_argument("--pip-json", help="a JSON list of pip requirements")
    kinds.add_argument("--conda", help="the name of an existing conda env")
    parser.add_argument("--node", default=platform.node(), help="this node's name, for messages")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="the whole build's limit")
    return parser.parse_args(argv)


def _requirements(text: str) -> list[str]:
    try:
        requirements = json.loads(text)
    except ValueError:
        requirements = None
    if not isinstance(requirements, list) or not all(
        isinstance(r, str) and r.strip() for r in requirements
    ):
        raise BuildError(f"--pip-json must be a JSON list of requirements, got {text!r}")
    if options := [r for r in requirements if r.lstrip().startswith("-")]:
        # pip would read them as its own options (an index, a requirements file).
        raise BuildError(f"runtime_env.pip takes requirements, not pip options: {options[0]!r}")
    return requirements


if __name__ == "__main__":
    sys.exit(main())

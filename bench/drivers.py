"""Driver scripts that run unchanged on Capstan and on Ray Serve: each is
Python source with a `{connect}` line, filled in per system, run in its own
process against the cluster its environment names ($CAPSTAN_ADDRESS, or
RAY_ADDRESS for Ray Serve). Shared by the bench tables."""

from __future__ import annotations

import subprocess
import sys

CONNECT = {
    "capstan": "from capstan import serve",
    # The Ray bench's setup script has started Serve's HTTP proxy on its own port.
    "ray": "import ray\nray.init(logging_level='ERROR')\nfrom ray import serve",
}


def run_driver(script: str, env: dict, system: str = "capstan", *args: str) -> str:
    """Runs `script` for `system` and returns what it printed."""
    source = script.replace("{connect}", CONNECT[system])
    done = subprocess.run(
        [sys.executable, "-c", source, *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{system} driver failed:\n{done.stderr[-3000:]}")
    return done.stdout

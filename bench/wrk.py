"""Load from wrk: requests/s, p50/p99 latency, and CPU per request of the
processes that served it. Shared by the setup table (run.py) and the
executor table (executor_table.py)."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
from collections.abc import Mapping

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLOCK_TICKS


def wrk(
    url: str,
    duration_s: int,
    connections: int,
    roles: Mapping[str, list[int]] | None = None,
    script: str | None = None,
) -> dict:
    """One wrk run (with a Lua `script`, if given); CPU per request is
    reported for each role's processes."""
    roles = roles or {}
    before = {role: cpu_seconds(pids) for role, pids in roles.items()}
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", url]
    output = subprocess.run(
        command + (["-s", script] if script else []),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    cpu_ms = {
        role: 1000 * (cpu_seconds(pids) - before[role]) / max(requests, 1)
        for role, pids in roles.items()
    }
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": latency_ms(output, "50%"),
        "p99_ms": latency_ms(output, "99%"),
        "cpu_ms": sum(cpu_ms.values()),
        "cpu_by_role": cpu_ms,
        "errors": int(errors.group(1)) if errors else 0,
        # Refused connects, then requests cut off or past wrk's 2 s timeout.
        "connect_errors": int(sockets.group(1)) if sockets else 0,
        "socket_errors": sum(map(int, sockets.groups()[1:])) if sockets else 0,
    }


def latency_ms(output: str, percentile: str) -> float:
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", output).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

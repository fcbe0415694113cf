"""The fault table: what `kill -9` of each part costs while HTTP load runs.

    python bench/faults.py [--duration 8] [--connections 16]

For each part (a replica, the proxy, the control plane) a fresh local
Capstan serves two replicas of tests/apps/pid.py under wrk; a second into
the run the part is killed with SIGKILL. Failed requests are wrk's socket
errors and non-2xx answers over the whole run. While nothing listens (the
proxy row) wrk retries each connection at once and counts every refused
attempt as a read or connect error, so that row counts attempts during the
outage, not requests lost; recovery is the time from
the kill until: a replacement replica answers (its pid is new), the proxy
answers /-/healthz again, or a restarted control plane answers (it adopts
the running replicas). Targets: only requests in flight on a killed replica
fail and its replacement serves within 2 s; HTTP is back within 2 s of a
proxy kill; a control-plane kill fails nothing. Then, on one more fresh
Capstan, a 64 MiB upload and a hung handler under load (fault_requests.py).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import pathlib
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable

from wrk import ensure_wrk, wrk

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support and tests.apps, as run.py does

from fault_requests import measure_request_faults, print_request_fault_table  # noqa: E402

from capstan.v1 import deployment_pb2 as pb  # noqa: E402
from tests.support.cluster import Cluster, restart_cluster, start_cluster, stop_cluster  # noqa: E402
from tests.support.waiting import eventually_sync  # noqa: E402

_KILL_AFTER_S = 1.0
_RECOVERY_TIMEOUT_S = 30.0


def measure_faults(duration_s: int, connections: int) -> tuple[list[dict], list[dict]]:
    """One row per part killed, then the request-fault rows."""
    os.chdir(ROOT)  # replicas import tests.apps.pid from the working directory
    rows = []
    for part, kill in [
        ("replica", _kill_replica),
        ("proxy", _kill_proxy),
        ("control plane", _kill_control_plane),
    ]:
        with tempfile.TemporaryDirectory(prefix="capstan-faults-") as state:
            cluster = start_cluster(pathlib.Path(state) / "capstan")
            try:
                rows.append({"part": part, **_under_load(cluster, kill, duration_s, connections)})
            finally:
                stop_cluster(cluster)
    with tempfile.TemporaryDirectory(prefix="capstan-faults-") as state:
        cluster = start_cluster(pathlib.Path(state) / "capstan")
        try:
            return rows, measure_request_faults(cluster, duration_s, connections)
        finally:
            stop_cluster(cluster)


def _under_load(cluster: Cluster, kill: Callable, duration_s: int, connections: int) -> dict:
    spec = pb.DeploymentSpec(name="pid", code=pb.Code(import_path="tests.apps.pid:Pid"))
    spec.num_replicas = 2
    cluster.client().apply(spec, wait=True)
    url = cluster.http_url + "/pid"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        load = pool.submit(wrk, url, duration_s, connections)
        time.sleep(_KILL_AFTER_S)  # let the load settle before the fault
        recovered = kill(cluster, url)  # seconds from the kill to serving again
        result = load.result()
    failed = result["errors"] + result["socket_errors"] + result["connect_errors"]
    return {"failed": failed, "recovery_s": recovered, "requests": result["requests"]}


def _kill_replica(cluster: Cluster, url: str) -> float:
    before = {_get(url) for _ in range(20)}
    victim = int(next(iter(before)))
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    return _until(lambda: _get(url) not in before | {None}, "a replacement replica") - killed


def _kill_proxy(cluster: Cluster, url: str) -> float:
    killed = time.monotonic()
    os.kill(cluster.client().proxy_status().pid, signal.SIGKILL)
    return _until(lambda: _get(cluster.http_url + "/-/healthz") is not None, "the proxy") - killed


def _kill_control_plane(cluster: Cluster, url: str) -> float:
    killed = time.monotonic()
    os.kill(cluster.process.pid, signal.SIGKILL)
    cluster.process.wait()
    restart_cluster(cluster)
    return time.monotonic() - killed


def _until(probe: Callable[[], bool], what: str) -> float:
    """Polls until `probe` holds; the monotonic time it first did."""
    return eventually_sync(
        lambda: probe() and time.monotonic(),
        f"{what} to serve",
        timeout_s=_RECOVERY_TIMEOUT_S,
        interval_s=0.01,
    )


def _get(url: str) -> str | None:
    """The body of a 200 answer, else None."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.read().decode() if response.status == 200 else None
    except OSError:
        return None


def print_fault_tables(rows: tuple[list[dict], list[dict]], connections: int) -> None:
    kills, requests = rows
    print_fault_table(kills, connections)
    print_request_fault_table(requests, connections)


def print_fault_table(rows: list[dict], connections: int) -> None:
    print()
    print(f"kill -9 under HTTP load (wrk, {connections} connections, 2 replicas):")
    print("| killed | requests | failed | seconds to recover | target |")
    print("|---|---:|---:|---:|---|")
    targets = {
        "replica": "in-flight only; replacement serving < 2 s",
        "proxy": "HTTP back < 2 s (failed: wrk's attempts while down)",
        "control plane": "0 failed (recovery: restarted by hand, adopts)",
    }
    for row in rows:
        print(
            f"| {row['part']} | {row['requests']:,} | {row['failed']:,} "
            f"| {row['recovery_s']:.2f} | {targets[row['part']]} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds of load per fault")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    ensure_wrk()
    print_fault_tables(measure_faults(args.duration, args.connections), args.connections)


if __name__ == "__main__":
    main()

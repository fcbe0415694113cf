"""Capstan's request path and start-up against a bare app, and on each executor.

    python bench/run.py [--duration 10] [--connections 32] [--no-executors] [--no-faults]
                        [--against ray]

Installs wrk if missing, then prints two tables. The first: requests/s,
p50/p99 latency and CPU per request for the bare app and for Capstan with 1
and 2 replicas of examples/hello.py, the ratios, seconds from `capstan start`
to the first 200, and the peak RSS of the whole system with one replica. The
second (skipped with --no-executors): a row per executor (local, ssh on two
loopback sshd hosts, ray on a local Ray head) with seconds to deploy one
replica, seconds to scale it 1 -> 4, and wrk through the proxy to one replica.
Between them, a batching table: a handler that costs 10 ms per call, batched
with `@serve.batch` and not (bench/batching_table.py), sequential handle
calls/s (bench/handle_table.py) and multiplexed models under load
(bench/multiplex_table.py). With --against ray, the hello, handle and batched
workloads also run on Ray Serve 2.60, side by side (bench/against_ray.py).
Last (skipped with
--no-faults), the fault table: kill -9 of a replica, the proxy and the
control plane under load (bench/faults.py).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from batching_table import measure_batching, print_batching_table
from handle_table import measure_handle, print_handle_table
from wrk import ensure_wrk, wrk

ROOT = pathlib.Path(__file__).resolve().parent.parent
# bench uses the test support package (free ports, waiting, real sshd hosts
# and a real Ray head; see README.md); `python bench/run.py` puts only
# bench/ on sys.path, so the repository root is added for `tests.support`.
sys.path.insert(0, str(ROOT))

from multiplex_table import measure_multiplexing, print_multiplex_table  # noqa: E402

from tests.support.ports import free_ports  # noqa: E402
from tests.support.waiting import eventually_sync  # noqa: E402

HELLO = """
from capstan import serve

@serve.deployment(route_prefix="/", version="bench", num_replicas={replicas})
class Hello:
    def __call__(self, request):
        return "Hello from Capstan!\\n"

serve.start()
Hello.deploy()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--no-executors", action="store_true", help="skip the per-executor table (quick runs)"
    )
    parser.add_argument("--no-faults", action="store_true", help="skip the fault table")
    parser.add_argument("--against", choices=["ray"], help="also run the workloads on Ray Serve")
    args = parser.parse_args()
    # A SIGTERM unwinds like Ctrl-C, so every server this run started is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ensure_wrk()
    rows = [measure_baseline(args)]
    with tempfile.TemporaryDirectory(prefix="capstan-bench-") as state:
        capstan = measure_capstan(args, pathlib.Path(state))
    print_table(rows + capstan["hello"])
    print_batching_table(capstan["batching"], args.connections)
    print_handle_table(capstan["handle"])
    print_multiplex_table(capstan["multiplexing"], args.connections)
    if args.against == "ray":
        from against_ray import capstan_figures, measure_ray, print_comparison

        ours = capstan_figures(capstan["hello"][0], capstan["handle"], capstan["batching"])
        print_comparison(ours, measure_ray(args.duration, args.connections), args.connections)
    if not args.no_executors:
        # Imported only when used: it loads the sshd and Ray helpers from tests/.
        from executor_table import measure_executors, print_executor_table

        executor_rows = measure_executors(args.duration, args.connections)
        print_executor_table(executor_rows)
        if any("error" in row for row in executor_rows):
            sys.exit(1)
    if not args.no_faults:
        from faults import measure_faults, print_fault_tables

        print_fault_tables(measure_faults(8, args.connections), args.connections)


def wait_for_200(url: str, timeout_s: float) -> float:
    """Polls until the URL answers 200; returns the monotonic time it did."""
    return eventually_sync(
        lambda: _is_200(url) and time.monotonic(),
        f"{url} to answer 200",
        timeout_s=timeout_s,
        interval_s=0.005,
    )


def _is_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def peak_rss_mib(pids: list[int]) -> float:
    total_kib = 0
    for pid in pids:
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
        total_kib += int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
    return total_kib / 1024


def measure_baseline(args: argparse.Namespace) -> dict:
    (port,) = free_ports(1)
    server = subprocess.Popen([sys.executable, str(ROOT / "bench" / "baseline_app.py"), str(port)])
    try:
        wait_for_200(f"http://127.0.0.1:{port}/", 30)
        return {
            "name": "uvicorn + Starlette (bare)",
            **wrk(
                f"http://127.0.0.1:{port}/", args.duration, args.connections, {"app": [server.pid]}
            ),
        }
    finally:
        server.terminate()
        server.wait()


def measure_capstan(args: argparse.Namespace, state: pathlib.Path) -> dict:
    """The hello rows (1 and 2 replicas), the batching, handle and multiplexing rows."""
    control_port, http_port, grpc_port = free_ports(3)
    address = f"127.0.0.1:{control_port}"
    env = {**os.environ, "CAPSTAN_ADDRESS": address}
    url = f"http://127.0.0.1:{http_port}/"
    started = time.monotonic()
    capstan = subprocess.Popen(
        [sys.executable, "-m", "capstan", "--address", address, "start", "--state-dir", str(state),
         "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_control_plane(address, 60)
        deploy(1, env)
        cold_start_s = wait_for_200(url, 60) - started
        rows = []
        for replicas in (1, 2):
            if replicas > 1:
                deploy(replicas, env)
            roles = system_roles(capstan.pid, state)
            row = wrk(url, args.duration, args.connections, roles)
            row["name"] = f"Capstan, {replicas} replica{'s' * (replicas > 1)}"
            if replicas == 1:
                pids = [pid for group in roles.values() for pid in group]
                row.update(cold_start_s=cold_start_s, rss_mib=peak_rss_mib(pids), processes=pids)
            rows.append(row)
        base_url = url.rstrip("/")
        return {
            "hello": rows,
            "batching": measure_batching(base_url, env, args.duration, args.connections),
            "handle": measure_handle(env, args.duration),
            "multiplexing": measure_multiplexing(base_url, env, args.duration, args.connections),
        }
    finally:
        subprocess.run([sys.executable, "-m", "capstan", "--address", address, "shutdown"], env=env,
                       capture_output=True)  # fmt: skip
        capstan.wait(timeout=60)


def wait_for_control_plane(address: str, timeout_s: float) -> None:
    from capstan.client import ControlPlaneClient

    client = ControlPlaneClient(address)
    try:
        what = f"a control plane at {address}"
        eventually_sync(lambda: client.is_reachable(timeout_s=0.1), what, timeout_s=timeout_s)
    finally:
        client.close()


def deploy(replicas: int, env: dict) -> None:
    subprocess.run([sys.executable, "-c", HELLO.format(replicas=replicas)], env=env, check=True)


def system_roles(capstan_pid: int, state: pathlib.Path) -> dict[str, list[int]]:
    """The control plane, proxy and replica processes of this bench run."""
    proxy_pid = json.loads((state / "proxy.json").read_text())["pid"]
    marker = b"executors.replica"
    replicas = []
    for entry in pathlib.Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if marker in cmdline and str(state).encode() in cmdline:
            replicas.append(int(entry.name))
    return {"control plane": [capstan_pid], "proxy": [proxy_pid], "replicas": replicas}


def print_table(rows: list[dict]) -> None:
    base = rows[0]
    print()
    print(
        "| setup | req/s | p50 ms | p99 ms | CPU ms/req (all) | proxy CPU ms/req "
        "| req/s vs bare | p50 vs bare | non-2xx |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['name']} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['cpu_ms']:.3f} | {row['cpu_by_role'].get('proxy', row['cpu_ms']):.3f} "
            f"| {row['rps'] / base['rps']:.2f}x "
            f"| {row['p50_ms'] / base['p50_ms']:.1f}x | {row['errors']} |"
        )
    one = rows[1]
    print()
    print(
        f"cold start (capstan start -> first 200 from a deployed app): {one['cold_start_s']:.2f} s"
    )
    print(f"peak RSS, whole system with 1 replica ({len(one['processes'])} processes): "
          f"{one['rss_mib']:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()

"""`run.py --against ray`: the hello, sequential-handle and batched
workloads on Ray Serve 2.60, measured in the same run as Capstan's, and a
table of both with their ratios.

Ray runs as the tests run it (tests/support/ray_cluster.py): a head of its
own, with its own temp dir, ports and auth token, stopped (with Serve and
every worker in its session) on the way out, error or not. Serve's HTTP
proxy listens on a free loopback port. Deployments set max_ongoing_requests
to Capstan's default (100; Ray's is 5), so both run the same deployment.
"""

from __future__ import annotations

import os

from batching_table import measure_batching
from drivers import run_driver
from handle_table import measure_handle
from wrk import wrk

from tests.support.ports import free_ports
from tests.support.ray_cluster import (
    LOOPBACK_ENV,
    RayCluster,
    start_ray_cluster,
    stop_ray_cluster,
)

HELLO = """
{connect}
import sys

serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})

@serve.deployment(max_ongoing_requests=100, ray_actor_options={"num_cpus": 0})
class Hello:
    def __call__(self, request):
        return "Hello from Capstan!\\n"

serve.run(Hello.bind(), name="hello", route_prefix="/")
"""


def measure_ray(duration_s: int, connections: int) -> dict[str, dict]:
    """Ray Serve's figures, keyed as `compare` expects."""
    ray = start_ray_cluster()
    try:
        env = _driver_env(ray)
        (port,) = free_ports(1)
        run_driver(HELLO, env, "ray", str(port))
        url = f"http://127.0.0.1:{port}"
        wrk(url + "/", 1, connections)  # warm-up: Ray's proxy starts lazily
        figures = {"hello": wrk(url + "/", duration_s, connections)}
        for row in measure_handle(env, duration_s, "ray"):
            figures[f"handle {row['name']}"] = row
        for row in measure_batching(url, env, duration_s, connections, "ray"):
            figures[row["name"]] = row
        return figures
    finally:
        stop_ray_cluster(ray)


def _driver_env(ray: RayCluster) -> dict[str, str]:
    """A driver's environment: this head, its token, never ~/.ray's."""
    token = ray.auth_token_file.read_text()
    env = dict(os.environ, **LOOPBACK_ENV, RAY_ADDRESS=ray.address, RAY_AUTH_MODE="token")
    env["RAY_AUTH_TOKEN"] = token
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    return env


def capstan_figures(hello: dict, handle_rows: list[dict], batching_rows: list[dict]) -> dict:
    """Capstan's rows of this run, keyed as Ray's are."""
    figures = {"hello": hello}
    figures.update({f"handle {row['name']}": row for row in handle_rows})
    figures.update({row["name"]: row for row in batching_rows})
    return figures


def print_comparison(capstan: dict[str, dict], ray: dict[str, dict], connections: int) -> None:
    print()
    print(f"Capstan against Ray Serve 2.60, one run (HTTP: wrk, {connections} connections):")
    print("| workload | Capstan | Ray Serve | Capstan / Ray | Capstan p50 ms | Ray p50 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, label, rate in [
        ("hello", "hello, 1 replica (req/s)", "rps"),
        ("handle sync", "sequential handle calls, sync (calls/s)", "calls_s"),
        ("handle async", "sequential handle calls, async (calls/s)", "calls_s"),
        ("unbatched", "10 ms handler, unbatched (req/s)", "rps"),
        ("batched", "10 ms handler, @serve.batch (req/s)", "rps"),
    ]:
        ours, theirs = capstan[key], ray[key]
        print(
            f"| {label} | {ours[rate]:,.0f} | {theirs[rate]:,.0f} "
            f"| {ours[rate] / theirs[rate]:.2f}x | {ours['p50_ms']:.2f} | {theirs['p50_ms']:.2f} |"
        )

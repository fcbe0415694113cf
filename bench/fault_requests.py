"""Fault rows about requests rather than processes, for faults.py: a 64 MiB
upload beside small requests, and a handler that hangs.

Both run under wrk on a deployment of two replicas that answers small
requests; the fault goes to the same deployment, so it shares the replicas'
streams with the load. Failed requests are wrk's socket errors and non-2xx
answers. Targets: the upload fails nothing else and the proxy's RSS comes back
near where it was; a hung request gets 504 at the deployment's
request_timeout_s and the deployment keeps serving.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import re
import time

import httpx
from drivers import run_driver
from wrk import wrk

from tests.support.cluster import Cluster

UPLOAD_BYTES = 64 << 20  # the proxy's limit
UPLOADS = 3
TIMEOUT_S = 1.0
HUNG_REQUESTS = 4
# Two copies of one deployment: the timeout would cut a slow upload short too.
APP = f"""
import asyncio
{{connect}}

@serve.deployment(num_replicas=2, ray_actor_options={{"num_cpus": 0}})
class Sink:
    async def __call__(self, request):
        if request.url.path.endswith("/hang"):
            await asyncio.sleep(3600)
        return str(len(await request.body()))

serve.run(Sink.bind(), name="sink", route_prefix="/sink")
serve.run(Sink.options(request_timeout_s={TIMEOUT_S}).bind(), name="slow", route_prefix="/slow")
"""


def measure_request_faults(cluster: Cluster, duration_s: int, connections: int) -> list[dict]:
    """The upload row and the hung-handler row, on one running cluster."""
    run_driver(APP, dict(os.environ, CAPSTAN_ADDRESS=cluster.address))
    sink, slow = cluster.http_url + "/sink", cluster.http_url + "/slow"
    load = (duration_s, connections)
    return [
        _under_load(sink, *load, "64 MiB upload", lambda: _uploads(sink, cluster)),
        _under_load(slow, *load, "hung handler", lambda: _hung(slow)),
    ]


def _under_load(url: str, duration_s: int, connections: int, part: str, fault) -> dict:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        load = pool.submit(wrk, url, duration_s, connections)
        time.sleep(1.0)  # let the load settle before the fault
        outcome = fault()
        result = load.result()
    failed = result["errors"] + result["socket_errors"] + result["connect_errors"]
    return {"part": part, "requests": result["requests"], "failed": failed, **outcome}


def _uploads(url: str, cluster: Cluster) -> dict:
    proxy_pid = json.loads((cluster.state_dir / "proxy.json").read_text())["pid"]
    before = _rss_mib(proxy_pid)
    body = b"x" * UPLOAD_BYTES
    answers = [httpx.post(url, content=body, timeout=60) for _ in range(UPLOADS)]
    ok = sum(a.status_code == 200 and a.text == str(UPLOAD_BYTES) for a in answers)
    codes = sorted({a.status_code for a in answers})
    del body
    return {"outcome": f"{ok}/{UPLOADS} uploads answered in full (HTTP {codes})",
            "rss": f"proxy RSS {before:.0f} -> {_rss_mib(proxy_pid):.0f} MiB"}  # fmt: skip


def _hung(url: str) -> dict:
    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(HUNG_REQUESTS) as pool:
        answers = list(
            pool.map(lambda _: httpx.get(url + "/hang", timeout=30), range(HUNG_REQUESTS))
        )
    seconds = time.monotonic() - began
    codes = sorted({a.status_code for a in answers})
    serving = httpx.get(url, timeout=5).status_code == 200
    return {"outcome": f"{HUNG_REQUESTS} hung: {codes} after {seconds:.2f} s "
                       f"(request_timeout_s={TIMEOUT_S}); serving after: {serving}",
            "rss": ""}  # fmt: skip


def _rss_mib(pid: int) -> float:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def print_request_fault_table(rows: list[dict], connections: int) -> None:
    print()
    print(f"request faults under HTTP load (wrk, {connections} connections, 2 replicas):")
    print("| fault | requests | failed | outcome | proxy memory |")
    print("|---|---:|---:|---|---|")
    for row in rows:
        print(
            f"| {row['part']} | {row['requests']:,} | {row['failed']:,} "
            f"| {row['outcome']} | {row['rss']} |"
        )

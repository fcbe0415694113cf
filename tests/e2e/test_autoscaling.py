"""Autoscaling through a real cluster: load scales a deployment up to its
max_replicas, and quiet scales it back down to min_replicas."""

from __future__ import annotations

import re
import threading

import httpx
import pytest

from capstan.v1 import controlplane_pb2 as cp
from tests.support.cluster import Cluster
from tests.support.waiting import eventually_sync

AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 3,
    "target_num_ongoing_requests_per_replica": 1,
    "upscale_delay_s": 0,
    "downscale_delay_s": 1,
    "metrics_interval_s": 0.2,
    "look_back_period_s": 1,
}


def _running(serve, name: str) -> int:
    replicas = serve.connect().get(name).replicas
    return sum(r.state == cp.REPLICA_STATE_RUNNING for r in replicas)


@pytest.mark.timeout(60)
def test_load_scales_up_and_quiet_scales_down(serve, cluster: Cluster) -> None:
    @serve.deployment(name="autoscaled", autoscaling_config=AUTOSCALING)
    class Slow:
        async def __call__(self, request):
            import asyncio

            await asyncio.sleep(0.3)
            return "done"

    Slow.deploy()
    assert _running(serve, "autoscaled") == 1
    stop = threading.Event()
    failures: list[str] = []

    def load() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    response = http.get(cluster.http_url + "/autoscaled")
                    if response.status_code != 200:
                        failures.append(str(response.status_code))
                except httpx.HTTPError as error:
                    failures.append(repr(error))

    workers = [threading.Thread(target=load) for _ in range(6)]
    for worker in workers:
        worker.start()
    try:
        eventually_sync(
            lambda: _running(serve, "autoscaled") == 3,
            "3 RUNNING replicas under load",
            timeout_s=20,
        )
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    assert not failures, f"{len(failures)} requests failed: {failures[:5]}"
    eventually_sync(
        lambda: _running(serve, "autoscaled") == 1, "1 RUNNING replica when quiet", timeout_s=20
    )
    eventually_sync(
        lambda: serve.connect().get("autoscaled").state == cp.DEPLOYMENT_STATE_HEALTHY,
        "HEALTHY at 1 replica",
        timeout_s=10,
    )
    logs = "".join(p.read_text(errors="replace") for p in (cluster.state_dir / "logs").glob("*"))
    why = r"\(ongoing [\d.]+, target 1/replica\)"
    assert re.search(rf"autoscaling autoscaled: [12] -> 3 {why}", logs), "no scale-up logged"
    assert re.search(rf"autoscaling autoscaled: 3 -> [12] {why}", logs), "no scale-down logged"

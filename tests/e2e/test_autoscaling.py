"""Autoscaling through a real cluster: load scales a deployment up to its
max_replicas, and quiet scales it back down to min_replicas."""

from __future__ import annotations

import pytest

from capstan.v1 import controlplane_pb2 as cp
from tests.support.cluster import Cluster
from tests.support.load import HttpLoad
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


class ReplicaCounts:
    """The deployment's RUNNING replica counts as read from the control
    plane's API, every reading kept, so the test can check the whole path."""

    def __init__(self, serve, name: str) -> None:
        self.serve, self.name, self.seen = serve, name, []

    def read(self) -> int:
        replicas = self.serve.connect().get(self.name).replicas
        self.seen.append(sum(r.state == cp.REPLICA_STATE_RUNNING for r in replicas))
        return self.seen[-1]

    def reach(self, count: int, why: str) -> None:
        eventually_sync(
            lambda: self.read() == count, f"{count} RUNNING replicas {why}", timeout_s=20
        )


@pytest.mark.timeout(60)
def test_load_scales_up_and_quiet_scales_down(serve, cluster: Cluster) -> None:
    @serve.deployment(name="autoscaled", autoscaling_config=AUTOSCALING)
    class Slow:
        async def __call__(self, request):
            import asyncio

            await asyncio.sleep(0.3)
            return "done"

    Slow.deploy()
    counts = ReplicaCounts(serve, "autoscaled")
    assert counts.read() == 1
    with HttpLoad(cluster.http_url + "/autoscaled", threads=6) as load:
        counts.reach(3, "under load")
    load.assert_no_failure({"done"})
    counts.reach(1, "when quiet")
    deployment = eventually_sync(
        lambda: _healthy(serve, "autoscaled"), "HEALTHY at 1 replica", timeout_s=10
    )
    # Within [min_replicas, max_replicas] all along, and back at the minimum.
    assert set(counts.seen) <= {1, 2, 3}, counts.seen
    running = [r for r in deployment.replicas if r.state == cp.REPLICA_STATE_RUNNING]
    assert len(running) == len(deployment.replicas) == 1, deployment.replicas
    # The autoscaler changes the replica count, never the spec the user applied.
    assert deployment.spec.autoscaling_config.max_replicas == AUTOSCALING["max_replicas"]


def _healthy(serve, name: str) -> cp.Deployment | None:
    deployment = serve.connect().get(name)
    return deployment if deployment.state == cp.DEPLOYMENT_STATE_HEALTHY else None

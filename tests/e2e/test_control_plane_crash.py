"""The control plane is never on a request's path: killed outright, traffic
keeps flowing through the proxy to the same replicas, and a restarted control
plane adopts them instead of starting new ones."""

from __future__ import annotations

import os
import pathlib
import signal

import httpx

from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import deployment_pb2 as pb
from tests.support.cluster import restart_cluster, start_cluster, stop_cluster
from tests.support.waiting import eventually_sync


def test_traffic_survives_a_control_plane_crash_and_restart_adopts(tmp_path: pathlib.Path) -> None:
    cluster = start_cluster(tmp_path / "capstan")
    try:
        spec = pb.DeploymentSpec(
            name="pid", code=pb.Code(import_path="tests.apps.pid:Pid"), num_replicas=2
        )
        cluster.client().apply(spec, wait=True)
        url = cluster.http_url + "/pid"
        pids = {httpx.get(url, timeout=10).text for _ in range(30)}
        assert len(pids) == 2

        os.kill(cluster.process.pid, signal.SIGKILL)  # no shutdown, no cleanup
        cluster.process.wait()
        for _ in range(30):
            response = httpx.get(url, timeout=10)
            assert response.status_code == 200 and response.text in pids

        restart_cluster(cluster)
        deployment = eventually_sync(
            lambda: _healthy(cluster), "the deployment to be adopted", timeout_s=30
        )
        assert len(deployment.replicas) == 2
        assert {httpx.get(url, timeout=10).text for _ in range(30)} == pids
    finally:
        stop_cluster(cluster)


def _healthy(cluster) -> cp.Deployment | None:
    deployment = cluster.client().get("pid")
    return deployment if deployment.state == cp.DEPLOYMENT_STATE_HEALTHY else None

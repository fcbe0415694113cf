"""runtime_env.pip through the real control plane (local executor): two
deployments pinned to conflicting versions of one package serve side by
side, a build shows in the status, and a failed install fails the rollout
clearly while everything else keeps serving.

The session's cluster keeps its envs under its state folder, so tests that
pin the same list share one build."""

from __future__ import annotations

import httpx
import pytest

import capstan
from capstan.v1 import controlplane_pb2 as cp
from tests.support.cluster import Cluster
from tests.support.waiting import eventually_sync

MISSING = "capstan-no-such-package==1.0"


def idna_deployment(serve, name: str, pip: list[str]):
    """A deployment that answers with the idna version its replica imports."""

    @serve.deployment(name=name, ray_actor_options={"runtime_env": {"pip": pip}})
    class Pinned:
        def __call__(self, request):
            import idna

            return idna.__version__

    return Pinned


def get_text(cluster: Cluster, route: str) -> str:
    response = httpx.get(cluster.http_url + route, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def test_conflicting_pins_serve_side_by_side(serve, cluster: Cluster) -> None:
    idna_deployment(serve, "idna-old", ["idna==2.10"]).deploy()
    idna_deployment(serve, "idna-new", ["idna==3.7"]).deploy()
    for _ in range(3):
        assert get_text(cluster, "/idna-old") == "2.10"
        assert get_text(cluster, "/idna-new") == "3.7"


def test_building_an_env_shows_in_the_status(serve, cluster: Cluster) -> None:
    # A list no other test pins: its env is built (seconds), not found ready.
    idna_deployment(serve, "idna-building", ["idna==3.6"]).deploy(_blocking=False)
    client = serve.connect()

    def building() -> bool:
        replicas = client.get("idna-building").replicas
        return any(r.message == "building environment" for r in replicas)

    eventually_sync(building, 'a replica with the message "building environment"', timeout_s=60)
    healthy = cp.DEPLOYMENT_STATE_HEALTHY
    eventually_sync(
        lambda: client.get("idna-building").state == healthy, "idna-building healthy", timeout_s=90
    )
    assert all(r.message == "" for r in client.get("idna-building").replicas)
    assert get_text(cluster, "/idna-building") == "3.6"


def test_failed_install_fails_the_rollout_and_disturbs_nothing(serve, cluster: Cluster) -> None:
    @serve.deployment(name="bystander")
    def bystander(request):
        return "alive"

    bystander.deploy()
    idna_deployment(serve, "idna-update", ["idna==3.7"]).deploy()
    with pytest.raises(capstan.DeployFailed) as raised:
        idna_deployment(serve, "idna-update", ["idna==3.7", MISSING]).deploy()
    message = str(raised.value)
    assert f"runtime_env.pip ['idna==3.7', '{MISSING}'] could not be prepared" in message
    assert f"No matching distribution found for {MISSING}" in message, message
    # The previous version keeps serving, and so does everything else.
    assert get_text(cluster, "/idna-update") == "3.7"
    assert get_text(cluster, "/bystander") == "alive"
    deployment = serve.connect().get("idna-update")
    assert deployment.state == cp.DEPLOYMENT_STATE_DEPLOY_FAILED
    assert MISSING in deployment.message

"""Fixtures shared by the suite: one real local Capstan per test session."""

from __future__ import annotations

import pytest

from executors.registry import executor_names
from tests.support.cluster import Cluster, start_cluster, stop_cluster

# Session fixtures: real OpenSSH servers on loopback and one real local Ray,
# each started once, for the executor tests that need them.
pytest_plugins = ["tests.support.sshd", "tests.support.ray_cluster"]

# Declared capacity, so that scaling tests are not bound by this machine's
# two CPUs (a replica reserves one CPU by default, as in Ray Serve).
TEST_CONFIG = {"executors": {"local": {"num_cpus": 64}}}


def pytest_configure(config: pytest.Config) -> None:
    # The control-plane and contract tests load the scripted executor by
    # entry point, so it must be installed like any plugin.
    if "scripted" not in executor_names():
        raise pytest.UsageError(
            "the scripted executor plugin is not installed: run scripts/test.sh, or "
            ".venv/bin/pip install -e tests/plugins/scripted"
        )


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    cluster = start_cluster(tmp_path_factory.mktemp("capstan"), TEST_CONFIG)
    yield cluster
    stop_cluster(cluster)


@pytest.fixture
def serve(cluster: Cluster, monkeypatch: pytest.MonkeyPatch):
    """`capstan.serve` connected to the session's cluster; every deployment a
    test makes is deleted after it."""
    from capstan import serve

    monkeypatch.setenv("CAPSTAN_ADDRESS", cluster.address)
    monkeypatch.setenv("CAPSTAN_HTTP_URL", cluster.http_url)
    serve.start(address=cluster.address)
    yield serve
    for name in serve.status().applications:
        serve.delete(name)
    for name in serve.list_deployments():
        serve.delete(name)

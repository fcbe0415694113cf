"""Metrics and the dashboard against a real local Capstan: the control
plane's /metrics with its replicas' own, a real Prometheus scraping the proxy
under load, and the dashboard opened in a real headless Chromium."""

from __future__ import annotations

import concurrent.futures
import shutil
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import Cluster
from tests.support.ports import free_ports
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def metered(serve):
    from capstan.serve import metrics

    @serve.deployment(name="metered", num_replicas=2, version="m1")
    class Metered:
        def __init__(self) -> None:
            self.calls = metrics.Counter(
                "metered_calls", description="Calls answered.", tag_keys=("route",)
            )
            self.calls.set_default_tags({"route": "root"})

        def __call__(self, request) -> str:
            self.calls.inc()
            return "counted"

    Metered.deploy()
    return Metered


def samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def test_control_plane_metrics_show_replicas_and_user_metrics(metered, cluster: Cluster) -> None:
    for _ in range(6):
        assert httpx.get(f"{cluster.http_url}/metered", timeout=10).text == "counted"
    scraped = samples(httpx.get(f"{cluster.metrics_url}/metrics", timeout=10).text)
    running = [s for s in scraped if s.name == "capstan_replicas"
               and s.labels == {"deployment": "metered", "state": "RUNNING"}]  # fmt: skip
    assert [s.value for s in running] == [2]
    user = [s for s in scraped if s.name == "metered_calls_total"]
    assert sum(s.value for s in user) == 6
    assert {s.labels["deployment"] for s in user} == {"metered"}
    assert all(s.labels["replica"] and s.labels["route"] == "root" for s in user)
    ongoing = [s for s in scraped if s.name == "capstan_replica_ongoing_requests"]
    assert len([s for s in ongoing if s.labels["deployment"] == "metered"]) == 2
    passes = [
        s for s in scraped if s.name == "capstan_controlplane_reconcile_duration_seconds_count"
    ]
    assert passes and passes[0].value > 0


def test_prometheus_counts_the_requests_sent(metered, cluster: Cluster, tmp_path) -> None:
    [port] = free_ports(1)
    proxy = cluster.http_url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: capstan-proxy\n"
        "    metrics_path: /-/metrics\n"
        f"    static_configs: [{{targets: ['{proxy}']}}]\n"
    )
    with (tmp_path / "prometheus.log").open("wb") as log:
        prometheus = subprocess.Popen(
            [shutil.which("prometheus") or "prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        api = f"http://127.0.0.1:{port}/api/v1/query"
        query = 'sum(capstan_proxy_requests_total{deployment="metered",code="200"})'

        def answer() -> float | None:
            try:
                result = httpx.get(api, params={"query": query}, timeout=2).json()["data"]["result"]
            except (httpx.HTTPError, KeyError, ValueError):
                return None
            return float(result[0]["value"][1]) if result else None

        eventually_sync(lambda: answer() is not None or None, "a first scrape", timeout_s=30)
        before = answer() or 0.0
        sent = 200
        with concurrent.futures.ThreadPoolExecutor(8) as pool, httpx.Client() as http:
            codes = list(pool.map(lambda _: http.get(f"{cluster.http_url}/metered").status_code,
                                  range(sent)))  # fmt: skip
        assert codes == [200] * sent
        eventually_sync(lambda: answer() == before + sent, f"PromQL to count {sent}", timeout_s=30)
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=20)


def test_dashboard_in_chromium_shows_what_the_api_says(metered, cluster: Cluster, tmp_path) -> None:
    api = httpx.get(f"{cluster.metrics_url}/api/deployments", timeout=10).json()
    [deployment] = [d for d in api if d["id"] == "metered"]
    chromium = shutil.which("chromium") or "chromium"
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=4000"]  # fmt: skip
    dom = subprocess.run(
        [*common, "--dump-dom", f"{cluster.metrics_url}/"],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    assert 'data-ready="true"' in dom, dom[-2000:]
    row = dom[dom.index('<tr data-deployment="metered">') :].split("</tr>")[0]
    assert deployment["version"] in row and "HEALTHY" in row and "2 RUNNING" in row
    for replica in deployment["replicas"]:
        assert f"/api/logs/metered/{replica['id']}" in row
    screenshot = tmp_path / "dashboard.png"
    shoot = [f"--screenshot={screenshot}", "--window-size=1280,900", f"{cluster.metrics_url}/"]
    subprocess.run([*common, *shoot], capture_output=True, timeout=60, check=True)
    assert screenshot.stat().st_size > 10_000
    log = httpx.get(f"{cluster.metrics_url}/api/logs/metered/{deployment['replicas'][0]['id']}")
    assert log.status_code == 200

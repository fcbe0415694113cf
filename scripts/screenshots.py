"""Renders docs/dashboard.png and docs/status-watch.png from a real local
Capstan: two deployments under traffic, one of them rolling out a new
version while `capstan status --watch` runs. Needs chromium (scripts/test.sh
installs it). Run: .venv/bin/python scripts/screenshots.py"""

from __future__ import annotations

import contextlib
import html
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import httpx

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.cluster import start_cluster, stop_cluster  # noqa: E402

APP = """
import time
from capstan import serve

@serve.deployment(name="translator", num_replicas=3, version=VERSION)
class Translator:
    def __init__(self):
        time.sleep(2)  # loading a model
    def __call__(self, request):
        return "bonjour"

@serve.deployment(name="summarizer", num_replicas=2, version="s1")
def summarizer(request):
    if request.url.path.endswith("/bad"):
        raise ValueError("cannot summarise that")
    return "tl;dr"
"""


def main() -> None:
    folder = pathlib.Path(tempfile.mkdtemp(prefix="capstan-shots-"))
    cluster = start_cluster(folder / "state", {"executors": {"local": {"num_cpus": 16}}})
    stop = threading.Event()
    try:
        deploy(cluster, "t1")
        load = threading.Thread(target=traffic, args=(cluster.http_url, stop), daemon=True)
        load.start()
        time.sleep(20)  # a few traffic samples for the charts
        watch = folder / "watch.txt"
        with watch.open("w") as out:
            watcher = subprocess.Popen(
                [sys.executable, "-m", "capstan", "--address", cluster.address, "status",
                 "--watch"], stdout=out, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            rollout = threading.Thread(target=deploy, args=(cluster, "t2"))
            rollout.start()
            time.sleep(3.5)
            screenshot(f"{cluster.metrics_url}/", ROOT / "docs" / "dashboard.png", folder)
            watcher.terminate()
            watcher.wait()
            rollout.join()
        screen = watch.read_text().split("\x1b[H\x1b[2J")[-1]
        page = folder / "watch.html"
        page.write_text(
            "<body style='margin:0;background:#111;color:#ddd'><pre style='font:14px "
            f"monospace;padding:16px'>$ capstan status --watch\n{html.escape(screen)}</pre>"
        )
        screenshot(page.as_uri(), ROOT / "docs" / "status-watch.png", folder, size="1100,560")
    finally:
        stop.set()
        stop_cluster(cluster)


def deploy(cluster, version: str) -> None:
    script = f"VERSION = {version!r}\n{APP}\nTranslator.deploy()\nsummarizer.deploy()\n"
    env = {"CAPSTAN_ADDRESS": cluster.address, "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)


def traffic(url: str, stop: threading.Event) -> None:
    with httpx.Client(timeout=10) as http:
        n = 0
        while not stop.is_set():
            n += 1
            for path in ("/translator", "/summarizer", "/summarizer/bad" if n % 9 == 0 else "/"):
                with contextlib.suppress(httpx.HTTPError):
                    http.get(url + path)
            time.sleep(0.01)


def screenshot(url: str, path: pathlib.Path, folder: pathlib.Path, size: str = "1280,1000") -> None:
    subprocess.run(
        [shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
         f"--user-data-dir={folder / 'profile'}", "--virtual-time-budget=3000",
         f"--window-size={size}", f"--screenshot={path}", url],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


if __name__ == "__main__":
    main()

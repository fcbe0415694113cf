"""The proxy supervisor with real processes: a proxy that keeps exiting is
started again after a growing wait, and status says how it exited; one a
crashed control plane left running is adopted, not started twice."""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys

import psutil
import pytest

from controlplane.proxy_supervisor import ProxyLaunch, ProxyState, ProxySupervisor
from controlplane.reconciler.backoff import BackoffPolicy
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)


def _launch(tmp_path: pathlib.Path, *argv: str) -> ProxyLaunch:
    return ProxyLaunch(argv, record=tmp_path / "proxy.json", log=tmp_path / "logs" / "proxy.log")


async def test_a_proxy_that_keeps_exiting_backs_off(tmp_path: pathlib.Path) -> None:
    failing = _launch(tmp_path, sys.executable, "-c", "import sys; sys.exit(3)")
    supervisor = ProxySupervisor(failing, BackoffPolicy(base_s=0.05, max_s=60.0, reset_s=60.0))
    task = asyncio.create_task(supervisor.run())
    try:
        status = await eventually(
            lambda: (
                (s := supervisor.status()).message.startswith("the proxy exited with code 3 (4")
                and s
            ),
            "four exits in a row",
        )
        assert status.state is ProxyState.BACKING_OFF
        assert str(failing.log) in status.message
        restarts = status.restarts
        await asyncio.sleep(0.3)  # the wait is now 0.05 * 2**3 s and growing: few more tries
        assert supervisor.status().restarts <= restarts + 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await supervisor.stop()
    assert supervisor.status().state is ProxyState.STOPPED
    assert not failing.record.exists()


async def test_a_running_proxy_is_adopted_and_stopped(tmp_path: pathlib.Path) -> None:
    # A real proxy, as a crashed control plane leaves it (its control plane
    # is gone, so it waits for one).
    left = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "proxy", "--control-plane", "127.0.0.1:1"),
        *("--http-port", "0", "--grpc-port", "0"),
        stdout=asyncio.subprocess.DEVNULL,
    )
    proxy = psutil.Process(left.pid)
    launch = _launch(tmp_path, sys.executable, "-c", "raise SystemExit('not to be started')")
    launch.record.write_text(json.dumps({"pid": left.pid}))
    supervisor = ProxySupervisor(launch)
    task = asyncio.create_task(supervisor.run())
    try:
        await eventually(lambda: supervisor.status().pid == left.pid, "the proxy to be adopted")
        assert supervisor.status().restarts == 0 and not launch.log.exists()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await supervisor.stop()
        await left.wait()
    assert not proxy.is_running() and not launch.record.exists()

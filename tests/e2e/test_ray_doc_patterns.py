"""The shapes of Ray Serve 2.x's own documentation examples (getting started,
key concepts, model composition, HTTP streaming, health checks, status),
written anew for Capstan: the only change a Ray user makes is the import."""

from __future__ import annotations

import asyncio
import pathlib
import time

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import StreamingResponse

from tests.support.cluster import Cluster
from tests.support.waiting import eventually_sync


def test_getting_started_translator_then_composition(serve, cluster: Cluster) -> None:
    @serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.2, "num_gpus": 0})
    class Translator:
        def translate(self, text: str) -> str:
            return text.upper()

        async def __call__(self, http_request: Request) -> str:
            english_text: str = await http_request.json()
            return self.translate(english_text)

    serve.run(Translator.bind())
    reply = httpx.post(cluster.http_url + "/", json="Hello world!", timeout=30)
    assert reply.text == "HELLO WORLD!"

    @serve.deployment
    class Summarizer:
        def __init__(self, translator):
            self.translator = translator

        def summarize(self, text: str) -> str:
            return text.split(".")[0]

        async def __call__(self, http_request: Request) -> str:
            summary = self.summarize(await http_request.json())
            return await self.translator.translate.remote(summary)

    serve.run(Summarizer.bind(Translator.bind()))  # replaces the app at "/"
    reply = httpx.post(cluster.http_url + "/", json="It was good. Then bad.", timeout=30)
    assert reply.text == "IT WAS GOOD"


def test_handle_method_name_and_chained_responses(serve) -> None:
    @serve.deployment
    class Model:
        def forward(self, x: int) -> int:
            return x + 1

        def backward(self, x: int) -> int:
            return x - 1

    @serve.deployment
    class Pipeline:
        def __init__(self, model):
            self.model = model

        async def __call__(self, x: int) -> list[int]:
            up = self.model.forward.remote(x)
            down = self.model.options(method_name="backward").remote(up)  # chained, unawaited
            return [await up, await down]

    handle = serve.run(Pipeline.bind(Model.bind()), name="pipeline", route_prefix=None)
    assert handle.remote(10).result() == [11, 10]


def test_composition_streams_through_a_handle(serve, cluster: Cluster) -> None:
    @serve.deployment
    class Streamer:
        def __call__(self, limit: int):
            yield from range(limit)

    @serve.deployment
    class Caller:
        def __init__(self, streamer):
            self.streamer = streamer.options(stream=True)

        async def __call__(self, request: Request) -> StreamingResponse:
            limit = int(request.query_params["n"])

            async def numbers():
                async for i in self.streamer.remote(limit):
                    yield f"{i}\n"

            return StreamingResponse(numbers(), media_type="text/plain")

    serve.run(Caller.bind(Streamer.bind()), name="streams", route_prefix="/streams")
    with httpx.stream("GET", cluster.http_url + "/streams?n=5", timeout=30) as reply:
        lines = [line for line in reply.iter_lines() if line]
    assert lines == ["0", "1", "2", "3", "4"]


def test_http_streaming_stops_when_the_client_goes(serve, cluster: Cluster, tmp_path) -> None:
    marker = tmp_path / "cancelled"

    @serve.deployment
    class Ticker:
        def __init__(self, marker_path: str):
            self.marker_path = marker_path

        async def ticks(self):
            try:
                for i in range(1000):
                    yield f"{i}\n"
                    await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pathlib.Path(self.marker_path).write_text("cancelled")  # noqa: ASYNC240 - tiny marker
                raise

        def __call__(self, request: Request) -> StreamingResponse:
            return StreamingResponse(self.ticks(), media_type="text/plain")

    serve.run(Ticker.bind(str(marker)), name="ticker", route_prefix="/ticker")
    with httpx.stream("GET", cluster.http_url + "/ticker", timeout=30) as reply:
        first = [line for _, line in zip(range(3), reply.iter_lines(), strict=False)]
    assert first == ["0", "1", "2"]
    eventually_sync(marker.exists, "the generator to see the disconnect", timeout_s=15)


def test_failing_check_health_replaces_the_replica(serve, tmp_path) -> None:
    @serve.deployment(health_check_period_s=0.2, health_check_timeout_s=1)
    class Fragile:
        def __init__(self):
            self.healthy = True

        def break_me(self) -> None:
            self.healthy = False

        def check_health(self) -> None:
            if not self.healthy:
                raise RuntimeError("lost my GPU")

        def __call__(self) -> str:
            return serve.get_replica_context().replica_id.unique_id

    handle = serve.run(Fragile.bind(), name="fragile", route_prefix=None)
    first = handle.remote().result()
    handle.break_me.remote().result()

    def replaced() -> bool:
        try:
            return handle.remote().result(timeout_s=5) != first
        except Exception:
            return False  # between the old replica leaving and the new one serving

    eventually_sync(replaced, "a new replica in place of the unhealthy one", timeout_s=60)
    status = serve.status().applications["fragile"]
    assert status.deployments["Fragile"].status in ("HEALTHY", "UNHEALTHY", "UPDATING")


def test_status_reports_a_failed_constructor(serve) -> None:
    @serve.deployment
    class Broken:
        def __init__(self):
            raise ValueError("no weights found")

    with pytest.raises(Exception, match="no weights found"):
        serve.run(Broken.bind(), name="broken", route_prefix="/broken")
    app = serve.status().applications["broken"]
    assert app.status == "DEPLOY_FAILED"
    assert "no weights found" in app.deployments["Broken"].message


def test_status_while_healthy(serve) -> None:
    @serve.deployment(num_replicas=2)
    def hello(request) -> str:
        return "hi"

    started = time.time()
    serve.run(hello.bind(), name="hello", route_prefix="/hello")
    app = serve.status().applications["hello"]
    assert app.status == "RUNNING" and app.route_prefix == "/hello"
    assert app.deployments["hello"].status == "HEALTHY"
    assert app.deployments["hello"].replica_states == {"RUNNING": 2}
    assert time.time() - started < 60

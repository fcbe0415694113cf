"""`@serve.ingress(FastAPI())` on classes shipped by value, as from a script or
a notebook: the app and the class are defined in this module, which is
pickled by value (as a script's `__main__` is), and in a script run with
`capstan run`. Everything goes through the real proxy."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Annotated

import cloudpickle
import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from capstan import serve as capstan_serve
from tests.support.cluster import Cluster


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    yield {"started_by": "lifespan"}


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    secret: str = "hidden"


class PublicItem(BaseModel):
    name: str
    price_with_tax: float


def paging(limit: int = 10, offset: int = 0) -> dict:
    return {"limit": limit, "offset": offset}


@capstan_serve.deployment
@capstan_serve.ingress(app)
class Shop:
    def __init__(self, tax: float) -> None:
        self.tax = tax

    @app.get("/items/{item_id}")
    def read(self, item_id: int, page: Annotated[dict, Depends(paging)]) -> dict:
        return {"item_id": item_id, "page": page}

    @app.post("/items", response_model=PublicItem)
    async def create(self, item: Item) -> dict:
        return {"name": item.name, "price_with_tax": item.price * (1 + self.tax), "x": 1}

    @app.get("/state")
    def state(self, request: Request) -> dict:
        return {"started_by": request.state.started_by}

    @app.get("/count")
    def count(self, n: int) -> StreamingResponse:
        return StreamingResponse((f"{i}\n" for i in range(n)), media_type="text/plain")


def build_app() -> FastAPI:
    built = FastAPI()

    @built.get("/built")
    def built_route() -> dict:
        return {"built": True}

    return built


@capstan_serve.deployment
@capstan_serve.ingress(build_app)
class Factory:
    pass


standalone = FastAPI()


@standalone.get("/hi")
def say_hi() -> str:
    return "Hello world!"


# Ray's form for an app whose routes are plain functions: no class of one's own.
Standalone = capstan_serve.deployment(capstan_serve.ingress(standalone)())


@capstan_serve.deployment
class Echo:
    def __call__(self, request: Request):
        return request.query_params


@pytest.fixture
def by_value() -> Iterator[None]:
    """Ships this module's code by value, as a script's `__main__` is shipped."""
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


def test_a_fastapi_class_shipped_by_value_serves_every_feature(
    serve, cluster: Cluster, by_value
) -> None:
    serve.run(Shop.bind(0.5), route_prefix="/shop")
    with httpx.Client(base_url=cluster.http_url + "/shop", timeout=30) as http:
        read = http.get("/items/7", params={"limit": 3})
        assert read.json() == {"item_id": 7, "page": {"limit": 3, "offset": 0}}
        assert http.get("/items/seven").status_code == 422
        created = http.post("/items", json={"name": "pen", "price": 2.0, "secret": "s"})
        assert created.json() == {"name": "pen", "price_with_tax": 3.0}
        assert http.get("/state").json() == {"started_by": "lifespan"}
        with http.stream("GET", "/count", params={"n": 3}) as streamed:
            assert streamed.read() == b"0\n1\n2\n"


def test_an_ingress_builder_function_is_called_on_the_replica(
    serve, cluster: Cluster, by_value
) -> None:
    serve.run(Factory.bind(), route_prefix="/factory")
    reply = httpx.get(cluster.http_url + "/factory/built", timeout=30)
    assert reply.json() == {"built": True}


def test_an_app_without_a_class_of_its_own_is_served(serve, cluster: Cluster, by_value) -> None:
    serve.run(Standalone.bind(), route_prefix="/standalone")
    assert httpx.get(cluster.http_url + "/standalone/hi", timeout=30).json() == "Hello world!"


def test_returned_query_params_serialise_as_json(serve, cluster: Cluster, by_value) -> None:
    serve.run(Echo.bind(), route_prefix="/echo")
    reply = httpx.get(cluster.http_url + "/echo", params={"a": "1", "b": "x"}, timeout=30)
    assert reply.status_code == 200
    assert reply.json() == {"a": "1", "b": "x"}


SCRIPT = """
import contextlib
import pathlib

import starlette
from fastapi import FastAPI
from pydantic import BaseModel

from capstan import serve

MARKER = pathlib.Path({marker!r})
app = FastAPI()


@app.on_event("startup")
def started():
    MARKER.write_text("started")


@app.on_event("shutdown")
def stopped():
    MARKER.write_text("stopped")


class Greeting(BaseModel):
    name: str


@serve.deployment
@serve.ingress(app)
class Greeter:
    @app.post("/hello")
    def hello(self, greeting: Greeting) -> dict:
        return {{"text": f"Hello {{greeting.name}}", "request": starlette.requests.__name__}}


serve.run(Greeter.bind(), route_prefix="/script")
"""


def test_a_script_run_with_capstan_run_serves_its_fastapi_app(
    serve, cluster: Cluster, tmp_path
) -> None:
    marker = tmp_path / "lifespan"
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(SCRIPT.format(marker=str(marker))))
    command = [sys.executable, "-m", "capstan", "--address", cluster.address, "run", str(script)]
    env = {**os.environ, "CAPSTAN_ADDRESS": cluster.address}
    runner = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        output = _read_until(runner, b"Serving")
        assert b"Serving" in output, output + runner.stderr.read()
        reply = httpx.post(cluster.http_url + "/script/hello", json={"name": "Ada"}, timeout=30)
        assert reply.json() == {"text": "Hello Ada", "request": "starlette.requests"}
        assert marker.read_text() == "started"
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.communicate(timeout=30)
    serve.delete("default")  # the application serve.run made
    assert marker.read_text() == "stopped"


def _read_until(process: subprocess.Popen, text: bytes) -> bytes:
    output = b""
    for line in process.stdout:
        output += line
        if text in line:
            break
    return output


def test_starlette_requests_is_an_attribute_once_serve_is_imported() -> None:
    probe = "import starlette; from capstan import serve; print(starlette.requests.Request)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert "starlette.requests.Request" in result.stdout

"""Issue 7: WebSockets through the proxy to a FastAPI `@serve.ingress`
deployment, relayed over the replica's Exchange stream: echo, close codes
both ways, many sockets at once, and a deployment that takes none refusing."""

from __future__ import annotations

import asyncio
import pathlib

import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.cluster import Cluster
from tests.support.waiting import eventually_sync

app = FastAPI()


def _deploy_chat(serve, marks: pathlib.Path) -> None:
    @serve.deployment(name="chat", route_prefix="/chat")
    @serve.ingress(app)
    class Chat:
        def __init__(self, prefix: str) -> None:
            self.prefix = prefix

        @app.websocket("/ws")
        async def echo(self, websocket: WebSocket) -> None:
            await websocket.accept()
            try:
                while True:
                    text = await websocket.receive_text()
                    if text == "bye":
                        await websocket.close(code=4001, reason="see you")
                        return
                    await websocket.send_text(self.prefix + text)
            except WebSocketDisconnect as gone:
                (marks / f"closed-{gone.code}").write_text("")

        @app.websocket("/bytes")
        async def echo_bytes(self, websocket: WebSocket) -> None:
            await websocket.accept()
            data = await websocket.receive_bytes()
            await websocket.send_bytes(data[::-1])
            await websocket.close()

        @app.get("/")
        def index(self) -> str:
            return "chat"

    Chat.deploy("echo: ")


def _ws(cluster: Cluster, path: str) -> str:
    return cluster.http_url.replace("http://", "ws://") + path


def test_echo_and_close_codes(serve, cluster: Cluster, tmp_path) -> None:
    _deploy_chat(serve, tmp_path)

    async def talk() -> None:
        async with connect(_ws(cluster, "/chat/ws")) as socket:
            await socket.send("hello")
            assert await socket.recv() == "echo: hello"
            await socket.send("bye")
            with pytest.raises(ConnectionClosed) as closed:
                await socket.recv()
            assert closed.value.rcvd.code == 4001
            assert closed.value.rcvd.reason == "see you"
        async with connect(_ws(cluster, "/chat/bytes")) as socket:
            await socket.send(b"\x00\x01\x02")
            assert await socket.recv() == b"\x02\x01\x00"
        async with connect(_ws(cluster, "/chat/ws")) as socket:
            await socket.send("x")
            assert await socket.recv() == "echo: x"
            await socket.close(code=4002)

    asyncio.run(talk())
    # The client's close code reached the app.
    eventually_sync(lambda: (tmp_path / "closed-4002").exists(), "the app to see 4002")


def test_many_sockets_at_once(serve, cluster: Cluster, tmp_path) -> None:
    _deploy_chat(serve, tmp_path)

    async def one(index: int) -> list[str]:
        async with connect(_ws(cluster, "/chat/ws")) as socket:
            replies = []
            for turn in range(5):
                await socket.send(f"{index}-{turn}")
                replies.append(await socket.recv())
            return replies

    async def many() -> list[list[str]]:
        return await asyncio.gather(*(one(index) for index in range(40)))

    results = asyncio.run(many())
    assert results == [[f"echo: {i}-{t}" for t in range(5)] for i in range(40)]


def test_a_deployment_without_an_asgi_app_refuses(serve, cluster: Cluster) -> None:
    @serve.deployment(name="plain")
    def plain(request) -> str:
        return "plain"

    plain.deploy()

    async def knock() -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(_ws(cluster, "/plain")):
                pass
        assert refused.value.response.status_code == 403

    asyncio.run(knock())

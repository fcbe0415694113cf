"""Model multiplexing as Ray Serve's: a replica keeps an LRU of models,
`serve.get_multiplexed_model_id()` names the request's, and routers send a
request where its model is already loaded."""

from __future__ import annotations

import asyncio
import pathlib
import random

import httpx

from tests.support.cluster import Cluster


def _model_server(serve, max_models: int):
    @serve.deployment(num_replicas=3)
    class ModelServer:
        def __init__(self, load_log: str):
            self.load_log = pathlib.Path(load_log)

        @serve.multiplexed(max_num_models_per_replica=max_models)
        async def get_model(self, model_id: str):
            replica = serve.get_replica_context().replica_id.unique_id
            with self.load_log.open("a") as log:  # one line per load, from every replica
                log.write(f"{replica} {model_id}\n")
            await asyncio.sleep(0.05)  # loading is the cost multiplexing saves
            return {"name": model_id}

        async def __call__(self, request=None):
            model = await self.get_model(serve.get_multiplexed_model_id())
            return model["name"]

        def model_of_sync_method(self):
            return serve.get_multiplexed_model_id()

    return ModelServer


def _hit_rate(handle, models: list[str], rounds: int, load_log: pathlib.Path) -> float:
    rng = random.Random(7)
    requests = 0
    for _ in range(rounds):  # rounds of concurrent calls, as under load
        wanted = [rng.choice(models) for _ in range(10)]
        responses = [handle.options(multiplexed_model_id=m).remote() for m in wanted]
        assert [r.result() for r in responses] == wanted
        requests += len(wanted)
    loads = len(load_log.read_text().splitlines())
    return 1 - loads / requests


def test_requests_find_their_warm_model_across_replicas(
    serve, cluster: Cluster, tmp_path: pathlib.Path
) -> None:
    load_log = tmp_path / "loads"
    load_log.touch()
    app = _model_server(serve, max_models=2).bind(str(load_log))
    handle = serve.run(app, name="models", route_prefix="/models")
    # 5 models, room for 6 across 3 replicas: after warm-up nothing reloads.
    hit_rate = _hit_rate(handle, [f"m{i}" for i in range(5)], rounds=20, load_log=load_log)
    assert hit_rate >= 0.9, f"hit rate {hit_rate:.2f}"

    header = {"serve_multiplexed_model_id": "m1"}
    answer = httpx.get(cluster.http_url + "/models", headers=header, timeout=30)
    assert answer.text == "m1"
    sync = handle.options(multiplexed_model_id="m3", method_name="model_of_sync_method")
    assert sync.remote().result() == "m3"


def test_least_recently_used_model_is_evicted(serve, tmp_path: pathlib.Path) -> None:
    load_log = tmp_path / "loads"
    load_log.touch()
    app = _model_server(serve, max_models=1).options(num_replicas=1).bind(str(load_log))
    handle = serve.run(app, name="lru", route_prefix="/lru")
    for model in ["a", "a", "b", "a"]:
        assert handle.options(multiplexed_model_id=model).remote().result() == model
    loaded = [line.split()[1] for line in load_log.read_text().splitlines()]
    assert loaded == ["a", "b", "a"]

"""Multiplexed models under load: requests/s and how many times a model was
loaded, with the router's model affinity, beside what routing without it
would load.

The deployment has 3 replicas holding at most 2 models each; wrk sends every
request for one of MODELS models, picked at random (a Lua script sets Ray
Serve's model-id header). Each load appends a line to a file, so loads are
counted across replicas. Affinity cannot be switched off without a branch on
every request's path, so the no-affinity figure is simulated: the same random
models, each request sent to a replica `proxy.router.pick` chooses among idle
replicas (a uniform choice), each replica an LRU of 2 models.
"""

from __future__ import annotations

import collections
import pathlib
import random
import tempfile

from drivers import run_driver
from wrk import wrk

from proxy.router import pick

REPLICAS = 3
MODELS_PER_REPLICA = 2
MODELS = 6
LOAD_S = 0.02
APP = f"""
import asyncio, sys
{{connect}}

@serve.deployment(num_replicas={REPLICAS}, ray_actor_options={{"num_cpus": 0}})
class Models:
    def __init__(self, load_log):
        self.load_log = load_log

    @serve.multiplexed(max_num_models_per_replica={MODELS_PER_REPLICA})
    async def get_model(self, model_id):
        with open(self.load_log, "a") as log:
            log.write(model_id + "\\n")
        await asyncio.sleep({LOAD_S})  # the cost of a load
        return model_id

    async def __call__(self, request):
        return await self.get_model(serve.get_multiplexed_model_id())

serve.run(Models.bind(sys.argv[1]), name="models", route_prefix="/models")
"""
RANDOM_MODEL = f"""
request = function()
  wrk.headers["serve_multiplexed_model_id"] = "m" .. math.random({MODELS})
  return wrk.format()
end
"""


def measure_multiplexing(base_url: str, env: dict, duration_s: int, connections: int) -> dict:
    """wrk with random model ids against the deployment, deployed here."""
    with tempfile.TemporaryDirectory(prefix="capstan-bench-models-") as folder:
        load_log = pathlib.Path(folder) / "loads"
        load_log.touch()
        script = pathlib.Path(folder) / "random_model.lua"
        script.write_text(RANDOM_MODEL)
        run_driver(APP, env, "capstan", str(load_log))
        row = wrk(f"{base_url}/models", duration_s, connections, script=str(script))
        row["loads"] = len(load_log.read_text().splitlines())
    row["simulated_loads"] = simulate_without_affinity(row["requests"])
    return row


class _Replica:
    """What `pick` reads of a replica, and the models it holds (an LRU)."""

    def __init__(self) -> None:
        self.in_flight, self.ongoing, self.is_broken = 0, 0, False
        self.client = self
        self.models: collections.OrderedDict[str, None] = collections.OrderedDict()


def simulate_without_affinity(requests: int, seed: int = 7) -> int:
    """Model loads for `requests` random models routed by load alone."""
    rng = random.Random(seed)
    replicas = [_Replica() for _ in range(REPLICAS)]
    loads = 0
    for _ in range(requests):
        model = f"m{rng.randint(1, MODELS)}"
        models = pick(replicas, 1, rng=rng).models  # type: ignore[arg-type]
        if model in models:
            models.move_to_end(model)
            continue
        loads += 1
        models[model] = None
        if len(models) > MODELS_PER_REPLICA:
            models.popitem(last=False)
    return loads


def print_multiplex_table(row: dict, connections: int) -> None:
    print()
    print(
        f"multiplexing: {REPLICAS} replicas, at most {MODELS_PER_REPLICA} models each, "
        f"{MODELS} models at random, {LOAD_S * 1000:.0f} ms per load, {connections} connections"
    )
    print("| routing | req/s | p50 ms | p99 ms | requests | model loads | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| model affinity (measured) | {row['rps']:,.0f} | {row['p50_ms']:.2f} "
        f"| {row['p99_ms']:.2f} | {row['requests']:,} | {row['loads']:,} | {row['errors']} |"
    )
    print(
        f"| least-loaded only (simulated with router.pick) | | | | {row['requests']:,} "
        f"| {row['simulated_loads']:,} | |"
    )

"""Batched against unbatched: one handler whose cost is per call, not per
item (a model on one device, held 10 ms by each call whatever its size),
served as it is and behind `@serve.batch`. Shared by run.py; `APPS` runs
unchanged on Ray Serve (drivers.py)."""

from __future__ import annotations

from drivers import run_driver
from wrk import wrk

COST_S = 0.01
MAX_BATCH_SIZE = 32
# No CPUs reserved: the hello replicas of run.py already hold this machine's two.
# max_ongoing_requests is Capstan's default, set for Ray Serve, whose default (5)
# would cap a batch at 5.
APPS = f"""
import asyncio
{{connect}}

@serve.deployment(max_ongoing_requests=100, ray_actor_options={{"num_cpus": 0}})
class Unbatched:
    def __init__(self):
        self.device = asyncio.Lock()

    async def __call__(self, request):
        async with self.device:
            await asyncio.sleep({COST_S})
        return "ok"

@serve.deployment(max_ongoing_requests=100, ray_actor_options={{"num_cpus": 0}})
class Batched:
    def __init__(self):
        self.device = asyncio.Lock()

    @serve.batch(max_batch_size={MAX_BATCH_SIZE}, batch_wait_timeout_s=0.005)
    async def __call__(self, requests):
        async with self.device:
            await asyncio.sleep({COST_S})
        return ["ok"] * len(requests)

serve.run(Unbatched.bind(), name="unbatched", route_prefix="/unbatched")
serve.run(Batched.bind(), name="batched", route_prefix="/batched")
"""


def measure_batching(
    base_url: str, env: dict, duration_s: int, connections: int, system: str = "capstan"
) -> list[dict]:
    """wrk against both handlers on a running cluster serving HTTP at `base_url`."""
    run_driver(APPS, env, system)
    rows = []
    for name in ("unbatched", "batched"):
        row = wrk(f"{base_url}/{name}", duration_s, connections)
        row["name"] = name
        rows.append(row)
    return rows


def print_batching_table(rows: list[dict], connections: int) -> None:
    unbatched = rows[0]
    print()
    print(
        f"batching: {COST_S * 1000:.0f} ms per call, one call at a time, "
        f"max_batch_size={MAX_BATCH_SIZE}, {connections} connections"
    )
    print("| handler | req/s | p50 ms | p99 ms | req/s vs unbatched | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['name']} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['rps'] / unbatched['rps']:.1f}x | {row['errors']} |"
        )

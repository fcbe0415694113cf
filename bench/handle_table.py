"""Sequential handle calls: one caller, `handle.remote(x).result()` in a loop
against a trivial deployment (a sync and an async method), after a warm-up.
Shared by run.py; `SCRIPT` runs unchanged on Ray Serve (drivers.py).
"""

from __future__ import annotations

import json

from drivers import run_driver

WARMUP_CALLS = 500
SCRIPT = """
import json, sys, time
{{connect}}

@serve.deployment(ray_actor_options={{"num_cpus": 0}})
class Echo:
    def __call__(self, x):
        return x

@serve.deployment(ray_actor_options={{"num_cpus": 0}})
class AsyncEcho:
    async def __call__(self, x):
        return x

def measure(handle, duration_s):
    for _ in range({warmup}):
        handle.remote(1).result()
    times = []
    end = time.perf_counter() + duration_s
    while (began := time.perf_counter()) < end:
        handle.remote(1).result()
        times.append(time.perf_counter() - began)
    times.sort()
    return {{"calls_s": len(times) / sum(times), "p50_ms": times[len(times) // 2] * 1e3,
            "p99_ms": times[int(len(times) * 0.99)] * 1e3}}

rows = {{}}
for name, deployment in (("sync", Echo), ("async", AsyncEcho)):
    handle = serve.run(deployment.bind(), name="handle_" + name, route_prefix=None)
    rows[name] = measure(handle, float(sys.argv[1]))
    serve.delete("handle_" + name)
print(json.dumps(rows))
"""


def measure_handle(env: dict, duration_s: int, system: str = "capstan") -> list[dict]:
    """A row per method kind (sync, async) on the cluster `env` points at."""
    script = SCRIPT.format(warmup=WARMUP_CALLS)
    rows = json.loads(run_driver(script, env, system, str(duration_s)).strip().splitlines()[-1])
    return [{"name": name, **row} for name, row in rows.items()]


def print_handle_table(rows: list[dict]) -> None:
    print()
    print("sequential handle calls: handle.remote(1).result() in a loop, one caller")
    print("| method | calls/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['name']} | {row['calls_s']:,.0f} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} |"
        )

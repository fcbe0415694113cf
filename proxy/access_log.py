"""The proxy's access log: one JSON line per request (time, deployment,
protocol, method, path, status, latency_ms, replica, request_id) in a
size-rotated file.

The hot path only appends a tuple to a list; a background task hands the
batch to a thread every `flush_period_s`, which formats and writes it. So a
request pays well under a microsecond, and a slow disk never stalls the
event loop.
"""

from __future__ import annotations

import asyncio
import functools
import json.encoder
import pathlib
import time

DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_BACKUPS = 3
_quote = json.encoder.encode_basestring_ascii


class AccessLog:
    """Buffers request records and writes them in batches. `run()` as a
    task; cancelling it writes what is buffered first."""

    def __init__(
        self,
        path: pathlib.Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
        flush_period_s: float = 0.5,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._max_bytes = max_bytes
        self._backups = backups
        self._flush_period_s = flush_period_s
        self._pending: list[tuple] = []

    def record(
        self,
        deployment: str,
        protocol: str,
        method: str,
        path: str,
        status: int,
        latency_s: float,
        replica: str,
        request_id: str,
    ) -> None:
        """Notes one answered request (cheap: formatting happens later)."""
        self._pending.append((time.time(), deployment, protocol, method, path, status,
                              latency_s, replica, request_id))  # fmt: skip

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._flush_period_s)
                await self._flush()
        finally:
            await self._flush()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            await asyncio.to_thread(self._write, batch)

    def _write(self, batch: list[tuple]) -> None:
        """One write per batch (a write per line would cost the proxy more
        CPU than the request itself spends in it)."""
        text = "".join(_line(entry) for entry in batch).encode()
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(text) > self._max_bytes:
            self._rotate()
        with self.path.open("ab") as file:
            file.write(text)

    def _rotate(self) -> None:
        """access.log becomes access.log.1, .1 becomes .2, ...; the oldest goes."""
        for n in range(self._backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self._backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()


def _line(entry: tuple) -> str:
    """One JSON object. Written by hand (strings escaped by json's own C
    encoder) since json.dumps of a dict costs several times more."""
    epoch_s, deployment, protocol, method, path, status, latency_s, replica, request_id = entry
    status_json = status if isinstance(status, int) else _quote(status)
    return (
        f'{{"time":"{_iso(epoch_s)}","deployment":{_quote(deployment)},'
        f'"protocol":"{protocol}","method":{_quote(method)},"path":{_quote(path)},'
        f'"status":{status_json},"latency_ms":{latency_s * 1000:.3f},'
        f'"replica":{_quote(replica)},"request_id":{_quote(request_id)}}}\n'
    )


@functools.lru_cache(maxsize=4)
def _second(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_s))


def _iso(epoch_s: float) -> str:
    return f"{_second(int(epoch_s))}.{int(epoch_s % 1 * 1000):03d}Z"

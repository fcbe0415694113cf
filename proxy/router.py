"""The least-loaded choice of replica, shared by the HTTP proxy, the DataPlane
and the Python SDK's handles.

A replica's load is the router's own count of requests in flight on it,
corrected upwards by the count the replica piggybacks on every reply (which
includes other routers' requests). Only the router's own count decides
eligibility against max_concurrent_queries: the piggybacked one goes stale
when no reply comes, and a stale count must never block a request forever.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from capstan import defaults, errors
from capstan.internal.v1 import replica_pb2
from capstan.links import ClusterLinks
from capstan.v1 import controlplane_pb2
from proxy.replica_client import NO_LINKS, Rejected, ReplicaClient, Replies

# Past this many replicas, sampling two beats scanning all (power of two choices).
SCAN_LIMIT = 4
# Added to the load of replicas we would rather not use (one that just rejected
# this request, or whose last connection failed): chosen only when nothing else is free.
_PENALTY = 1 << 20
_RNG = random.Random()
_T = TypeVar("_T")


@dataclass(eq=False, slots=True)
class Slot:
    """One replica of a deployment as this router sees it."""

    replica_id: str
    client: ReplicaClient
    pool: Pool | None = None
    in_flight: int = 0

    def release(self) -> None:
        """Ends one request on this replica and hands the freed slot on."""
        self.in_flight -= 1
        pool = self.pool
        if pool is not None and pool.waiters:
            pool.dispatch()


def pick(
    slots: Sequence[Slot],
    max_concurrent: int,
    avoid: Sequence[Slot] = (),
    rng: random.Random = _RNG,
) -> Slot | None:
    """The least-loaded slot with room (ties broken at random), or None."""
    if len(slots) > SCAN_LIMIT:
        first, second = rng.sample(slots, 2)
        load_a, load_b = _load(first, max_concurrent, avoid), _load(second, max_concurrent, avoid)
        if load_a is not None and (load_b is None or load_a < load_b):
            return first
        if load_b is not None and (load_a is None or load_b < load_a):
            return second
        if load_a is not None:
            return first if rng.random() < 0.5 else second
        # Both sampled replicas are full: look at every one before giving up.
    best, best_load, ties = None, _PENALTY << 1, 0
    for slot in slots:
        load = _load(slot, max_concurrent, avoid)
        if load is None or load > best_load:
            continue
        if load < best_load:
            best, best_load, ties = slot, load, 1
        else:
            ties += 1
            if rng.randrange(ties) == 0:  # reservoir sampling: each tie equally likely
                best = slot
    return best


def pick_for_model(
    slots: Sequence[Slot],
    max_concurrent: int,
    model_id: str,
    avoid: Sequence[Slot] = (),
    rng: random.Random = _RNG,
) -> Slot | None:
    """For a multiplexed request: the least-loaded replica holding `model_id`
    with room; else, so as to evict the least, one holding the fewest models;
    else any with room."""
    holders = [slot for slot in slots if model_id in slot.client.model_ids]
    chosen = pick(holders, max_concurrent, avoid, rng) if holders else None
    if chosen is None:
        fewest = min((len(slot.client.model_ids) for slot in slots), default=0)
        emptiest = [slot for slot in slots if len(slot.client.model_ids) == fewest]
        chosen = pick(emptiest, max_concurrent, avoid, rng) or pick(
            slots, max_concurrent, avoid, rng
        )
    return chosen


def _load(slot: Slot, max_concurrent: int, avoid: Sequence[Slot]) -> int | None:
    in_flight = slot.in_flight
    if in_flight >= max_concurrent:
        return None
    client = slot.client
    load = client.ongoing if client.ongoing > in_flight else in_flight
    if client.is_broken or (avoid and slot in avoid):
        load += _PENALTY
    return load


@dataclass(eq=False)
class Pool:
    """A deployment's replicas and the FIFO of requests waiting for one."""

    name: str
    rng: random.Random
    slots: list[Slot] = field(default_factory=list)
    max_concurrent: int = defaults.MAX_CONCURRENT_QUERIES
    # Negative: unbounded.
    max_queued: int = -1
    # None: the router's default.
    request_timeout_s: float | None = None
    waiters: deque[asyncio.Future[Slot]] = field(default_factory=deque)

    def try_acquire(self, avoid: Sequence[Slot], model_id: str = "") -> Slot | None:
        """A slot taken at once, or None when the request must wait."""
        if self.waiters:
            return None  # first come, first served
        if model_id:
            slot = pick_for_model(self.slots, self.max_concurrent, model_id, avoid, self.rng)
        else:
            slot = pick(self.slots, self.max_concurrent, avoid, self.rng)
        if slot is not None:
            slot.in_flight += 1
        return slot

    async def wait(self, no_replica_timeout_s: float) -> Slot:
        """Queues for the next free slot; BackPressure when the queue is full,
        Unavailable when no replica appears in time."""
        if self.slots and 0 <= self.max_queued <= len(self.waiters):
            raise errors.BackPressure(
                f"deployment {self.name!r} is at capacity: every replica is at "
                f"max_concurrent_queries={self.max_concurrent} and {len(self.waiters)} "
                "requests are queued; retry later or add replicas"
            )
        waiter: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        self.dispatch()
        try:
            async with asyncio.timeout(None if self.slots else no_replica_timeout_s):
                return await waiter
        except BaseException as exc:
            self._abandon(waiter)
            if isinstance(exc, TimeoutError):
                raise errors.Unavailable(f"no live replica for deployment {self.name!r}") from None
            raise

    def dispatch(self) -> None:
        """Hands free slots to waiting requests in FIFO order."""
        waiters = self.waiters
        while waiters:
            if waiters[0].done():
                waiters.popleft()
                continue
            slot = pick(self.slots, self.max_concurrent, (), self.rng)
            if slot is None:
                return
            slot.in_flight += 1
            waiters.popleft().set_result(slot)

    def fail_waiters(self, error: errors.CapstanError) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def _abandon(self, waiter: asyncio.Future[Slot]) -> None:
        if not waiter.done():
            waiter.cancel()
        elif not waiter.cancelled() and waiter.exception() is None:
            waiter.result().release()  # handed a slot, then cancelled before using it
        if waiter in self.waiters:
            self.waiters.remove(waiter)


class Router:
    """Routes requests to deployments' replicas by the latest route table.

    Call `update()` with each table; `send()` and `call()` from the event loop
    that owns the router.
    """

    def __init__(
        self,
        *,
        no_replica_timeout_s: float = 5.0,
        max_attempts: int = 3,
        drain_grace_s: float = 30.0,
        request_timeout_s: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """`request_timeout_s` applies to deployments that set none (None: no limit)."""
        self._request_timeout_s = request_timeout_s
        self._no_replica_timeout_s = no_replica_timeout_s
        self._max_attempts = max_attempts
        self._drain_grace_s = drain_grace_s
        self._rng = rng or random.Random()
        self._pools: dict[str, Pool] = {}
        self._clients: dict[str, ReplicaClient] = {}
        self._links = NO_LINKS
        self._closing: set[asyncio.Task[None]] = set()

    def update(
        self,
        endpoints: Iterable[controlplane_pb2.Endpoint],
        links: ClusterLinks | None = None,
    ) -> None:
        """Replaces the route table. Clients are reused by address; removed
        ones close once their requests finish (up to drain_grace_s). New
        clients reach their replicas through `links` (default: the last given)."""
        if links is not None:
            self._links = links
        pools: dict[str, Pool] = {}
        clients: dict[str, ReplicaClient] = {}
        for endpoint in endpoints:
            pool = self._pools.get(endpoint.name) or Pool(endpoint.name, self._rng)
            self._refresh(pool, endpoint, clients)
            pools[endpoint.name] = pool
        for name, pool in self._pools.items():
            if name not in pools:
                pool.fail_waiters(errors.NotFound(f"deployment {name!r} was deleted"))
        for address, client in self._clients.items():
            if address not in clients:
                self._close_later(client)
        self._pools, self._clients = pools, clients
        for pool in pools.values():
            pool.dispatch()

    def snapshot(self) -> dict[str, list[tuple[str, int]]]:
        """{deployment: [(replica address, requests in flight)]}, for tests and debugging."""
        return {
            name: [(slot.client.address, slot.in_flight) for slot in pool.slots]
            for name, pool in self._pools.items()
        }

    def load(self) -> dict[str, tuple[int, int]]:
        """{deployment: (requests in flight, requests queued)}, for metrics."""
        return {
            name: (sum(slot.in_flight for slot in pool.slots), len(pool.waiters))
            for name, pool in self._pools.items()
        }

    async def send(
        self, deployment: str, request: replica_pb2.RequestFrame, model_id: str = ""
    ) -> Replies:
        """Sends `request` to the least-loaded replica of `deployment` (for a
        multiplexed `model_id`, one that holds the model if one can) and
        returns once the replica answered first. A replica that rejected it is
        replaced by another, up to max_attempts. The caller must exhaust the
        replies or `cancel()` them; either frees the replica's slot.

        Raises NotFound, BackPressure, Unavailable, or the first reply's error."""
        avoid: tuple[Slot, ...] = ()
        for _ in range(self._max_attempts):
            slot = await self._acquire(deployment, avoid, model_id)
            try:
                replies = slot.client.send(request)
            except Rejected:
                slot.release()
                avoid += (slot,)
                continue
            except BaseException:  # too big to send: fails this request alone
                slot.release()
                raise
            replies.on_done = slot.release
            try:
                await replies.started()
            except Rejected:
                avoid += (slot,)
                continue
            except BaseException:
                replies.cancel()
                raise
            return replies
        raise errors.Unavailable(
            f"every replica of deployment {deployment!r} turned the request away; retry later"
        )

    async def call(
        self, deployment: str, invocation: replica_pb2.Invocation
    ) -> replica_pb2.Payload:
        """Calls a method on the least-loaded replica and returns its result;
        DeadlineExceeded past the deployment's request_timeout_s."""
        seconds = self.request_timeout_s(deployment)
        return await within(seconds, deployment, self._call(deployment, invocation))

    async def _call(
        self, deployment: str, invocation: replica_pb2.Invocation
    ) -> replica_pb2.Payload:
        request = replica_pb2.RequestFrame(invocation=invocation)
        replies = await self.send(deployment, request, invocation.multiplexed_model_id)
        try:
            reply = await replies.__anext__()
        finally:
            replies.cancel()
        return reply.result

    def request_timeout_s(self, deployment: str) -> float | None:
        """How long a request to `deployment` may take (None: no limit)."""
        pool = self._pools.get(deployment)
        if pool is not None and pool.request_timeout_s is not None:
            return pool.request_timeout_s
        return self._request_timeout_s

    async def close(self) -> None:
        """Closes every client, letting in-flight requests finish first."""
        for client in self._clients.values():
            self._close_later(client)
        self._clients = {}
        for pool in self._pools.values():
            pool.fail_waiters(errors.Unavailable("the router is shutting down"))
        if self._closing:
            await asyncio.gather(*self._closing)

    def pool(self, deployment: str) -> Pool:
        """The deployment's replicas and queue; NotFound if the table lacks it."""
        pool = self._pools.get(deployment)
        if pool is None:
            raise errors.NotFound(f"no deployment named {deployment!r}")
        return pool

    async def _acquire(self, deployment: str, avoid: Sequence[Slot], model_id: str) -> Slot:
        pool = self.pool(deployment)
        slot = pool.try_acquire(avoid, model_id)
        if slot is None:
            slot = await pool.wait(self._no_replica_timeout_s)
        return slot

    def _refresh(
        self, pool: Pool, endpoint: controlplane_pb2.Endpoint, clients: dict[str, ReplicaClient]
    ) -> None:
        pool.max_concurrent = endpoint.max_concurrent_queries or defaults.MAX_CONCURRENT_QUERIES
        pool.max_queued = endpoint.max_queued_requests
        pool.request_timeout_s = endpoint.request_timeout_s or None
        old = {(slot.replica_id, slot.client.address): slot for slot in pool.slots}
        slots = []
        for replica in endpoint.replicas:
            slot = old.get((replica.id, replica.address))
            if slot is None:
                client = clients.get(replica.address) or self._clients.get(replica.address)
                client = client or ReplicaClient(
                    replica.address, tls=replica.tls, links=self._links
                )
                slot = Slot(replica.id, client, pool)
            clients[replica.address] = slot.client
            slots.append(slot)
        pool.slots = slots

    def _close_later(self, client: ReplicaClient) -> None:
        task = asyncio.get_running_loop().create_task(client.close(self._drain_grace_s))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


async def within(seconds: float | None, deployment: str, step: Awaitable[_T]) -> _T:
    """Awaits `step`, cancelling it past `seconds` (None: no limit) with
    DeadlineExceeded. No timer at all without a limit: this is every
    request's path."""
    if seconds is None:
        return await step
    try:
        async with asyncio.timeout(seconds):
            return await step
    except TimeoutError:
        raise errors.DeadlineExceeded(
            f"deployment {deployment!r} did not answer within request_timeout_s={seconds}; "
            "the request was cancelled"
        ) from None

"""The Ray actor that hosts one replica worker.

The actor runs `start_replica` in its own event loop, so the replica serves
`capstan.internal.v1.ReplicaService` over gRPC exactly as it does under every other
executor; Ray carries only the executor's few control calls (start,
describe, stop), never requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import ray

from capstan.internal.v1 import replica_pb2
from executors.replica import LoadError, RunningReplica, start_replica

log = logging.getLogger("capstan.replica")


class ReplicaActor:
    """One replica worker in a detached, named Ray actor. A restarted control
    plane finds it again by its name and asks `describe` where it serves."""

    def __init__(self) -> None:
        self._replica: RunningReplica | None = None
        self._config: replica_pb2.ReplicaConfig | None = None

    async def start(self, config_bytes: bytes, host: str) -> dict[str, str]:
        """Constructs the user's code and serves it on `host` (empty: this
        node's Ray IP, which every node of the cluster can reach).

        Returns `describe()`, or `{"error": message}` when the user's code
        fails to import, construct or reconfigure. Idempotent."""
        if self._replica is not None:
            return self.describe()
        config = replica_pb2.ReplicaConfig.FromString(config_bytes)
        config.host = host or ray.util.get_node_ip_address()
        _log_to_stderr(config.replica_id)
        try:
            self._replica = await start_replica(config)
        except LoadError as error:
            log.error("%s", error, exc_info=error.__cause__)
            return {"error": str(error)}
        self._config = config
        return self.describe()

    def node_address(self) -> str:
        """This node's Ray IP, where `start("")` serves: the host its TLS
        certificate must name."""
        return ray.util.get_node_ip_address()

    def describe(self) -> dict[str, str]:
        """Who and where this replica is; empty until `start` has returned."""
        if self._replica is None or self._config is None:
            return {}
        context = ray.get_runtime_context()
        return {
            "replica_id": self._config.replica_id,
            "nonce": self._config.nonce,
            "address": self._replica.address,
            "node": context.get_node_id(),
            "actor_id": context.get_actor_id() or "",
            "pid": str(os.getpid()),
            "tls": "1" if self._config.tls_cert else "",
        }

    async def log_bytes(self, stream: str, offset: int) -> bytes:
        """This worker's stdout ("out") or stderr ("err") from `offset` on.
        Ray points both at files in its session logs on this node; the actor
        reads them itself, so the log is reachable wherever the node is."""
        fd = {"out": 1, "err": 2}[stream]
        return await asyncio.to_thread(_read_fd_file, fd, offset)

    async def stop(self, timeout_s: float) -> None:
        """Stops serving gracefully: NOT_SERVING, drain for up to `timeout_s`,
        stop the gRPC server. The executor then kills the actor."""
        if self._replica is not None:
            await self._replica.stop(timeout_s)


def _read_fd_file(fd: int, offset: int) -> bytes:
    path = os.readlink(f"/proc/self/fd/{fd}")
    if not path.startswith("/"):  # a pipe or a terminal: nothing kept to read
        return b""
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read()


def _log_to_stderr(replica_id: str) -> None:
    # Ray keeps a worker's stderr in its session logs; without a handler the
    # replica's INFO lines would be dropped.
    logger = logging.getLogger("capstan")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s replica {replica_id}: %(message)s")
    )
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

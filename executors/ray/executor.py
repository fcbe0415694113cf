"""The Ray executor: replicas are detached, named Ray actors.

Each replica is a `ReplicaActor` named `capstan-replica-<replica_id>` in the
configured namespace. Detached, it outlives the control plane's connection,
and a restarted control plane finds it by listing the namespace's named
actors and asking each where it serves (adoption). Ray places replicas
itself: num_cpus, num_gpus, resources and runtime_env go to Ray unchanged.
Requests never pass through Ray; each actor serves ReplicaService over gRPC
like every other executor's workers.

Ray calls that block run in a thread; actor calls are awaited.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

import ray
from ray.exceptions import RayError

from capstan.errors import NotFound
from capstan.internal.v1 import replica_pb2
from executors.base import (
    Capabilities,
    Executor,
    ExecutorError,
    LaunchSpec,
    Node,
    ReplicaRef,
    ReplicaStartError,
)
from executors.log_file import merged, read_log
from executors.ray import connection, errors, resources
from executors.ray.actor import ReplicaActor
from executors.ray.calls import BlockingCalls
from executors.ray.settings import RaySettings

log = logging.getLogger("capstan.executors.ray")

ACTOR_PREFIX = "capstan-replica-"
# The actor's own control calls at once (start, describe, stop); requests go
# over gRPC and never count here.
_MAX_CONCURRENCY = 16
# Beyond stop's timeout_s: the replica's gRPC server takes a second to close.
_STOP_MARGIN_S = 2.0
# How long Ray may take to report a killed actor dead.
_KILL_WAIT_S = 15.0

_ReplicaActorClass = ray.remote(ReplicaActor)
_T = TypeVar("_T")


def actor_name(replica_id: str) -> str:
    """The Ray actor name of a replica."""
    return ACTOR_PREFIX + replica_id


class RayExecutor(Executor):
    """Runs replicas as actors on a Ray cluster (or a Ray of its own)."""

    name = "ray"

    def __init__(self, config: Mapping[str, Any], state_dir: pathlib.Path) -> None:
        super().__init__(config, state_dir)
        self.settings = RaySettings.from_config(config)
        self.capabilities = Capabilities(
            schedules_itself=True,
            # A Ray started inside the control plane's process ends with it.
            adopts_replicas=not self.settings.is_local,
            supports_working_dir=True,
            supports_pip=True,
            supports_conda=True,
            reads_logs=True,
        )
        self._calls = BlockingCalls()
        self._connecting = asyncio.Lock()
        self._is_connected = False
        # Actors this instance is starting: observe() need not wait on them.
        self._starting: set[str] = set()

    async def capacity(self) -> Sequence[Node]:
        nodes = await self._nodes()
        return [resources.node_of(info) for info in nodes if info.get("Alive")]

    async def launch(self, spec: LaunchSpec) -> ReplicaRef:
        need = resources.demand(spec.options)
        reason = resources.unplaceable(need, await self._nodes())
        if reason is not None:
            raise ExecutorError(f"Ray cannot place replica {spec.replica_id}: {reason}")
        runtime_env = resources.ray_runtime_env(spec.options, spec.env)
        if spec.options.is_package:
            # Ray takes a local .zip or .tar.gz as a working_dir too, and
            # unpacks what it uploaded as it is (a public file:// URI would
            # need every node to see this disk, and strips a lone top folder).
            runtime_env["working_dir"] = spec.package_archive().path
        if "working_dir" in runtime_env:
            # Ray uploads a local folder only for ray.init(); for an actor
            # it wants a URI: upload it (once per content) and pass that.
            runtime_env = await self._ray(
                _upload_working_dir, runtime_env, self.state_dir, what="uploading working_dir"
            )
        name = actor_name(spec.replica_id)
        self._starting.add(name)
        try:
            actor = await self._create(name, resources.actor_options(need, runtime_env))
            try:
                described = await self._start(actor, spec, need, runtime_env)
            except BaseException:
                await asyncio.shield(self._discard(actor, name))
                raise
        finally:
            self._starting.discard(name)
        return _ref(described)

    async def stop(self, ref: ReplicaRef, timeout_s: float) -> None:
        name = ref.data.get("actor_name") or actor_name(ref.replica_id)
        actor = await self._find(name)
        if actor is None:
            return
        try:
            async with asyncio.timeout(timeout_s + _STOP_MARGIN_S):
                await actor.stop.remote(timeout_s)
        except TimeoutError:
            log.warning("replica %s did not stop in %.1fs; killing it", ref.replica_id, timeout_s)
        except RayError as error:
            # Dead, dying or failing: the kill below is all that is left.
            log.info("replica %s did not stop cleanly: %s", ref.replica_id, type(error).__name__)
        await self._kill(actor, name)

    async def observe(self) -> Sequence[ReplicaRef]:
        names = await self._ray(ray.util.list_named_actors, what="listing actors")
        try:
            async with asyncio.TaskGroup() as group:
                asks = [
                    group.create_task(self._describe(name))
                    for name in names
                    if name.startswith(ACTOR_PREFIX) and name not in self._starting
                ]
        except ExceptionGroup as failed:
            # Ray not answering: a partial answer would read as dead replicas.
            raise failed.exceptions[0] from None
        return [ref for ask in asks if (ref := ask.result()) is not None]

    async def read_log(self, ref: ReplicaRef, since_s: float, follow: bool) -> AsyncIterator[str]:
        # The actor reads its own stdout and stderr files (Ray's session
        # logs, on whichever node it runs), so this works on any cluster
        # without Ray's dashboard. A stopped replica's actor is gone, and
        # its log with it as far as Capstan can reach.
        actor = await self._find(actor_name(ref.replica_id))
        if actor is None:
            raise NotFound(f"replica {ref.replica_id} has no running Ray actor to read logs from")
        cutoff_s = time.time() - since_s if since_s > 0 else None

        def stream(name: str) -> AsyncIterator[str]:
            async def read(offset: int) -> tuple[bytes, int]:
                try:
                    async with asyncio.timeout(self.settings.call_timeout_s):
                        return await actor.log_bytes.remote(name, offset), offset
                except TimeoutError:
                    raise ExecutorError(f"replica {ref.replica_id} did not hand over its log in "
                                        f"{self.settings.call_timeout_s:g}s") from None  # fmt: skip
                except RayError as error:
                    raise errors.from_ray(ref.replica_id, error) from error

            return read_log(read, cutoff_s, follow)

        async for line in merged([stream("out"), stream("err")]):
            yield line

    async def close(self) -> None:
        """Leaves the Ray connection. Replicas keep running on a cluster that
        was started outside the control plane (`address` set); a Ray the
        executor started itself ends when its last user closes, replicas and
        all, as it would anyway when the control plane's process exits."""
        async with self._connecting:
            if self._is_connected:
                self._is_connected = False
                try:
                    await connection.disconnect(self.settings, self._calls)
                except ExecutorError as error:
                    log.warning("leaving Ray: %s", error)

    async def _connect(self) -> None:
        async with self._connecting:
            if not self._is_connected:
                await connection.connect(self.settings, self._calls)
                self._is_connected = True

    async def _ray(
        self, function: Callable[..., _T], *args: Any, what: str, undo: Any = None
    ) -> _T:
        """A blocking Ray call, once connected, under `call_timeout_s`."""
        await self._connect()
        timeout_s = self.settings.call_timeout_s
        try:
            return await self._calls.run(function, *args, timeout_s=timeout_s, what=what, undo=undo)
        except (RayError, ConnectionError) as error:
            raise ExecutorError(f"Ray failed {what}: {type(error).__name__}: {error}") from error

    async def _nodes(self) -> list[dict[str, Any]]:
        return await self._ray(ray.nodes, what="listing nodes")

    async def _create(self, name: str, options: Mapping[str, Any]) -> Any:
        def create() -> Any:
            return _ReplicaActorClass.options(
                name=name,
                namespace=self.settings.namespace,
                lifetime="detached",
                max_restarts=0,
                max_concurrency=_MAX_CONCURRENCY,
                **options,
            ).remote()

        # A named actor is registered synchronously. If we stop waiting,
        # an actor created after all is killed.
        try:
            return await self._ray(create, what=f"creating actor {name}", undo=_kill_actor)
        except ValueError as error:
            raise ExecutorError(
                f"Ray refused to create actor {name}: {error}", retryable=False
            ) from error

    async def _start(
        self,
        actor: Any,
        spec: LaunchSpec,
        need: Mapping[str, float],
        runtime_env: Mapping[str, Any],
    ) -> dict[str, str]:
        # Two phases under one deadline, so that a timeout says which one
        # stalled: Ray placing the actor and setting up its runtime_env,
        # then the user's constructor.
        deadline = asyncio.get_running_loop().time() + self.settings.start_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                await actor.__ray_ready__.remote()
        except TimeoutError:
            free = await self._ray(ray.available_resources, what="reading free resources")
            message = errors.not_placed(spec.replica_id, self.settings, need, free, runtime_env)
            raise ExecutorError(message) from None
        except RayError as error:
            raise errors.from_ray(spec.replica_id, error) from error
        try:
            async with asyncio.timeout_at(deadline):
                host, config = await self._placed_config(actor, spec)
                described = await actor.start.remote(config.SerializeToString(), host)
        except TimeoutError:
            raise ExecutorError(
                f"replica {spec.replica_id} did not start within "
                f"{self.settings.start_timeout_s:g}s: its constructor was still running"
            ) from None
        except RayError as error:
            raise errors.from_ray(spec.replica_id, error) from error
        if "error" in described:
            raise ReplicaStartError(described["error"])
        return described

    async def _placed_config(
        self, actor: Any, spec: LaunchSpec
    ) -> tuple[str, replica_pb2.ReplicaConfig]:
        """Where the placed actor's worker listens, and its config. A Ray of
        our own runs on this machine only: its replicas stay on loopback.
        On a cluster they listen on their node's IP, so they serve TLS with
        a certificate for it."""
        if self.settings.is_local:
            return "127.0.0.1", spec.config
        node = await actor.node_address.remote()
        return "", spec.config_with_tls([node])

    async def _describe(self, name: str) -> ReplicaRef | None:
        actor = await self._find(name)
        if actor is None:
            return None
        try:
            async with asyncio.timeout(self.settings.call_timeout_s):
                described = await actor.describe.remote()
        except (TimeoutError, RayError) as error:
            # Dead, still starting, or stuck: not a replica that serves.
            log.info("leaving out actor %s: %s", name, type(error).__name__)
            return None
        return _ref(described) if described else None

    async def _find(self, name: str) -> Any:
        """The live actor called `name`, or None."""
        return await self._ray(_lookup, name, what=f"looking up actor {name}")

    async def _discard(self, actor: Any, name: str) -> None:
        """Kills what a failed launch left, keeping the launch's own error."""
        try:
            await self._kill(actor, name)
        except ExecutorError as error:
            log.warning("could not kill actor %s after a failed launch: %s", name, error)

    async def _kill(self, actor: Any, name: str) -> None:
        """Kills the actor and waits until Ray reports it dead, so that its
        name and resources are free again when this returns."""
        await self._ray(_kill_actor, actor, what=f"killing actor {name}")
        try:
            async with asyncio.timeout(_KILL_WAIT_S):
                # Fails (ActorDiedError, or the error the actor died of)
                # once the kill has taken effect.
                await actor.__ray_ready__.remote()
        except RayError:
            return
        except TimeoutError:
            pass
        log.warning("Ray did not report actor %s dead %.0fs after killing it", name, _KILL_WAIT_S)


def _upload_working_dir(runtime_env: dict[str, Any], scratch: pathlib.Path) -> dict[str, Any]:
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    scratch.mkdir(parents=True, exist_ok=True)
    return upload_working_dir_if_needed(
        dict(runtime_env), include_gitignore=False, scratch_dir=str(scratch), logger=log
    )


def _lookup(name: str) -> Any:
    try:
        return ray.get_actor(name)
    except ValueError:
        return None


def _kill_actor(actor: Any) -> None:
    ray.kill(actor, no_restart=True)


def _ref(described: Mapping[str, str]) -> ReplicaRef:
    replica_id = described["replica_id"]
    return ReplicaRef(
        replica_id=replica_id,
        executor=RayExecutor.name,
        address=described["address"],
        node=described["node"],
        nonce=described["nonce"],
        data={
            "actor_name": actor_name(replica_id),
            "actor_id": described["actor_id"],
            "pid": described["pid"],
        },
        tls=described.get("tls") == "1",
    )

"""DescribeDeployment: the methods a deployment answers and whether each
streams. Only a replica that has loaded the code can tell (the code may be
a pickle the control plane never opens), so one running replica is asked,
over the reconciler's own channels: the cluster secret, and TLS where the
replica serves it. A mixin of ControlPlaneService."""

from __future__ import annotations

import grpc

from capstan.errors import NotFound, Unavailable, answers_errors
from capstan.v1 import controlplane_pb2 as cp
from controlplane.reconciler.loop import Reconciler
from controlplane.records import ReplicaRecord, ReplicaState
from controlplane.store import Store
from executors.base import ReplicaRef

# Each replica asked gets this long: Describe reads the loaded object, so a
# replica slower than this is stuck, and the next one is asked instead.
DESCRIBE_TIMEOUT_S = 5.0


class Describing:
    """DescribeDeployment, for ControlPlaneService."""

    _store: Store
    _reconciler: Reconciler

    @answers_errors
    async def DescribeDeployment(
        self, request: cp.DescribeDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> cp.DescribeDeploymentResponse:
        """Asks a running replica of the deployment, the current version's
        first, which methods its code answers. NOT_FOUND for an unknown
        deployment; UNAVAILABLE when no replica runs or none answers."""
        record = await self._store.get(request.name)
        if record is None or record.is_deleting:
            raise NotFound(f'deployment "{request.name}" not found')
        refs = describers(record.version, await self._store.replicas(record.name))
        if not refs:
            raise Unavailable(
                f'deployment "{record.name}" has no running replica to describe it; '
                "scale it above 0 or wait for its replicas to start"
            )
        return await self._describe(record.name, refs)

    async def _describe(self, name: str, refs: list[ReplicaRef]) -> cp.DescribeDeploymentResponse:
        client, failures = self._reconciler.replica_client, []
        for ref in refs:
            try:
                reply = await client.describe(ref, DESCRIBE_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                failures.append(f"{ref.replica_id}: {error.code().name} {error.details()}")
                continue
            return cp.DescribeDeploymentResponse(
                id=name, callable_methods=reply.callable_methods, serves_http=reply.serves_http
            )
        raise Unavailable(
            f'deployment "{name}": no running replica answered Describe ({"; ".join(failures)})'
        )


def describers(version: str, replicas: list[ReplicaRecord]) -> list[ReplicaRef]:
    """The running replicas to ask, in order: those on `version` (the one
    in force) first, since during a rollout the old code may answer others."""
    running = [r for r in replicas if r.state == ReplicaState.RUNNING and r.ref is not None]
    running.sort(key=lambda r: r.version != version)
    return [r.ref for r in running if r.ref is not None]

"""The RPCs that change a deployment without a new spec from the user, or
only tell what a change would do: plan, scale, versions, rollback. Mixed
into ControlPlaneService, whose store, reconciler and helpers they use."""

from __future__ import annotations

import dataclasses
import logging

import grpc

from capstan.errors import InvalidSpec, NotFound, answers_errors
from capstan.v1 import controlplane_pb2 as cp
from controlplane.deadlines import deadline
from controlplane.records import DeploymentRecord, VersionRecord

log = logging.getLogger("capstan.controlplane")


class ChangeRpcs:
    """PlanApplication, ScaleDeployment, ListDeploymentVersions and
    RollbackDeployment, for ControlPlaneService."""

    @answers_errors
    async def PlanApplication(
        self, request: cp.PlanApplicationRequest, context: grpc.aio.ServicerContext
    ) -> cp.PlanApplicationResponse:
        """What ApplyApplication would do; nothing is stored or started."""
        app, _ = await self._prepare_application(request.application)
        versions = {spec.id: spec.version or "" for spec in app.deployments}
        return await self._planner.plan_application(app, versions)

    @answers_errors
    async def ScaleDeployment(
        self, request: cp.ScaleDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> cp.ScaleDeploymentResponse:
        """Stores the same version with another num_replicas: the planner adds
        or drains replicas and restarts none."""
        record = await self._stored(request.name)
        if record.spec.autoscaling is not None:
            limits = record.spec.autoscaling
            raise InvalidSpec(
                f'deployment "{record.name}" is autoscaled (between {limits.min_replicas} and '
                f"{limits.max_replicas} replicas); change its autoscaling_config instead of "
                "scaling it by hand",
                "num_replicas",
            )
        spec = dataclasses.replace(
            record.spec, num_replicas=request.num_replicas, prev_version=None
        )
        spec = type(spec).from_proto(spec.to_proto())  # validated as any spec
        applied = await self._store.apply(spec, record.version)
        log.info("%s: scaled to %d replicas", record.name, request.num_replicas)
        return cp.ScaleDeploymentResponse(deployment=await self._applied(applied, request))

    @answers_errors
    async def ListDeploymentVersions(
        self, request: cp.ListDeploymentVersionsRequest, context: grpc.aio.ServicerContext
    ) -> cp.ListDeploymentVersionsResponse:
        """Every stored apply of the deployment, oldest first."""
        record = await self._store.get(request.name)
        history = await self._store.history(request.name)
        if not history:
            raise NotFound(f'deployment "{request.name}" has no stored versions')
        current = record.generation if record and not record.is_deleting else -1
        return cp.ListDeploymentVersionsResponse(
            versions=[_version_proto(v, v.generation == current) for v in history]
        )

    @answers_errors
    async def RollbackDeployment(
        self, request: cp.RollbackDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> cp.RollbackDeploymentResponse:
        """Applies a stored version's spec again, as a new apply."""
        record = await self._stored(request.name)
        target = _rollback_target(await self._store.history(record.name), record, request.version)
        spec = dataclasses.replace(target.spec, prev_version=None)
        applied = await self._store.apply(spec, target.version)
        log.info("%s: rolled back to version %s", record.name, target.version)
        return cp.RollbackDeploymentResponse(
            deployment=await self._applied(applied, request), version=target.version
        )

    async def _stored(self, name: str) -> DeploymentRecord:
        record = await self._store.get(name)
        if record is None or record.is_deleting:
            raise NotFound(f'deployment "{name}" not found')
        return record

    async def _applied(self, record: DeploymentRecord, request) -> cp.Deployment:
        self._reconciler.wake()
        if request.wait:
            async with deadline(request.timeout_s, f'rollout of "{record.name}"'):
                await self._follow_rollout(record)
        return await self._deployment(record.name)


def _rollback_target(
    history: list[VersionRecord], record: DeploymentRecord, version: str
) -> VersionRecord:
    """The latest stored apply of `version`; with none given, the latest
    apply of a version other than the one in force."""
    if version:
        matches = [v for v in history if v.version == version]
        if not matches:
            known = ", ".join(dict.fromkeys(v.version for v in history))
            raise NotFound(
                f'deployment "{record.name}" has no version "{version}"; stored: {known}'
            )
        return matches[-1]
    earlier = [v for v in history if v.version != record.version]
    if not earlier:
        raise NotFound(
            f'deployment "{record.name}" has no version before "{record.version}" to roll back to'
        )
    return earlier[-1]


def _version_proto(version: VersionRecord, is_current: bool) -> cp.DeploymentVersion:
    return cp.DeploymentVersion(
        version=version.version,
        generation=version.generation,
        applied_at=version.applied_at,
        spec=version.spec.to_proto(),
        is_current=is_current,
    )

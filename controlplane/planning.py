"""Answers "what would this apply do" and "could this ever run" before
anything is stored: reads the store and the executors' capacity, then asks
the pure explainer and scheduler. Nothing here writes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from capstan.errors import InvalidSpec
from capstan.v1 import controlplane_pb2 as cp
from controlplane.application import ApplicationSpec
from controlplane.reconciler.explain import Proposal, explain
from controlplane.reconciler.preview import Placer
from controlplane.scheduler import Placement, never_fits, place
from controlplane.spec import DeploymentSpec
from controlplane.store import Store
from executors.base import Executor, Node


class Planner:
    """Plans applies against the store and `executors`' capacity, asking
    each executor for at most `timeout_s`."""

    def __init__(self, store: Store, executors: Mapping[str, Executor], timeout_s: float) -> None:
        self._store = store
        self._executors = executors
        self._timeout_s = timeout_s

    async def check_fits(self, spec: DeploymentSpec) -> None:
        """Raises InvalidSpec when no node of the spec's executor could hold
        one replica even empty, naming the resource, what exists and the
        setting that declares more. Executors that place replicas themselves
        (Ray, which autoscales its cluster) and capacity that cannot be read
        now are not judged: the reconciler will say why replicas wait."""
        nodes = await self._nodes(spec.executor)
        why = None if nodes is None else never_fits(spec.replica, spec.executor, nodes)
        if why is not None:
            raise InvalidSpec(
                f'deployment "{spec.id}" can never be placed: {why}', "replica_options"
            )

    async def plan_application(
        self, app: ApplicationSpec, versions: Mapping[str, str]
    ) -> cp.PlanApplicationResponse:
        """Each deployment's plan if `app` were applied with `versions`
        (by id; "" where the apply would generate one)."""
        stored_app = await self._store.application(app.name)
        gone = sorted(set(stored_app.deployments if stored_app else ()) - set(app.deployment_ids))
        plans = [await self._plan(s.id, Proposal(s, versions[s.id])) for s in app.deployments]
        plans += [await self._plan(name, None) for name in gone]
        is_unchanged = all(not p.changes for p in plans)
        return cp.PlanApplicationResponse(deployments=plans, is_unchanged=is_unchanged)

    async def _plan(self, name: str, proposal: Proposal | None) -> cp.DeploymentPlan:
        stored = await self._store.get(name)
        replicas = await self._store.replicas(name)
        spec = proposal.spec if proposal else None
        executor = spec.executor if spec else (stored.spec.executor if stored else "")
        others = [
            r.placement
            for r in await self._store.replicas()
            if r.deployment != name and r.executor == executor and r.placement is not None
        ]
        result = explain(stored, proposal, replicas, others, await self._placer(spec))
        if spec is not None:
            nodes = await self._nodes(spec.executor)
            why = None if nodes is None else never_fits(spec.replica, spec.executor, nodes)
            if why is not None:
                result.fits, result.never_fits, result.fit_message = False, True, why
        return result

    async def _placer(self, spec: DeploymentSpec | None) -> Placer:
        nodes = None if spec is None else await self._nodes(spec.executor)
        if spec is None or nodes is None:
            return lambda used: Placement(node="")  # placed elsewhere, or unknown now
        return lambda used: place(spec.replica, nodes, used)

    async def _nodes(self, executor: str) -> Sequence[Node] | None:
        """The executor's nodes, or None when Capstan does not place its
        replicas or it cannot say now."""
        plugin = self._executors.get(executor)
        if plugin is None or plugin.capabilities.schedules_itself:
            return None
        try:
            async with asyncio.timeout(self._timeout_s):
                return await plugin.capacity()
        except Exception:  # the reconciler logs and reports unreadable capacity
            return None

"""A deployment's plan in words a person reads before an apply: which kind
of change (create, roll out, reconfigure, scale, delete, settings), which
spec fields differ, and the rollout's passes from `preview`. Pure: the
caller reads the store and the capacity and hands them in."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from capstan.v1 import controlplane_pb2 as cp
from controlplane.reconciler.plan import Desired, Observed
from controlplane.reconciler.preview import Placer, preview
from controlplane.records import DeploymentRecord, ReplicaRecord, ReplicaState
from controlplane.scheduler import Placement
from controlplane.spec import DeploymentSpec

_LIVE = (ReplicaState.PENDING, ReplicaState.STARTING, ReplicaState.RUNNING)
# Fields a running replica takes in place (Reconfigure), without a restart.
_IN_PLACE = ("user_config", "max_concurrent_queries")
# Fields that decide how many replicas run.
_COUNT = ("num_replicas", "autoscaling")
# Shown as "a new version" rather than as bytes.
_CODE = (
    "import_path",
    "sdk_object",
    "init_arguments",
    "sdk_init_arguments",
    "version",
)


@dataclasses.dataclass(frozen=True)
class Proposal:
    """One deployment as an apply would leave it: its spec and the version
    the apply would store ("" when the apply would generate one)."""

    spec: DeploymentSpec
    version: str


def explain(
    stored: DeploymentRecord | None,
    proposal: Proposal | None,
    replicas: Sequence[ReplicaRecord],
    others: Sequence[Placement],
    place: Placer,
) -> cp.DeploymentPlan:
    """The plan for one deployment: `stored` as it is (None: not deployed),
    `proposal` as it would be (None: deleted), `replicas` its replicas now,
    `others` what other deployments hold where it runs."""
    name = (proposal.spec.id if proposal else stored.name) if (proposal or stored) else ""
    live = [r for r in replicas if r.state in _LIVE]
    result = cp.DeploymentPlan(id=name, replicas_before=len(live), fits=True)
    if stored is not None and not stored.is_deleting:
        result.version_before = stored.version
    if proposal is None:
        result.changes.append(cp.PLAN_CHANGE_DELETE)
        result.steps.append(cp.RolloutStep(stopped=len(live), serving=len(live)))
        return result
    want = desired(proposal, len(live))
    result.version_after = proposal.version
    result.replicas_after = want.target
    result.changes.extend(_changes(stored, proposal, want, live))
    if stored is not None and not stored.is_deleting:
        result.changed_fields.extend(changed_fields(stored.spec, proposal.spec))
    placements = {r.id: r.placement for r in live if r.placement is not None}
    shown = preview(want, [_observed(r) for r in live], placements, others, place)
    result.restarts = shown.restarts
    result.is_surge = shown.is_surge
    result.fits = not shown.blocked
    result.fit_message = shown.blocked
    for step in shown.steps:
        result.steps.append(
            cp.RolloutStep(
                started=step.started, stopped=step.stopped,
                reconfigured=step.reconfigured, serving=step.serving,
            )
        )  # fmt: skip
    return result


def desired(proposal: Proposal, live: int) -> Desired:
    """What the reconciler would aim for after the apply. An autoscaled
    deployment keeps its live count within its new bounds (the autoscaler
    moves it from there); a version the apply generates is "(new)"."""
    spec = proposal.spec
    target = spec.target_replicas
    if spec.autoscaling is not None and live:
        target = min(max(live, spec.autoscaling.min_replicas), spec.autoscaling.max_replicas)
    return Desired(
        name=spec.id,
        version=proposal.version or "(new)",
        code_hash=spec.code_hash(),
        target=target,
        user_config=spec.user_config,
        max_concurrent_queries=spec.max_concurrent_queries,
    )


def changed_fields(before: DeploymentSpec, after: DeploymentSpec) -> list[str]:
    """Names of the spec fields that differ (prev_version aside)."""
    return [
        field.name
        for field in dataclasses.fields(DeploymentSpec)
        if field.name != "prev_version"
        and getattr(before, field.name) != getattr(after, field.name)
    ]


def _changes(
    stored: DeploymentRecord | None,
    proposal: Proposal,
    want: Desired,
    live: Sequence[ReplicaRecord],
) -> list[int]:
    if stored is None or stored.is_deleting:
        return [cp.PLAN_CHANGE_CREATE]
    changes = []
    differs = set(changed_fields(stored.spec, proposal.spec))
    is_new_code = any(r.version != want.version or r.code_hash != want.code_hash for r in live)
    if proposal.version != stored.version or stored.code_hash != want.code_hash or is_new_code:
        changes.append(cp.PLAN_CHANGE_ROLL_OUT)
    elif differs & set(_IN_PLACE):
        changes.append(cp.PLAN_CHANGE_RECONFIGURE)
    if want.target != len(live) or differs & set(_COUNT):
        changes.append(cp.PLAN_CHANGE_SCALE)
    settled = set(_IN_PLACE) | set(_COUNT) | set(_CODE) | {"replica", "executor"}
    if differs - settled:
        changes.append(cp.PLAN_CHANGE_UPDATE_SETTINGS)
    return changes


def _observed(record: ReplicaRecord) -> Observed:
    return Observed(
        id=record.id,
        deployment=record.deployment,
        version=record.version,
        code_hash=record.code_hash,
        state=record.state,
        user_config=record.user_config,
        max_concurrent_queries=record.max_concurrent_queries,
        is_unplaceable=record.state == ReplicaState.PENDING,
    )

"""Shows plans (PlanApplication answers) as a person reads a diff, or as
JSON for a program:

    application shop (route /shop)
      ~ shop.Model  roll out v1 -> v2: 2 replicas restart, 4 steps, new before old
                    steps: +1 | -1 +1 | -1
      + shop.Cache  create: 1 replica
      - shop.Old    delete: 2 replicas stop
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from google.protobuf import json_format

from capstan.v1 import controlplane_pb2 as cp

_SIGN = {
    cp.PLAN_CHANGE_CREATE: "+",
    cp.PLAN_CHANGE_DELETE: "-",
}


def is_unchanged(plans: Mapping[str, Sequence[cp.DeploymentPlan]]) -> bool:
    return all(not d.changes for deployments in plans.values() for d in deployments)


def as_json(plans: Mapping[str, Sequence[cp.DeploymentPlan]], deleted: Sequence[str]) -> str:
    """{"is_unchanged", "applications": [{"name", "deleted", "deployments"}]}."""
    apps = [
        {"name": name, "deleted": name in deleted, "deployments": [_dict(d) for d in deployments]}
        for name, deployments in plans.items()
    ]
    return json.dumps({"is_unchanged": is_unchanged(plans), "applications": apps}, indent=2)


def _dict(plan: cp.DeploymentPlan) -> dict:
    return json_format.MessageToDict(
        plan, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def as_text(plans: Mapping[str, Sequence[cp.DeploymentPlan]], deleted: Sequence[str]) -> str:
    lines = []
    for name, deployments in plans.items():
        lines.append(f"application {name}" + (" (deleted)" if name in deleted else ""))
        width = max((len(d.id) for d in deployments), default=0)
        for plan in deployments:
            lines += _deployment(plan, width)
    if is_unchanged(plans):
        lines.append("nothing would change")
    return "\n".join(lines)


def _deployment(plan: cp.DeploymentPlan, width: int) -> list[str]:
    sign = _SIGN.get(plan.changes[0], "~") if plan.changes else "="
    if not plan.fits:
        sign = "!"
    head = f"  {sign} {plan.id.ljust(width)}  "
    pad = " " * len(head)
    lines = [head + (_summary(plan) or "no change")]
    if plan.changed_fields and plan.changes:
        lines.append(pad + "changed: " + ", ".join(plan.changed_fields))
    if len(plan.steps) > 1 or (plan.steps and plan.restarts):
        lines.append(pad + "steps: " + " | ".join(_step(s) for s in plan.steps))
    if not plan.fits:
        never = "can never be placed" if plan.never_fits else "would wait for capacity"
        lines.append(pad + f"{never}: {plan.fit_message}")
    return lines


def _summary(plan: cp.DeploymentPlan) -> str:
    parts = []
    for change in plan.changes:
        if change == cp.PLAN_CHANGE_CREATE:
            parts.append(f"create: {_replicas(plan.replicas_after)}")
        elif change == cp.PLAN_CHANGE_DELETE:
            parts.append(f"delete: {_replicas(plan.replicas_before)} stop")
        elif change == cp.PLAN_CHANGE_ROLL_OUT and plan.never_fits:
            parts.append(f"roll out {plan.version_before} -> {plan.version_after}")
        elif change == cp.PLAN_CHANGE_ROLL_OUT:
            after = plan.version_after or "a new version"
            how = "new before old" if plan.is_surge else "old drained first (no spare capacity)"
            parts.append(
                f"roll out {plan.version_before} -> {after}: {_replicas(plan.restarts)} "
                f"restart, {len(plan.steps)} steps, {how}"
            )
        elif change == cp.PLAN_CHANGE_RECONFIGURE:
            parts.append("reconfigure in place (no restart)")
        elif change == cp.PLAN_CHANGE_SCALE:
            parts.append(f"scale {plan.replicas_before} -> {plan.replicas_after}")
        elif change == cp.PLAN_CHANGE_UPDATE_SETTINGS:
            parts.append("update settings (no restart)")
    return "; ".join(parts)


def _replicas(count: int) -> str:
    return f"{count} replica" + ("" if count == 1 else "s")


def _step(step: cp.RolloutStep) -> str:
    parts = [f"-{step.stopped}" if step.stopped else "", f"+{step.started}" if step.started else ""]
    if step.reconfigured:
        parts.append(f"~{step.reconfigured}")
    return " ".join(p for p in parts if p) or "wait"

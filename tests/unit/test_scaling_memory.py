"""The autoscaler's in-memory bookkeeping (no I/O, times passed in), as tables:
where a deployment starts, when it starts over, and what one sample does."""

from __future__ import annotations

import pytest

from controlplane.reconciler.scaling_memory import ScalingMemory
from controlplane.records import DeploymentRecord
from controlplane.spec import Autoscaling, DeploymentSpec

POLICY = Autoscaling(
    min_replicas=1,
    max_replicas=4,
    target_num_ongoing_requests_per_replica=1,
    upscale_delay_s=0,
    downscale_delay_s=5,
    metrics_interval_s=0.5,
    look_back_period_s=2,
)


def record(generation: int = 1, **policy: object) -> DeploymentRecord:
    autoscaling = Autoscaling(**({**vars(POLICY)} | policy))  # type: ignore[arg-type]
    spec = DeploymentSpec(name="d", import_path="app:D", autoscaling=autoscaling)
    return DeploymentRecord(name="d", spec=spec, version="v1", generation=generation)


@pytest.mark.parametrize(
    ("first_live", "then", "target"),
    [
        (0, record(), 1),  # a new deployment starts at min_replicas
        (0, record(initial_replicas=2), 2),
        (3, record(), 3),  # adopted after a restart: keeps what runs
        (9, record(), 4),  # ... clamped to max_replicas
        (3, record(generation=2), 1),  # a new apply starts over
    ],
)
def test_where_a_deployment_starts(first_live: int, then: DeploymentRecord, target: int) -> None:
    memory = ScalingMemory()
    memory.target(record(**_initial(then)), first_live)
    assert memory.target(then, live=first_live) == target


def _initial(then: DeploymentRecord) -> dict[str, object]:
    initial = then.spec.autoscaling.initial_replicas  # type: ignore[union-attr]
    return {} if initial is None else {"initial_replicas": initial}


@pytest.mark.parametrize(
    ("samples", "target", "changed"),
    [
        ([(0.0, 3.0)], 3, True),
        ([(0.0, 1.0)], 1, False),
        ([(0.0, None)], 1, False),  # no replica answered
        ([(0.0, 0.0), (2.5, 2.0)], 2, True),  # the old sample left the look-back
        ([(0.0, 3.0), (0.5, 0.0), (1.0, 0.0)], 3, False),  # down waits 5 s
        ([(0.0, 3.0), (0.5, 0.0), (5.5, 0.0)], 1, True),  # ... then goes
    ],
)
def test_sample_decides(
    samples: list[tuple[float, float | None]], target: int, changed: bool
) -> None:
    memory = ScalingMemory()
    memory.target(record(), 0)
    results = [memory.sample("d", total, now) for now, total in samples]
    assert memory.target(record(), 0) == target
    assert results[-1] == changed


def test_polls_are_due_every_metrics_interval() -> None:
    memory = ScalingMemory()
    assert memory.due([record()], 0.0) == []  # unknown until a pass asks its target
    memory.target(record(), 0)
    assert memory.due([record()], 0.0) == ["d"]
    assert memory.due([record()], 0.4) == []
    assert memory.due([record()], 0.5) == ["d"]
    assert memory.next_poll_mono_s() == 1.0
    memory.forget_except([])
    assert memory.next_poll_mono_s() is None

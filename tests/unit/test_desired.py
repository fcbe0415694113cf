"""What a stored deployment should look like on a pass, as a table."""

from __future__ import annotations

import dataclasses

import pytest

from controlplane.reconciler.backoff import Backoff
from controlplane.reconciler.desired import desire
from controlplane.records import DeploymentRecord
from controlplane.spec import DeploymentSpec

SPEC = DeploymentSpec(name="d", import_path="app:D", num_replicas=3, user_config='{"a": 1}')
RECORD = DeploymentRecord(name="d", spec=SPEC, version="v1", generation=1)
WAITING = Backoff(failures=1, last_failure_mono_s=9.0, retry_mono_s=11.0, reason="boom")


@pytest.mark.parametrize(
    ("record", "autoscaled", "backoff", "has_failed_start", "target", "may_start"),
    [
        (RECORD, None, None, False, 3, True),
        (RECORD, 5, None, False, 5, True),  # the autoscaler's count wins
        (dataclasses.replace(RECORD, is_deleting=True), 5, None, False, 0, True),
        (dataclasses.replace(RECORD, is_halted=True), None, None, False, 0, True),
        (RECORD, None, WAITING, False, 3, False),  # backing off
        (RECORD, None, dataclasses.replace(WAITING, retry_mono_s=10.0), False, 3, True),
        (RECORD, None, None, True, 3, False),  # its start failed for good
    ],
)
def test_desire(
    record: DeploymentRecord,
    autoscaled: int | None,
    backoff: Backoff | None,
    has_failed_start: bool,
    target: int,
    may_start: bool,
) -> None:
    want = desire(
        record,
        autoscaled=autoscaled,
        backoff=backoff,
        has_failed_start=has_failed_start,
        now_mono_s=10.0,
    )
    assert (want.target, want.may_start) == (target, may_start)
    assert (want.version, want.code_hash, want.user_config) == ("v1", SPEC.code_hash(), '{"a": 1}')

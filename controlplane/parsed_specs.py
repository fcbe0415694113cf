"""Stored spec bytes -> the DeploymentSpec they hold, parsed once.

Every reconcile pass reads every deployment from the store; building each
spec anew would re-validate (and so re-parse) its user_config, up to 1 MiB
of JSON, five times a second. A spec's bytes never change under a digest,
so the parsed value is kept for as long as the store keeps reading it.
"""

from __future__ import annotations

import hashlib

from capstan.v1 import deployment_pb2
from controlplane.spec import DeploymentSpec


class ParsedSpecs:
    """Specs by the digest of their stored bytes. Bounded: `sweep` (once per
    listing of every deployment) forgets what was not read since the last."""

    def __init__(self) -> None:
        self._kept: dict[bytes, DeploymentSpec] = {}
        self._read: dict[bytes, DeploymentSpec] = {}

    def load(self, data: bytes) -> DeploymentSpec:
        key = hashlib.sha256(data).digest()
        spec = self._read.get(key) or self._kept.get(key)
        if spec is None:
            spec = DeploymentSpec.from_proto(deployment_pb2.DeploymentSpec.FromString(data))
        self._read[key] = spec
        return spec

    def sweep(self) -> None:
        """Keeps only what was read since the previous sweep."""
        self._kept, self._read = self._read, {}

    def __len__(self) -> int:
        return len(self._kept.keys() | self._read.keys())

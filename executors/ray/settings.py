"""The Ray executor's config section, validated once, in the constructor."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

# "auto", a GCS address "host:port", or a Ray Client address "ray://host:port".
_ADDRESS = re.compile(r"auto|(ray://)?[^\s/:]+:\d{1,5}|(ray://)?\[[0-9A-Fa-f:.]+\]:\d{1,5}")
_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclasses.dataclass(frozen=True)
class RaySettings:
    """Where the Ray cluster is and how long Ray may take.

    Without `address` the executor starts a Ray of its own inside the control
    plane's process (`ray.init()`); that Ray, and every replica on it, ends
    with the process, so adoption after a restart needs a cluster started
    outside the control plane (`ray start --head`) and its `address`.
    """

    address: str | None = None
    # Replicas are named actors in this namespace; observe() lists it.
    namespace: str = "capstan"
    # CPUs of a Ray the executor starts itself (no address); None: all.
    num_cpus: float | None = None
    # Connecting to (or starting) Ray.
    connect_timeout_s: float = 60.0
    # From launch to a serving replica: placement, runtime_env set-up (a pip
    # install counts), the user's constructor and the gRPC server.
    start_timeout_s: float = 300.0
    # The executor's own calls to a replica actor (describe, ping).
    call_timeout_s: float = 5.0

    @property
    def is_local(self) -> bool:
        """Whether the executor starts (and owns) the Ray it uses."""
        return self.address is None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RaySettings:
        """Raises `ValueError` naming the key that is wrong."""
        known = {field.name for field in dataclasses.fields(cls)}
        if unknown := sorted(set(config) - known):
            raise ValueError(f"unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
        address = _address(config.get("address"))
        namespace = config.get("namespace", "capstan")
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ValueError(f"namespace must match [A-Za-z0-9_.-]{{1,64}}, got {namespace!r}")
        num_cpus = config.get("num_cpus")
        if num_cpus is not None:
            if address is not None:
                raise ValueError(
                    "num_cpus applies only to a Ray the executor starts itself; "
                    "remove it or remove address"
                )
            num_cpus = _positive(config, "num_cpus", 1.0)
        return cls(
            address=address,
            namespace=namespace,
            num_cpus=num_cpus,
            connect_timeout_s=_positive(config, "connect_timeout_s", cls.connect_timeout_s),
            start_timeout_s=_positive(config, "start_timeout_s", cls.start_timeout_s),
            call_timeout_s=_positive(config, "call_timeout_s", cls.call_timeout_s),
        )


def _address(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise ValueError(
            f"address must be 'auto', 'host:port' or 'ray://host:port' "
            f"(or left out to start a local Ray), got {value!r}"
        )
    return value


def _positive(config: Mapping[str, Any], key: str, default: float) -> float:
    value = config.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{key} must be a number > 0, got {value!r}")
    return float(value)

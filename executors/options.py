"""What a replica reserves and the environment it runs in, validated once.

The control plane builds `ReplicaOptions` from a spec at the API edge; the
scheduler places by it and every executor reads it from the `LaunchSpec`,
so a default (one CPU) and a rule (pip or conda, not both) live here only.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping

from capstan.errors import InvalidSpec
from capstan.v1 import deployment_pb2

# Ray Serve's default: a replica reserves one CPU unless it says otherwise.
DEFAULT_NUM_CPUS = 1.0
# runtime_env.working_dir naming a package uploaded to the control plane.
PACKAGE_SCHEME = "capstan-package://"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def package_uri(sha256: str) -> str:
    """The working_dir that names the uploaded package `sha256`."""
    return PACKAGE_SCHEME + sha256


# The most of any one resource a replica may reserve: far beyond any machine,
# and finite, so that placement arithmetic never meets inf or nan.
MAX_AMOUNT = 1024.0


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise InvalidSpec(message, field)


@dataclasses.dataclass(frozen=True)
class ReplicaOptions:
    """A replica's resource request (`num_cpus`, `num_gpus`, custom
    `resources`) and its runtime_env (`env_vars`, `working_dir`, `pip`,
    `conda`). Raises `InvalidSpec` naming the field that is wrong."""

    num_cpus: float = DEFAULT_NUM_CPUS
    num_gpus: float = 0.0
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)
    env_vars: Mapping[str, str] = dataclasses.field(default_factory=dict)
    working_dir: str = ""
    pip: tuple[str, ...] = ()
    conda: str = ""

    def __post_init__(self) -> None:
        # Fields are named by their path in capstan.v1.DeploymentSpec.
        prefix, env = "replica_options", "replica_options.runtime_env"
        _require_amount(self.num_cpus, f"{prefix}.num_cpus")
        _require_amount(self.num_gpus, f"{prefix}.num_gpus")
        _require(
            self.num_gpus <= 1 or self.num_gpus == int(self.num_gpus),
            f"{prefix}.num_gpus",
            f"{prefix}.num_gpus above 1 must be a whole number, got {self.num_gpus}",
        )
        for name, amount in self.resources.items():
            field = f"{prefix}.resources"
            _require(bool(name), field, f"{field} has an empty resource name")
            _require(
                name not in ("CPU", "GPU"),
                field,
                f"{field} may not name {name}; use num_cpus and num_gpus",
            )
            _require_amount(amount, f"{field}[{name!r}]")
        for key in self.env_vars:
            _require(
                bool(key) and "=" not in key and "\0" not in key,
                f"{env}.env_vars",
                f"{env}.env_vars has an invalid variable name {key!r}",
            )
        if self.working_dir.startswith(PACKAGE_SCHEME):
            _require(
                bool(_SHA256.fullmatch(self.package_sha256)),
                f"{env}.working_dir",
                f"{env}.working_dir {self.working_dir!r} must be "
                f"{PACKAGE_SCHEME}<sha256 as 64 lowercase hex digits>",
            )
        _require(all(self.pip), f"{env}.pip", f"{env}.pip has an empty requirement")
        _require(
            not (self.pip and self.conda), f"{env}.conda", f"{env} may set pip or conda, not both"
        )

    @property
    def package_sha256(self) -> str:
        """The uploaded package working_dir names; "" for a folder or none."""
        return self.working_dir.removeprefix(PACKAGE_SCHEME) if self.is_package else ""

    @property
    def is_package(self) -> bool:
        """Whether working_dir names an uploaded package, not a folder."""
        return self.working_dir.startswith(PACKAGE_SCHEME)

    @property
    def omp_num_threads(self) -> str:
        """OMP_NUM_THREADS for the replica: its CPU count, at least 1."""
        return str(max(1, int(self.num_cpus)))

    @classmethod
    def from_proto(cls, msg: deployment_pb2.ReplicaOptions) -> ReplicaOptions:
        env = msg.runtime_env
        return cls(
            num_cpus=msg.num_cpus if msg.HasField("num_cpus") else DEFAULT_NUM_CPUS,
            num_gpus=msg.num_gpus,
            resources=dict(msg.resources),
            env_vars=dict(env.env_vars),
            working_dir=env.working_dir,
            pip=tuple(env.pip),
            conda=env.conda,
        )

    def to_proto(self) -> deployment_pb2.ReplicaOptions:
        return deployment_pb2.ReplicaOptions(
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus,
            resources=dict(self.resources),
            runtime_env=deployment_pb2.RuntimeEnv(
                env_vars=dict(self.env_vars),
                working_dir=self.working_dir,
                pip=list(self.pip),
                conda=self.conda,
            ),
        )


def _require_amount(amount: float, field: str) -> None:
    _require(
        math.isfinite(amount) and 0 <= amount <= MAX_AMOUNT,
        field.partition("[")[0],
        f"{field} must be >= 0 and <= {MAX_AMOUNT:g}, got {amount!r}",
    )

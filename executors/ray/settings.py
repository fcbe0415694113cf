"""The Ray executor's config section, validated once, in the constructor."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, FilePath, Strict, StringConstraints, model_validator

from capstan.sections import PositiveNumber, Section

# "auto", a GCS address "host:port", or a Ray Client address "ray://host:port".
_ADDRESS = re.compile(r"auto|(ray://)?[^\s/:]+:\d{1,5}|(ray://)?\[[0-9A-Fa-f:.]+\]:\d{1,5}")


def _address(value: str) -> str:
    if not _ADDRESS.fullmatch(value):
        raise ValueError(
            "must be 'auto', 'host:port' or 'ray://host:port' "
            f"(or left out to start a local Ray), got {value!r}"
        )
    return value


Address = Annotated[str, AfterValidator(_address)]
Namespace = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class RaySettings(Section):
    """Where the Ray cluster is and how long Ray may take.

    Without `address` the executor starts a Ray of its own inside the control
    plane's process (`ray.init()`); that Ray, and every replica on it, ends
    with the process, so adoption after a restart needs a cluster started
    outside the control plane (`ray start --head`) and its `address`.

    Ray's token auth: a Ray the executor starts gets a token of its own (and
    a temp dir of its own), never ~/.ray's. For a cluster at `address`,
    `auth_token_file` names the cluster's token; without it Ray's own
    RAY_AUTH_* variables and ~/.ray/auth_token apply, as for any driver.
    """

    address: Address | None = None
    # The token of a cluster at `address` that has token auth on.
    auth_token_file: Annotated[FilePath, Strict(False)] | None = None
    # Replicas are named actors in this namespace; observe() lists it.
    namespace: Namespace = "capstan"
    # CPUs of a Ray the executor starts itself (no address); None: all.
    num_cpus: PositiveNumber | None = None
    # Connecting to (or starting) Ray.
    connect_timeout_s: PositiveNumber = 60.0
    # From launch to a serving replica: placement, runtime_env set-up (a pip
    # install counts), the user's constructor and the gRPC server.
    start_timeout_s: PositiveNumber = 300.0
    # The executor's own calls to a replica actor (describe, ping).
    call_timeout_s: PositiveNumber = 5.0

    @property
    def is_local(self) -> bool:
        """Whether the executor starts (and owns) the Ray it uses."""
        if self.auth_token_file is not None and self.address is None:
            raise ValueError(
                "auth_token_file applies only to a cluster at address; a Ray the "
                "executor starts itself gets a token of its own"
            )
        return self.address is None

    @model_validator(mode="after")
    def _only_for_own_ray(self) -> RaySettings:
        if self.num_cpus is not None and self.address is not None:
            raise ValueError(
                "num_cpus applies only to a Ray the executor starts itself; "
                "remove it or remove address"
            )
        if self.auth_token_file is not None and self.address is None:
            raise ValueError(
                "auth_token_file applies only to a cluster at address; a Ray the "
                "executor starts itself gets a token of its own"
            )
        return self

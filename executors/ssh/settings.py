"""The ssh executor's config section: an inventory of hosts and how to reach
them, validated once so that everything past the constructor can trust it.

    hosts:                      # one entry per machine
      - name: gpu-1             # the node name the scheduler places replicas on
        address: 10.0.0.7
        port: 22
        user: capstan           # default: the control plane's user
        key_file: ~/.ssh/id_ed25519   # default: the SSH agent and ~/.ssh/id_*
        python: /opt/capstan/bin/python   # an interpreter with capstan installed
        num_cpus: 32
        gpu_ids: ["0", "1"]
        resources: {ssd: 1}
        workdir: ~/.capstan-ssh # Capstan's files on that host
        bind_host: 10.0.0.7     # the interface replicas listen on; default: address
                                # (they serve TLS: the cluster CA issues each a
                                # certificate naming address and bind_host)
        env: {PYTHONPATH: /srv/app}   # set for every replica on this host
    known_hosts: ~/.ssh/known_hosts
    verify_host_keys: true      # false trusts any host key: only for throwaway hosts
    connect_timeout_s: 10
    start_timeout_s: 60
    build_timeout_s: 900        # building a runtime_env (pip install) on a host
    reconnect_max_backoff_s: 30
"""

from __future__ import annotations

import getpass
import os
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from capstan.sections import (
    EnvVars,
    GpuIds,
    NonEmpty,
    PositiveNumber,
    Resources,
    Section,
)

HostName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
# A path on the control plane's machine; "~" is its user's home.
LocalPath = Annotated[str, AfterValidator(os.path.expanduser)]


class HostSettings(Section):
    """One machine of the inventory."""

    name: HostName
    address: NonEmpty
    num_cpus: PositiveNumber
    port: Annotated[int, Field(gt=0, lt=65536)] = 22
    user: NonEmpty = Field(default_factory=getpass.getuser)
    # Empty: asyncssh's defaults (the agent, then ~/.ssh/id_*).
    key_file: LocalPath = ""
    python: NonEmpty = "python3"
    gpu_ids: GpuIds = Field(default_factory=list)
    resources: Resources = Field(default_factory=dict)
    workdir: NonEmpty = "~/.capstan-ssh"
    # Left out or empty: `address`.
    bind_host: str = ""
    env: EnvVars = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _bind_to_address(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("bind_host"):
            return {**data, "bind_host": data.get("address", "")}
        return data


class SshSettings(Section):
    """The whole config section."""

    hosts: Annotated[list[HostSettings], Field(min_length=1)]
    known_hosts: LocalPath = os.path.expanduser("~/.ssh/known_hosts")
    verify_host_keys: bool = True
    connect_timeout_s: PositiveNumber = 10.0
    start_timeout_s: PositiveNumber = 60.0
    build_timeout_s: PositiveNumber = 900.0
    reconnect_max_backoff_s: PositiveNumber = 30.0

    @model_validator(mode="after")
    def _unique_names(self) -> SshSettings:
        names = [host.name for host in self.hosts]
        if duplicate := next((n for n in names if names.count(n) > 1), None):
            raise ValueError(f"hosts: the name {duplicate!r} is used twice; names must be unique")
        return self

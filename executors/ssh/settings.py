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
        env: {PYTHONPATH: /srv/app}   # set for every replica on this host
    known_hosts: ~/.ssh/known_hosts
    verify_host_keys: true      # false trusts any host key: only for throwaway hosts
    connect_timeout_s: 10
    start_timeout_s: 60
    build_timeout_s: 900        # building a runtime_env (pip install) on a host
    reconnect_max_backoff_s: 30
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclasses.dataclass(frozen=True)
class HostSettings:
    """One machine of the inventory."""

    name: str
    address: str
    num_cpus: float
    port: int = 22
    user: str = ""
    # Empty: asyncssh's defaults (the agent, then ~/.ssh/id_*).
    key_file: str = ""
    python: str = "python3"
    gpu_ids: tuple[str, ...] = ()
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)
    workdir: str = "~/.capstan-ssh"
    bind_host: str = ""
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Any, where: str) -> HostSettings:
        """Raises `ValueError` naming the key (`hosts[0].port`) that is wrong."""
        if not isinstance(config, Mapping):
            raise ValueError(f"{where} must be a mapping, got {config!r}")
        _refuse_unknown(config, cls, where + ".")
        address = _text(config, "address", where, required=True)
        port = config.get("port", 22)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError(f"{where}.port must be an integer in 1..65535, got {port!r}")
        return cls(
            name=_name(config, where),
            address=address,
            num_cpus=_positive(config, "num_cpus", where, None),
            port=port,
            user=_text(config, "user", where) or getpass.getuser(),
            key_file=os.path.expanduser(_text(config, "key_file", where)),
            python=_text(config, "python", where) or "python3",
            gpu_ids=_gpu_ids(config.get("gpu_ids", []), where),
            resources=_resources(config.get("resources", {}), where),
            workdir=_text(config, "workdir", where) or "~/.capstan-ssh",
            bind_host=_text(config, "bind_host", where) or address,
            env=env_vars(config.get("env", {}), f"{where}.env"),
        )


@dataclasses.dataclass(frozen=True)
class SshSettings:
    """The whole config section."""

    hosts: tuple[HostSettings, ...]
    known_hosts: str = "~/.ssh/known_hosts"
    verify_host_keys: bool = True
    connect_timeout_s: float = 10.0
    start_timeout_s: float = 60.0
    build_timeout_s: float = 900.0
    reconnect_max_backoff_s: float = 30.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SshSettings:
        """Raises `ValueError` naming the key that is wrong."""
        _refuse_unknown(config, cls, "")
        hosts = config.get("hosts")
        if not isinstance(hosts, Sequence) or isinstance(hosts, str) or not hosts:
            raise ValueError(f"hosts must be a non-empty list of hosts, got {hosts!r}")
        parsed = tuple(HostSettings.from_config(h, f"hosts[{i}]") for i, h in enumerate(hosts))
        names = [host.name for host in parsed]
        if duplicate := next((n for n in names if names.count(n) > 1), None):
            raise ValueError(f"hosts: the name {duplicate!r} is used twice; names must be unique")
        verify = config.get("verify_host_keys", True)
        if not isinstance(verify, bool):
            raise ValueError(f"verify_host_keys must be true or false, got {verify!r}")
        return cls(
            hosts=parsed,
            known_hosts=os.path.expanduser(
                _text(config, "known_hosts", "") or "~/.ssh/known_hosts"
            ),
            verify_host_keys=verify,
            connect_timeout_s=_positive(config, "connect_timeout_s", "", 10.0),
            start_timeout_s=_positive(config, "start_timeout_s", "", 60.0),
            build_timeout_s=_positive(config, "build_timeout_s", "", 900.0),
            reconnect_max_backoff_s=_positive(config, "reconnect_max_backoff_s", "", 30.0),
        )


def env_vars(value: Any, where: str) -> dict[str, str]:
    """Environment variables as a checked dict: names a shell accepts, string values."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must map names to strings, got {value!r}")
    for name, text in value.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise ValueError(f"{where}: {name!r} is not a valid environment variable name")
        if not isinstance(text, str):
            raise ValueError(f"{where}.{name} must be a string, got {text!r}")
    return dict(value)


def _refuse_unknown(config: Mapping[str, Any], settings: type, prefix: str) -> None:
    known = sorted(field.name for field in dataclasses.fields(settings))
    if unknown := sorted(set(config) - set(known)):
        raise ValueError(f"unknown key {prefix}{unknown[0]}; known keys: {', '.join(known)}")


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _text(config: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str:
    value = config.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"{_key(where, key)} must be a non-empty string, got {value!r}")
    return value


def _name(config: Mapping[str, Any], where: str) -> str:
    name = _text(config, "name", where, required=True)
    if not _NAME.fullmatch(name):
        raise ValueError(f"{where}.name {name!r} must be letters, digits, '.', '_' or '-'")
    return name


def _is_amount(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive(config: Mapping[str, Any], key: str, where: str, default: float | None) -> float:
    value = config.get(key, default)
    if not _is_amount(value) or value <= 0:
        raise ValueError(f"{_key(where, key)} must be a number > 0, got {value!r}")
    return float(value)


def _gpu_ids(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(f"{where}.gpu_ids must be a list of device ids, got {value!r}")
    if not all(isinstance(g, str | int) and not isinstance(g, bool) for g in value):
        raise ValueError(f"{where}.gpu_ids must hold strings or integers, got {value!r}")
    return tuple(str(g) for g in value)


def _resources(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and _is_amount(v) and v >= 0 for k, v in value.items()
    ):
        raise ValueError(f"{where}.resources must map names to amounts >= 0, got {value!r}")
    return {k: float(v) for k, v in value.items()}

"""The control plane's one Settings object: built once in the entry point
from flags and environment, then passed down. Nothing below reads the
environment itself."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

_ENV_PREFIX = "CAPSTAN_"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the control plane is configured with. Durations in seconds."""

    state_dir: pathlib.Path = pathlib.Path(".capstan")
    host: str = "127.0.0.1"
    # 0 asks the OS for a free port (tests); the bound one is printed.
    port: int = 8765
    # Interface replica workers listen on (they pick their own port).
    replica_host: str = "127.0.0.1"
    default_executor: str = "local"
    # Executor name -> its own config section, handed to the plugin as is.
    executors: Mapping[str, Mapping[str, Any]] = dataclasses.field(
        default_factory=lambda: {"local": {}}
    )
    # Between reconcile passes; apply and delete also wake the loop at once.
    reconcile_interval_s: float = 0.2
    # How long one executor.observe() / capacity() call may take in a pass.
    observe_timeout_s: float = 10.0
    # Consecutive failed CheckHealth calls that make a replica unhealthy.
    health_failure_threshold: int = 3
    # Start-failure backoff: base * 2**(n-1), capped; forgotten after reset.
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    backoff_reset_s: float = 300.0
    # Longest Reconfigure call before it counts as failed.
    reconfigure_timeout_s: float = 30.0
    # Server shutdown: how long in-flight RPCs may finish.
    shutdown_grace_s: float = 5.0
    # Bearer token every control API call must carry; required off loopback.
    token: str = dataclasses.field(default="", repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port}")
        if not self.token and not is_loopback(self.host):
            raise ValueError(
                f"the control plane listens on {self.host}, off this machine: "
                "set a bearer token (--token or CAPSTAN_TOKEN)"
            )
        if self.reconcile_interval_s <= 0:
            raise ValueError("reconcile_interval_s must be > 0")
        if self.default_executor not in self.executors:
            raise ValueError(
                f"default executor {self.default_executor!r} is not configured; "
                f"configured: {sorted(self.executors)}"
            )

    @property
    def db_path(self) -> pathlib.Path:
        return self.state_dir / "state.db"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def executor_state_dir(self, name: str) -> pathlib.Path:
        return self.state_dir / "executors" / name


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from command-line flags, falling back to CAPSTAN_* variables.

    `--executors` (or CAPSTAN_EXECUTORS) is a JSON object mapping executor
    names to their config, e.g. '{"local": {}, "ray": {"address": "auto"}}'.
    """
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m controlplane")
    parser.add_argument("--state-dir", default=env.get(f"{_ENV_PREFIX}STATE_DIR", ".capstan"))
    parser.add_argument("--host", default=env.get(f"{_ENV_PREFIX}HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get(f"{_ENV_PREFIX}PORT", "8765")))
    parser.add_argument("--executor", default=env.get(f"{_ENV_PREFIX}EXECUTOR", "local"))
    parser.add_argument("--executors", default=env.get(f"{_ENV_PREFIX}EXECUTORS", ""))
    parser.add_argument(
        "--reconcile-interval-s",
        type=float,
        default=float(env.get(f"{_ENV_PREFIX}RECONCILE_INTERVAL_S", "0.2")),
    )
    parser.add_argument("--token", default=env.get(f"{_ENV_PREFIX}TOKEN", ""))
    args = parser.parse_args(argv)
    executors = _parse_executors(args.executors, args.executor)
    return Settings(
        state_dir=pathlib.Path(args.state_dir),
        host=args.host,
        port=args.port,
        default_executor=args.executor,
        executors=executors,
        reconcile_interval_s=args.reconcile_interval_s,
        token=args.token,
    )


def _parse_executors(text: str, default: str) -> dict[str, dict[str, Any]]:
    if not text:
        return {default: {}}
    try:
        parsed = json.loads(text)
    except ValueError as error:
        raise ValueError(f"--executors is not valid JSON: {error}") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise ValueError('--executors must be a JSON object like {"local": {}}')
    return parsed

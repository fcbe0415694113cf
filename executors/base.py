"""The Executor interface: the one contract between the control plane and
every way of running replicas (local processes, Ray actors, SSH hosts).

Modelled on Nomad's task drivers: a small lifecycle (launch, stop, observe,
close), static capabilities beside a dynamic capacity fingerprint, and a
serialisable, versioned `ReplicaRef` that the control plane stores so that a
restarted control plane can adopt what is still running.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import pathlib
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, ClassVar

import grpc

from capstan.errors import CapstanError
from capstan.internal.v1 import replica_pb2
from executors.options import ReplicaOptions

_REPLICA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ExecutorError(CapstanError):
    """An executor could not do what was asked.

    `retryable` says whether trying the same thing again later can help
    (a host that is down) or not (user code that raises in its constructor).
    """

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ReplicaStartError(ExecutorError):
    """The replica's process started but the user's code failed to load or
    construct; the message carries the user's exception."""

    code = grpc.StatusCode.ABORTED

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class NotSupported(ExecutorError):
    """The executor lacks an optional ability (see `Capabilities`)."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What an executor can do. Fixed for a plugin unless its config decides
    (a Ray the executor starts itself cannot adopt), so an instance may set
    its own in `__init__`."""

    # Places replicas itself (Ray); otherwise Capstan's scheduler picks a node.
    schedules_itself: bool = False
    # Replicas survive a control-plane restart and `observe` finds them.
    adopts_replicas: bool = True
    # runtime_env abilities.
    supports_working_dir: bool = False
    supports_pip: bool = False
    supports_conda: bool = False
    # `read_log` returns a replica's output.
    reads_logs: bool = False

    def require(self, options: ReplicaOptions, executor: str) -> None:
        """Raises `NotSupported` naming the first runtime_env field in
        `options` that this executor cannot provide."""
        wanted = {
            "working_dir": (options.working_dir, self.supports_working_dir),
            "pip": (options.pip, self.supports_pip),
            "conda": (options.conda, self.supports_conda),
        }
        for field, (value, is_supported) in wanted.items():
            if value and not is_supported:
                raise NotSupported(
                    f"executor {executor!r} does not support runtime_env.{field}; "
                    "remove it or choose another executor"
                )


@dataclasses.dataclass(frozen=True)
class Node:
    """A place replicas can run and what it offers, in whole units.

    `gpu_ids` names the devices so that fractional requests can be packed
    onto them and given to replicas through CUDA_VISIBLE_DEVICES.
    """

    name: str
    num_cpus: float
    gpu_ids: tuple[str, ...] = ()
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)
    is_alive: bool = True

    @property
    def num_gpus(self) -> int:
        return len(self.gpu_ids)


@dataclasses.dataclass(frozen=True)
class PackageArchive:
    """An uploaded package (runtime_env.working_dir "capstan-package://<sha256>")
    as the control plane stores it: the archive at `path` on the control
    plane's machine, `format` "zip" or "tar.gz". The content hash names it,
    so an executor may cache what it made of it under `sha256` for good."""

    sha256: str
    path: str
    format: str


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    """Everything an executor needs to start one replica.

    `config` goes to the worker unchanged; executors read nothing from it
    but `replica_id` and `nonce`. `options` is what the replica reserves and
    its runtime_env, validated. `env` is the replica's environment as the
    control plane built it (runtime_env.env_vars, OMP_NUM_THREADS,
    CUDA_VISIBLE_DEVICES): an executor adds only its own plumbing (PYTHONPATH
    for a working_dir). `node` is where Capstan's scheduler placed it (empty
    for executors that schedule themselves). `package` is the archive of the
    uploaded package that `options.working_dir` names, when it names one
    and the control plane has it. `issue_certificate(hosts)` returns a TLS
    certificate and key (PEM) of the cluster CA for a worker serving on
    `hosts`: an executor whose replicas listen off loopback serves them TLS
    through `config_with_tls`. Raises `ValueError` for a replica_id that is
    not a safe file name (executors name files after it).
    """

    config: replica_pb2.ReplicaConfig
    options: ReplicaOptions
    node: str = ""
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    package: PackageArchive | None = None
    issue_certificate: Callable[[Sequence[str]], tuple[bytes, bytes]] | None = None

    def __post_init__(self) -> None:
        if not _REPLICA_ID.fullmatch(self.config.replica_id):
            raise ValueError(f"replica_id {self.config.replica_id!r} is not a safe file name")

    @property
    def replica_id(self) -> str:
        return self.config.replica_id

    def config_with_tls(self, hosts: Sequence[str]) -> replica_pb2.ReplicaConfig:
        """A copy of `config` whose worker serves TLS with a certificate for
        `hosts` (the addresses callers dial). Raises `ExecutorError` when the
        control plane gave no way to issue one."""
        if self.issue_certificate is None:
            raise ExecutorError(
                f"replica {self.replica_id} listens off loopback but the control plane "
                "gave no cluster CA to issue its TLS certificate",
                retryable=False,
            )
        config = replica_pb2.ReplicaConfig()
        config.CopyFrom(self.config)
        config.tls_cert, config.tls_key = self.issue_certificate(hosts)
        return config

    def package_archive(self) -> PackageArchive:
        """The package working_dir names; an `ExecutorError` that retrying
        cannot fix when the control plane no longer has it."""
        if self.package is None:
            raise ExecutorError(
                f"runtime_env.working_dir {self.options.working_dir!r} is not stored on the "
                "control plane (deleted?); upload the folder again and re-apply",
                retryable=False,
            )
        return self.package


@dataclasses.dataclass(frozen=True)
class ReplicaRef:
    """Where a launched replica runs: stored by the control plane, given back
    to the executor that made it. `data` is the executor's own (pid, actor
    name, ...), strings only so that the ref serialises to JSON. `tls`: the
    replica serves TLS with a certificate of the cluster CA."""

    FORMAT: ClassVar[int] = 1

    replica_id: str
    executor: str
    address: str
    node: str = ""
    nonce: str = ""
    data: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tls: bool = False

    def to_json(self) -> str:
        return json.dumps({"format": self.FORMAT, **dataclasses.asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReplicaRef:
        fields = json.loads(text)
        if fields.pop("format", None) != cls.FORMAT:
            raise ValueError(f"unknown ReplicaRef format in {text[:80]!r}")
        return cls(**fields)


class Executor(abc.ABC):
    """Runs replica workers somewhere. One instance per control plane.

    Call order: construct, then any number of `capacity`/`prepare`/`launch`/
    `stop`/`observe` calls (concurrently, from one event loop; `prepare`
    before each `launch`), then `close` once.
    Every method is a coroutine and must not block the loop.
    """

    name: ClassVar[str]
    # Class-wide, or set per instance in `__init__` when the config decides.
    capabilities: Capabilities = Capabilities()

    def __init__(self, config: Mapping[str, Any], state_dir: pathlib.Path) -> None:
        """`config` is this executor's section of the control plane's settings,
        validated here: a `capstan.sections.Section` model raises a
        `SettingsError` naming each wrong key path (`hosts.0.port`), which the
        registry places under `executors.<name>`; any other `ValueError`
        should name the key too. `state_dir` is a folder the executor owns
        for logs and bookkeeping; it survives restarts of the control plane."""
        self.config = config
        self.state_dir = state_dir

    @abc.abstractmethod
    async def capacity(self) -> Sequence[Node]:
        """The nodes this executor can place replicas on and their total
        (not free) capacity. A node that cannot be reached is returned with
        `is_alive=False`. Cheap enough to call every reconcile pass."""

    async def prepare(self, spec: LaunchSpec) -> None:  # noqa: B027 - most need nothing
        """Builds what the replica needs on its node before `launch`: its
        runtime environment (a pip virtualenv, a conda env). Returns at once
        when that already exists; may take minutes when it does not.
        Idempotent, and concurrent calls for the same environment build it
        once. Raises `NotSupported` for an environment this executor cannot
        make (conda on a node without conda), and
        `ExecutorError(retryable=False)` carrying the installer's output when
        the build fails."""

    @abc.abstractmethod
    async def launch(self, spec: LaunchSpec) -> ReplicaRef:
        """Starts one replica worker and returns once its ReplicaService
        answers, with the user's class constructed and reconfigured.

        Raises `ReplicaStartError` when the user's code fails (not retried),
        `ExecutorError(retryable=True)` for infrastructure failures. On any
        error nothing is left running. Not idempotent: each call starts a
        process; the replica_id in `spec` must be new."""

    @abc.abstractmethod
    async def stop(self, ref: ReplicaRef, timeout_s: float) -> None:
        """Stops a replica: asks it to exit, then forces it after `timeout_s`
        seconds. Draining is the caller's job and happens before. Idempotent:
        stopping a replica that is already gone succeeds."""

    @abc.abstractmethod
    async def observe(self) -> Sequence[ReplicaRef]:
        """Every replica of this executor that is running now, including ones
        launched before a control-plane restart (adoption). A replica missing
        from the answer is dead."""

    def read_log(self, ref: ReplicaRef, since_s: float, follow: bool) -> AsyncIterator[str]:
        """A replica's output (stdout and stderr), one line at a time without
        its line ending: the lines written in the last `since_s` seconds (0:
        the whole log), then, with `follow`, each new line until the caller
        stops iterating. Works for a replica that has stopped, as long as its
        log is kept. Executors with `capabilities.reads_logs` override it;
        the rest raise `NotSupported`."""
        raise NotSupported(f"executor {self.name!r} cannot read replica logs")

    async def close(self) -> None:  # noqa: B027 - most executors hold nothing to release
        """Releases connections and background tasks. Replicas keep running:
        shutting them down is done with `stop`."""

"""The control plane's one Settings object: built once in the entry point
from flags and CAPSTAN_* environment variables, then passed down. Nothing
below reads the environment itself."""

from __future__ import annotations

import argparse
import ipaddress
import json
import pathlib
from collections.abc import Sequence
from typing import Annotated, Any

import pydantic
import pydantic_settings
from pydantic import Field, Strict, model_validator

from capstan.sections import NonEmpty, PositiveNumber, Section, SettingsError
from capstan.tls import ServerTls
from controlplane.limits import MAX_REPLICAS

_ENV_PREFIX = "CAPSTAN_"


class Settings(Section):
    """Everything the control plane is configured with. Durations in
    seconds. Raises `SettingsError` (a `ValueError`) naming the key."""

    state_dir: Annotated[pathlib.Path, Strict(False)] = pathlib.Path(".capstan")
    host: NonEmpty = "127.0.0.1"
    # 0 asks the OS for a free port (tests); the bound one is printed.
    port: Annotated[int, Field(ge=0, le=65535)] = 8765
    default_executor: NonEmpty = "local"
    # Executor name -> its own config section, validated by that executor.
    executors: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"local": {}})
    # Between reconcile passes; apply and delete also wake the loop at once.
    reconcile_interval_s: PositiveNumber = 0.2
    # How long one executor.observe() / capacity() call may take in a pass.
    observe_timeout_s: PositiveNumber = 10.0
    # Consecutive failed CheckHealth calls that make a replica unhealthy.
    health_failure_threshold: Annotated[int, Field(ge=1)] = 3
    # Start-failure backoff: base * 2**(n-1), capped; forgotten after reset.
    backoff_base_s: PositiveNumber = 1.0
    backoff_max_s: PositiveNumber = 60.0
    backoff_reset_s: PositiveNumber = 300.0
    # Longest Reconfigure call before it counts as failed.
    reconfigure_timeout_s: PositiveNumber = 30.0
    # Server shutdown: how long in-flight RPCs may finish.
    shutdown_grace_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 5.0
    # The HTTP port for /metrics and the dashboard (on `host`); None: none,
    # 0: a free one.
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    # The proxy's HTTP URL, scraped for the dashboard's traffic charts.
    proxy_url: str = ""
    # The most replicas one deployment may ask for (num_replicas, and
    # autoscaling's max_replicas); an apply above it is refused.
    max_replicas_per_deployment: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] = 1000
    # Replicas starting at once, and stops (or reconfigures) one reconcile
    # pass hands out: a big scale-up proceeds over several short passes, so
    # every RPC keeps answering meanwhile.
    max_starts_per_pass: Annotated[int, Field(ge=1)] = 50
    max_stops_per_pass: Annotated[int, Field(ge=1)] = 50
    # Applied versions kept per deployment (its history), and its events.
    versions_kept: Annotated[int, Field(ge=1)] = 20
    events_kept: Annotated[int, Field(ge=1)] = 1000
    # Bearer token every control API call must carry; required off loopback.
    # From --token-file or CAPSTAN_TOKEN, never a command line.
    token: str = Field(default="", repr=False)
    # Serve the control API over TLS with this certificate chain and key
    # (PEM files); with tls_client_ca, clients must present a certificate.
    tls_cert: Annotated[pathlib.Path, Strict(False)] | None = None
    tls_key: Annotated[pathlib.Path, Strict(False)] | None = None
    tls_client_ca: Annotated[pathlib.Path, Strict(False)] | None = None
    # Uploaded packages (PackageService): the largest archive taken, how
    # long one no deployment names is kept after its last use (so that an
    # upload survives until the apply that names it), how often to look.
    max_package_bytes: Annotated[int, Field(ge=1)] = 100 << 20
    package_grace_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 3600.0
    package_gc_interval_s: PositiveNumber = 300.0

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.token and not is_loopback(self.host):
            raise ValueError(
                f"the control plane listens on {self.host}, off this machine: "
                "set a bearer token (--token-file or CAPSTAN_TOKEN)"
            )
        self.tls  # noqa: B018 - fails early, naming a missing or unreadable file
        if self.default_executor not in self.executors:
            raise ValueError(
                f"default executor {self.default_executor!r} is not configured; "
                f"configured: {sorted(self.executors)}"
            )
        return self

    @property
    def tls(self) -> ServerTls | None:
        """The control API's TLS, when a certificate is given."""
        return ServerTls.from_files(self.tls_cert, self.tls_key, self.tls_client_ca)

    @property
    def db_path(self) -> pathlib.Path:
        return self.state_dir / "state.db"

    @property
    def packages_dir(self) -> pathlib.Path:
        return self.state_dir / "packages"

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


class EnvironmentSettings(pydantic_settings.BaseSettings):
    """The CAPSTAN_* variables that are set; flags win over them, and the
    defaults are Settings' own. CAPSTAN_EXECUTORS is JSON, like `--executors`."""

    model_config = pydantic_settings.SettingsConfigDict(env_prefix=_ENV_PREFIX, frozen=True)

    state_dir: str | None = None
    host: str | None = None
    port: int | None = None
    executor: str | None = None
    executors: dict[str, dict[str, Any]] | None = None
    reconcile_interval_s: float | None = None
    max_replicas_per_deployment: int | None = None
    versions_kept: int | None = None
    token: str | None = Field(default=None, repr=False)
    max_package_bytes: int | None = None
    package_grace_s: float | None = None

    @classmethod
    def read(cls) -> dict[str, Any]:
        """The variables that are set, by field name. Raises `SettingsError`
        naming the variable that is wrong."""
        try:
            return cls().model_dump(exclude_none=True)
        except pydantic_settings.SettingsError as error:
            raise SettingsError([("", str(error))]) from None
        except pydantic.ValidationError as error:
            problems = SettingsError.of(error).problems
            raise SettingsError([(_ENV_PREFIX + p.upper(), m) for p, m in problems]) from None


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Settings from command-line flags, falling back to CAPSTAN_* variables.

    `--executors` (or CAPSTAN_EXECUTORS) is a JSON object mapping executor
    names to their config, e.g. '{"local": {}, "ray": {"address": "auto"}}';
    without it, the default `--executor` is the one configured.
    """
    given = EnvironmentSettings.read()
    given.update((k, v) for k, v in vars(_parser().parse_args(argv)).items() if v is not None)
    if (token_file := given.pop("token_file", None)) is not None:
        given["token"] = read_token_file(token_file)
    if (executor := given.pop("executor", None)) is not None:
        given["default_executor"] = executor
        given.setdefault("executors", {executor: {}})
    return Settings(**given)


def _parser() -> argparse.ArgumentParser:
    # No abbreviations: `--token` must not pass for `--token-file`.
    parser = argparse.ArgumentParser(prog="python -m controlplane", allow_abbrev=False)
    parser.add_argument("--state-dir")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--executor", help="the default executor (default: local)")
    parser.add_argument("--executors", type=_json, help="a JSON object: name -> config")
    parser.add_argument("--reconcile-interval-s", type=float)
    parser.add_argument("--token-file", help="a file holding the bearer token (or CAPSTAN_TOKEN)")
    parser.add_argument("--tls-cert", help="serve the control API over TLS: certificate (PEM)")
    parser.add_argument("--tls-key", help="its private key (PEM)")
    parser.add_argument("--tls-client-ca", help="require client certificates signed by this CA")
    parser.add_argument("--max-package-bytes", type=int, help="largest package upload taken")
    parser.add_argument("--package-grace-s", type=float, help="how long an unused package stays")
    parser.add_argument("--max-replicas-per-deployment", type=int)
    parser.add_argument("--versions-kept", type=int, help="history kept per deployment")
    return parser


def read_token_file(path: str | pathlib.Path) -> str:
    """The bearer token in `path` (surrounding whitespace dropped). Raises
    `SettingsError` when it cannot be read or is empty."""
    try:
        token = pathlib.Path(path).read_text().strip()
    except OSError as error:
        raise SettingsError([("token_file", f"cannot read {path}: {error.strerror}")]) from None
    if not token:
        raise SettingsError([("token_file", f"{path} is empty")])
    return token


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from None

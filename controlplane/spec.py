"""The deployment spec: frozen, validated in its constructor, filled with
defaults. The gRPC edge and the store both build it through `from_proto`, so
everything inside the control plane is valid."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

from google.protobuf import any_pb2, struct_pb2

from capstan import defaults, json_values
from capstan.errors import InvalidSpec
from capstan.internal.v1 import replica_pb2
from capstan.v1 import deployment_pb2
from controlplane import limits
from controlplane.limits import MAX_DURATION_S, parse_json, require_between
from controlplane.logging_config import check_logging_config
from executors.options import ReplicaOptions

# Names become file and log names: no leading "-" (read as an option) or "_".
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_ROUTE_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%-]+")


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise InvalidSpec(message, field)


@dataclasses.dataclass(frozen=True)
class Autoscaling:
    """Ray Serve 1.x autoscaling options and defaults."""

    min_replicas: int = 1
    max_replicas: int = 1
    initial_replicas: int | None = None
    target_num_ongoing_requests_per_replica: float = 1.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    metrics_interval_s: float = 10.0
    look_back_period_s: float = 30.0
    upscaling_factor: float | None = None
    downscaling_factor: float | None = None

    def __post_init__(self) -> None:
        prefix = "autoscaling_config"
        require_between(self.min_replicas, f"{prefix}.min_replicas", 0, limits.MAX_REPLICAS)
        require_between(self.max_replicas, f"{prefix}.max_replicas", 1, limits.MAX_REPLICAS)
        _require(
            self.min_replicas <= self.max_replicas,
            f"{prefix}.min_replicas",
            f"{prefix}.min_replicas ({self.min_replicas}) must not exceed "
            f"max_replicas ({self.max_replicas})",
        )
        if self.initial_replicas is not None:
            _require(
                self.min_replicas <= self.initial_replicas <= self.max_replicas,
                f"{prefix}.initial_replicas",
                f"{prefix}.initial_replicas must lie between min_replicas and max_replicas",
            )
        require_between(
            self.target_num_ongoing_requests_per_replica,
            f"{prefix}.target_num_ongoing_requests_per_replica",
            0, limits.MAX_CONCURRENT_QUERIES, is_low_open=True,
        )  # fmt: skip
        for field in ("upscale_delay_s", "downscale_delay_s", "look_back_period_s"):
            require_between(getattr(self, field), f"{prefix}.{field}", 0, MAX_DURATION_S)
        require_between(
            self.metrics_interval_s, f"{prefix}.metrics_interval_s", 0, MAX_DURATION_S,
            is_low_open=True,
        )  # fmt: skip
        for field in ("upscaling_factor", "downscaling_factor"):
            factor = getattr(self, field)
            if factor is not None:
                require_between(
                    factor, f"{prefix}.{field}", 0, limits.MAX_SCALING_FACTOR, is_low_open=True
                )

    @classmethod
    def from_proto(cls, msg: deployment_pb2.AutoscalingConfig) -> Autoscaling:
        present = {f.name: v for f, v in msg.ListFields()}
        return cls(**present)

    def to_proto(self) -> deployment_pb2.AutoscalingConfig:
        fields = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return deployment_pb2.AutoscalingConfig(**fields)


@dataclasses.dataclass(frozen=True)
class DeploymentSpec:
    """A deployment as the user asked for it, with defaults filled in.

    `version` None means "a new version on every apply"; the store records
    the generated one. `route_prefix` None means "not on HTTP".
    """

    name: str
    import_path: str = ""
    # Code.sdk_object: code only one SDK's replicas load (the control plane
    # never opens it).
    sdk_object: any_pb2.Any | None = None
    code_fingerprint: str = ""
    version: str | None = None
    prev_version: str | None = None
    num_replicas: int = 1
    autoscaling: Autoscaling | None = None
    route_prefix: str | None = None
    init_arguments: deployment_pb2.Arguments = dataclasses.field(
        default_factory=deployment_pb2.Arguments
    )
    # Used instead of init_arguments; only the SDK's replicas open it.
    sdk_init_arguments: any_pb2.Any | None = None
    # JSON text, keys sorted: the same config always reads the same, so the
    # reconciler compares texts to decide on a Reconfigure.
    user_config: str | None = None
    max_concurrent_queries: int = defaults.MAX_CONCURRENT_QUERIES
    max_queued_requests: int = 1000
    health_check_period_s: float = 10.0
    health_check_timeout_s: float = 30.0
    graceful_shutdown_wait_loop_s: float = 2.0
    graceful_shutdown_timeout_s: float = defaults.GRACEFUL_SHUTDOWN_TIMEOUT_S
    replica: ReplicaOptions = dataclasses.field(default_factory=ReplicaOptions)
    executor: str = ""
    application: str = ""
    logging_config: deployment_pb2.LoggingConfig | None = None
    # None: the proxy's own request_timeout_s.
    request_timeout_s: float | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        if self.application:
            check_name(self.application, "application")
        self._check_code()
        check_route_prefix(self.route_prefix)
        for field in ("version", "prev_version"):
            text = getattr(self, field)
            _require(
                text is None or len(text) <= limits.MAX_VERSION_CHARS,
                field,
                f"{field} is longer than {limits.MAX_VERSION_CHARS} characters",
            )
        self._check_numbers()
        if self.request_timeout_s is not None:
            _require(
                0 < self.request_timeout_s <= 86_400,
                "request_timeout_s",
                f"request_timeout_s must be > 0 and at most 86400 (one day), "
                f"got {self.request_timeout_s}",
            )
        if self.user_config is not None:
            parse_json(self.user_config, "user_config", limits.MAX_USER_CONFIG_BYTES)
        if self.logging_config is not None:
            check_logging_config(self.logging_config)
        self._check_init_arguments()

    def _check_numbers(self) -> None:
        require_between(self.num_replicas, "num_replicas", 0, limits.MAX_REPLICAS)
        require_between(
            self.max_concurrent_queries, "max_concurrent_queries", 1,
            limits.MAX_CONCURRENT_QUERIES,
        )  # fmt: skip
        require_between(
            self.max_queued_requests, "max_queued_requests", 0, limits.MAX_QUEUED_REQUESTS
        )
        for field in ("health_check_period_s", "health_check_timeout_s"):
            require_between(getattr(self, field), field, 0, MAX_DURATION_S, is_low_open=True)
        for field in ("graceful_shutdown_wait_loop_s", "graceful_shutdown_timeout_s"):
            require_between(getattr(self, field), field, 0, MAX_DURATION_S)

    def _check_code(self) -> None:
        _require(
            bool(self.import_path) != (self.sdk_object is not None),
            "code",
            "code must give exactly one of import_path or sdk_object",
        )
        _require_sdk_type(self.sdk_object, replica_pb2.PythonObject, "code.sdk_object")
        if self.import_path:
            _require(
                bool(_IMPORT_PATH.fullmatch(self.import_path)),
                "code.import_path",
                f"code.import_path {self.import_path!r} must look like 'package.module:attribute'",
            )

    def _check_init_arguments(self) -> None:
        # sdk_init_arguments are not opened here: only the replica can (a
        # pickle may need the user's packages).
        kind = replica_pb2.EncodedArguments
        _require_sdk_type(self.sdk_init_arguments, kind, "sdk_init_arguments")
        has_json = self.init_arguments.ByteSize() > 0
        _require(
            not (has_json and self.sdk_init_arguments is not None),
            "sdk_init_arguments",
            "init_arguments and sdk_init_arguments cannot both be set",
        )
        if has_json:
            args, kwargs = json_values.arguments_to_python(self.init_arguments, "init_arguments")
            limits.require_depth([args, kwargs], "init_arguments")

    @property
    def id(self) -> str:
        """The name routes, handles and the store use: "<application>.<name>"
        inside an application (names are unique per application only)."""
        return f"{self.application}.{self.name}" if self.application else self.name

    @property
    def target_replicas(self) -> int:
        """Replicas to start with: num_replicas, or the autoscaler's start."""
        if self.autoscaling is None:
            return self.num_replicas
        initial = self.autoscaling.initial_replicas
        return self.autoscaling.min_replicas if initial is None else initial

    def require_replicas_at_most(self, most: int) -> None:
        """Refuses more replicas than the cluster allows one deployment
        (Settings.max_replicas_per_deployment), checked at the edge."""
        field, asked = "num_replicas", self.num_replicas
        if self.autoscaling is not None:
            field, asked = "autoscaling_config.max_replicas", self.autoscaling.max_replicas
        _require(
            asked <= most,
            field,
            f"{field} is {asked}; this control plane allows at most {most} replicas per "
            "deployment (its max_replicas_per_deployment setting)",
        )

    def code_hash(self) -> str:
        """A digest of what needs new replica processes to change: the code
        when no version is given, and always the constructor arguments,
        the replica options and the executor."""
        parts = self.replica.to_proto().SerializeToString(deterministic=True)
        parts += self.init_arguments.SerializeToString(deterministic=True)
        for sdk_part in (self.sdk_init_arguments, self.sdk_object):
            if sdk_part is not None:
                parts += sdk_part.SerializeToString(deterministic=True)
        parts += self.executor.encode() + b"\0" + self.import_path.encode()
        return hashlib.sha256(parts).hexdigest()[:16]

    @classmethod
    def from_proto(cls, msg: deployment_pb2.DeploymentSpec) -> DeploymentSpec:
        limits.require_size(msg.ByteSize(), "spec", limits.MAX_SPEC_BYTES)
        has = msg.HasField
        _require(
            not (has("num_replicas") and has("autoscaling_config")),
            "autoscaling_config",
            "num_replicas and autoscaling_config cannot both be set: "
            "autoscaling decides the number of replicas",
        )
        optional = {
            name: getattr(msg, name)
            for name in (
                "version",
                "prev_version",
                "num_replicas",
                "max_concurrent_queries",
                "max_queued_requests",
                "health_check_period_s",
                "health_check_timeout_s",
                "graceful_shutdown_wait_loop_s",
                "graceful_shutdown_timeout_s",
                "request_timeout_s",
            )
            if has(name)
        }
        if has("user_config"):
            optional["user_config"] = _user_config_text(msg.user_config)
        if has("logging_config"):
            optional["logging_config"] = msg.logging_config
        if msg.code.WhichOneof("source") == "sdk_object":
            optional["sdk_object"] = msg.code.sdk_object
        if has("sdk_init_arguments"):
            optional["sdk_init_arguments"] = msg.sdk_init_arguments
        if has("route_prefix"):
            optional["route_prefix"] = msg.route_prefix or None
        else:
            optional["route_prefix"] = f"/{msg.name}"
        return cls(
            name=msg.name,
            import_path=msg.code.import_path,
            code_fingerprint=msg.code.fingerprint,
            autoscaling=(
                Autoscaling.from_proto(msg.autoscaling_config)
                if has("autoscaling_config")
                else None
            ),
            init_arguments=msg.init_arguments,
            replica=ReplicaOptions.from_proto(msg.replica_options),
            executor=msg.executor,
            application=msg.application,
            **optional,
        )

    def to_proto(self) -> deployment_pb2.DeploymentSpec:
        msg = deployment_pb2.DeploymentSpec(
            name=self.name,
            route_prefix=self.route_prefix or "",
            max_concurrent_queries=self.max_concurrent_queries,
            max_queued_requests=self.max_queued_requests,
            health_check_period_s=self.health_check_period_s,
            health_check_timeout_s=self.health_check_timeout_s,
            graceful_shutdown_wait_loop_s=self.graceful_shutdown_wait_loop_s,
            graceful_shutdown_timeout_s=self.graceful_shutdown_timeout_s,
            replica_options=self.replica.to_proto(),
            executor=self.executor,
            application=self.application,
        )
        if self.sdk_object is not None:
            msg.code.sdk_object.CopyFrom(self.sdk_object)
        else:
            msg.code.import_path = self.import_path
        msg.code.fingerprint = self.code_fingerprint
        for name in ("version", "prev_version", "request_timeout_s"):
            if getattr(self, name) is not None:
                setattr(msg, name, getattr(self, name))
        if self.init_arguments.ByteSize():  # unset, not empty, when there are none
            msg.init_arguments.CopyFrom(self.init_arguments)
        for name in ("sdk_init_arguments", "logging_config"):
            if getattr(self, name) is not None:
                getattr(msg, name).CopyFrom(getattr(self, name))
        if self.user_config is not None:
            msg.user_config.CopyFrom(
                json_values.to_value(json.loads(self.user_config), "user_config")
            )
        if self.autoscaling is None:
            msg.num_replicas = self.num_replicas
        else:
            msg.autoscaling_config.CopyFrom(self.autoscaling.to_proto())
        return msg


def _require_sdk_type(packed: any_pb2.Any | None, kind: type, field: str) -> None:
    """Every executor starts the Python replica worker, so an SDK object of
    another type (another language's SDK) could never load: refused now
    rather than as a failed rollout."""
    expected = f"type.googleapis.com/{kind.DESCRIPTOR.full_name}"
    _require(
        packed is None or packed.type_url == expected,
        field,
        f"{field} holds a {packed.type_url if packed else ''!r}; "
        f"Capstan's replicas load {expected}",
    )


def check_name(name: str, field: str, path: str = "") -> None:
    """Names become file names, log names and route keys: keep them plain.
    `path` is the field's proto path when `field` (the label) is not."""
    _require(
        bool(_NAME.fullmatch(name)),
        path or field,
        f"{field} {name!r} must be 1-64 letters, digits, '_' or '-', "
        "starting with a letter or digit",
    )


def check_route_prefix(prefix: str | None) -> None:
    """None (not on HTTP), "/", or "/a/b" with no empty or odd segment."""
    if prefix is None:
        return
    _require(prefix.startswith("/"), "route_prefix", f'route_prefix "{prefix}" must start with "/"')
    if prefix != "/":
        _require(
            not prefix.endswith("/"),
            "route_prefix",
            f'route_prefix "{prefix}" must not end with "/" (use "{prefix.rstrip("/")}")',
        )
        segments = prefix[1:].split("/")
        _require(
            all(_ROUTE_SEGMENT.fullmatch(s) for s in segments),
            "route_prefix",
            f'route_prefix "{prefix}" has an empty or invalid path segment',
        )


def _user_config_text(value: struct_pb2.Value) -> str:
    """user_config as sorted-key JSON text, refused past its size and depth."""
    limits.require_depth(json_values.to_python(value, "user_config"), "user_config")
    text = json_values.to_json_text(value, "user_config")
    limits.require_size(len(text.encode()), "user_config", limits.MAX_USER_CONFIG_BYTES)
    return text

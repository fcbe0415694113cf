"""Bounded input, as properties (issue 8): whatever a caller sends as a spec
(huge, negative, inf or nan numbers, JSON nested thousands deep, odd names,
big strings) or as the raw bytes of an ApplyDeployment request, the control
plane answers with a status that names the problem, never INTERNAL; it stays
up, and a deployment that was serving before serves on unchanged.

Each run generates 6,000 specs checked by the constructor alone, 4,000 more
sent through a real control plane's gRPC edge (32 in flight at once), and
1,000 random byte strings sent as request bodies."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import threading
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import any_pb2, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scripted_executor import World

from capstan.errors import InvalidSpec
from capstan.internal.v1 import replica_pb2
from capstan.json_values import to_value
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import controlplane_pb2_grpc, deployment_pb2
from controlplane.server import ControlPlane
from controlplane.settings import Settings
from controlplane.spec import DeploymentSpec

pytestmark = pytest.mark.timeout(240)

_APPLY = "/capstan.v1.ControlPlaneService/ApplyDeployment"
# Statuses that mean "the server failed", not "your request is wrong".
_FAILED = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE)
_FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_INT32 = st.one_of(st.integers(-3, 3), st.integers(-(2**31), 2**31 - 1))
_DOUBLE = st.one_of(
    st.floats(-2, 100),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 86_400.0, 86_400.5, 1e9, 1e308, 1024.0, 1025.0]),
)
# Names from a small pool, so valid ones replace each other instead of piling up.
_NAMES = st.one_of(
    st.sampled_from([f"fuzz{i}" for i in range(8)]),
    st.sampled_from(["", "_x", "-x", "x" * 65, "a b", "a/b", "..", "é", "keep."]),
    st.text(max_size=70),
)


# Past the 4 MiB a whole spec may take.
_TOO_BIG = b"x" * ((4 << 20) + 1)


def _deep(depth: int) -> struct_pb2.Value:
    """Lists in lists, built by hand. Deeper than ~45 cannot be sent: protobuf
    refuses to decode a message nested over 100 deep (a Value level is two)."""
    outer = struct_pb2.Value()
    inner = outer
    for _ in range(depth):
        inner = inner.list_value.values.add()
    inner.null_value = struct_pb2.NULL_VALUE
    return outer


def _number(number: float) -> struct_pb2.Value:
    return struct_pb2.Value(number_value=number)  # inf and nan included, as any client may


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
).map(lambda value: to_value(value, "value"))
_VALUES = st.one_of(_JSON, _JSON, st.integers(1, 45).map(_deep), _DOUBLE.map(_number))
# user_config also comes at and just past its limit (1 MiB), now and then.
_USER_CONFIG = st.one_of(
    _VALUES,
    _VALUES,
    st.sampled_from([(1 << 20) - 2, (1 << 20) + 1]).map(
        lambda n: struct_pb2.Value(string_value="x" * n)
    ),
)
_LOGGING = st.builds(
    deployment_pb2.LoggingConfig,
    encoding=st.sampled_from(["", "TEXT", "JSON", "XML"]),
    log_level=st.one_of(st.sampled_from(["", "DEBUG", "LOUD"]), st.text(max_size=8)),
    logs_dir=st.text(max_size=10),
    additional_log_standard_attrs=st.lists(st.sampled_from(["name", "lineno", "nope"])),
)
# Code and init arguments as an SDK sends them, or as another SDK might.
_SDK_OBJECTS = st.sampled_from(
    [
        replica_pb2.PythonObject(cloudpickle=b"\x80junk"),
        replica_pb2.PythonObject(cloudpickle=_TOO_BIG),
        replica_pb2.EncodedArguments(encoding=replica_pb2.ENCODING_PICKLE, args=b"\x80junk"),
        struct_pb2.Struct(),
    ]
)


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


@st.composite
def specs(draw: st.DrawFn) -> deployment_pb2.DeploymentSpec:
    """A spec, valid or not, with any field set to anything its type holds."""
    msg = deployment_pb2.DeploymentSpec(name=draw(_NAMES))
    optional = {
        "version": st.one_of(st.text(max_size=10), st.just("v" * 257)),
        "num_replicas": _INT32,
        "route_prefix": st.one_of(
            st.sampled_from(["", "/", "/a", "/a/", "//"]), st.text(max_size=20)
        ),
        "max_concurrent_queries": _INT32,
        "max_queued_requests": _INT32,
        "health_check_period_s": _DOUBLE,
        "health_check_timeout_s": _DOUBLE,
        "graceful_shutdown_wait_loop_s": _DOUBLE,
        "graceful_shutdown_timeout_s": _DOUBLE,
        "executor": st.sampled_from(["", "scripted", "nope"]),
    }
    for field, values in optional.items():
        if draw(st.booleans()):
            setattr(msg, field, draw(values))
    messages = {
        "user_config": _USER_CONFIG,
        "logging_config": _LOGGING,
        "sdk_init_arguments": _SDK_OBJECTS.map(_packed),
    }
    for field, values in messages.items():
        if draw(st.booleans()):
            getattr(msg, field).CopyFrom(draw(values))
    if draw(st.booleans()):
        msg.code.import_path = draw(st.sampled_from(["tests.apps.hello:Hello", "no.such:X", "x"]))
    elif draw(st.booleans()):
        msg.code.sdk_object.CopyFrom(_packed(draw(_SDK_OBJECTS)))
    if draw(st.booleans()):
        auto = msg.autoscaling_config
        for field in ("min_replicas", "max_replicas", "initial_replicas"):
            if draw(st.booleans()):
                setattr(auto, field, draw(_INT32))
        for field in ("upscale_delay_s", "metrics_interval_s", "upscaling_factor"):
            if draw(st.booleans()):
                setattr(auto, field, draw(_DOUBLE))
    options = msg.replica_options
    if draw(st.booleans()):
        options.num_cpus = draw(_DOUBLE)
    options.num_gpus = draw(_DOUBLE)
    for name, amount in draw(st.dictionaries(st.text(max_size=8), _DOUBLE, max_size=3)).items():
        options.resources[name] = amount
    if draw(st.booleans()):
        msg.init_arguments.args.values.append(draw(_VALUES))
    if draw(st.booleans()):
        msg.init_arguments.kwargs.fields["k"].CopyFrom(draw(_VALUES))
    return msg


@settings(_FUZZ, max_examples=6000)
@given(specs())
def test_the_constructor_accepts_or_names_the_field(msg: deployment_pb2.DeploymentSpec) -> None:
    try:
        spec = DeploymentSpec.from_proto(msg)
    except InvalidSpec as error:
        assert error.message  # anything else (OverflowError, RecursionError) fails the test
        return
    with contextlib.suppress(InvalidSpec):
        spec.require_replicas_at_most(3)
    assert DeploymentSpec.from_proto(spec.to_proto()) == spec


class Plane:
    """A control plane on its own thread and event loop, so that plain,
    concurrent gRPC calls (futures) can hammer it from the test."""

    def __init__(self, state_dir: pathlib.Path) -> None:
        self.world = World()
        self.settings = Settings(
            state_dir=state_dir,
            port=0,
            default_executor="scripted",
            executors={"scripted": {"world": self.world}},
            reconcile_interval_s=0.05,
            # Valid fuzzed specs start a few replicas at most.
            max_replicas_per_deployment=2,
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.plane: ControlPlane = self._run(ControlPlane.start(self.settings))

    def _run(self, work):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=60)

    def close(self) -> None:
        self._run(self.plane.stop())
        self._run(self.world.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    running = Plane(tmp_path_factory.mktemp("fuzz") / "state")
    yield running
    running.close()


@pytest.fixture(scope="module")
def channel(plane: Plane) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(plane.plane.address) as opened:
        yield opened


@pytest.fixture(scope="module")
def kept(channel: grpc.Channel, plane: Plane) -> cp.Deployment:
    """A deployment that serves before the fuzzing and must after it."""
    stub = controlplane_pb2_grpc.ControlPlaneServiceStub(channel)
    msg = deployment_pb2.DeploymentSpec(name="keep", num_replicas=1, version="v1")
    msg.code.import_path = "tests.apps.hello:Hello"
    request = cp.ApplyDeploymentRequest(spec=msg, wait=True, timeout_s=30)
    return stub.ApplyDeployment(request, timeout=40).deployment


def _answers(futures: list[grpc.Future]) -> list[grpc.StatusCode]:
    codes = []
    for future in futures:
        error = future.exception()
        codes.append(grpc.StatusCode.OK if error is None else error.code())
    return codes


class InFlight:
    """Specs sent through the edge and not yet answered: at most `window`
    at once, so the control plane sees concurrent applies. What came back
    as a server failure is kept, with the spec, for the last test to show."""

    def __init__(self, window: int = 32) -> None:
        self.window = window
        self.calls: list[tuple[deployment_pb2.DeploymentSpec, grpc.Future]] = []
        self.failures: list[tuple[grpc.StatusCode, str]] = []
        self.sent = 0

    def send(self, stub: controlplane_pb2_grpc.ControlPlaneServiceStub, msg: object) -> None:
        request = cp.ApplyDeploymentRequest(spec=msg)
        self.calls.append((msg, stub.ApplyDeployment.future(request, timeout=30)))
        self.sent += 1
        while len(self.calls) > self.window:
            self._settle(*self.calls.pop(0))

    def settle_all(self) -> None:
        while self.calls:
            self._settle(*self.calls.pop(0))

    def _settle(self, msg: deployment_pb2.DeploymentSpec, future: grpc.Future) -> None:
        error = future.exception()
        if error is not None and error.code() in _FAILED:
            self.failures.append((error.code(), f"{error.details()} for {str(msg)[:500]}"))


IN_FLIGHT = InFlight()


@settings(_FUZZ, max_examples=4000)
@given(specs())
def test_no_spec_through_the_edge_fails_the_server(
    channel: grpc.Channel, kept: cp.Deployment, msg: deployment_pb2.DeploymentSpec
) -> None:
    if msg.name != "keep":
        IN_FLIGHT.send(controlplane_pb2_grpc.ControlPlaneServiceStub(channel), msg)


@settings(_FUZZ, max_examples=20)
@given(st.lists(st.binary(max_size=4096), min_size=50, max_size=50))
def test_no_byte_string_fails_the_server(
    channel: grpc.Channel, kept: cp.Deployment, bodies: list[bytes]
) -> None:
    apply = channel.unary_unary(_APPLY)  # no serializer: the bytes go as they are
    codes = _answers([apply.future(body, timeout=30) for body in bodies])
    assert not [c for c in codes if c in _FAILED], codes


@pytest.mark.parametrize(
    ("fields", "code", "named"),
    [
        ({"num_replicas": 10**9}, grpc.StatusCode.INVALID_ARGUMENT, "num_replicas"),
        ({"num_replicas": 3}, grpc.StatusCode.INVALID_ARGUMENT, "max_replicas_per_deployment"),
        ({"sdk_object": b"x" * (5 << 20)}, grpc.StatusCode.INVALID_ARGUMENT, "spec is"),
        ({"sdk_object": b"x" * (17 << 20)}, grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ],
    ids=["1e9 replicas", "over the cluster maximum", "spec over 4 MiB", "request over 16 MiB"],
)
def test_what_took_the_control_plane_down_is_refused_and_not_stored(
    channel: grpc.Channel, fields: dict, code: grpc.StatusCode, named: str
) -> None:
    stub = controlplane_pb2_grpc.ControlPlaneServiceStub(channel)
    msg = deployment_pb2.DeploymentSpec(name="refused")
    if "sdk_object" in fields:
        msg.code.sdk_object.Pack(replica_pb2.PythonObject(cloudpickle=fields["sdk_object"]))
    else:
        msg.code.import_path = "tests.apps.hello:Hello"
        msg.num_replicas = fields["num_replicas"]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ApplyDeployment(cp.ApplyDeploymentRequest(spec=msg), timeout=30)
    assert caught.value.code() == code and named in caught.value.details()
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetDeployment(cp.GetDeploymentRequest(name="refused"), timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_after_the_fuzzing_the_server_and_the_kept_deployment_are_unchanged(
    channel: grpc.Channel, plane: Plane, kept: cp.Deployment
) -> None:
    IN_FLIGHT.settle_all()
    assert IN_FLIGHT.sent >= 3000 and not IN_FLIGHT.failures, IN_FLIGHT.failures[:5]
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    stub = controlplane_pb2_grpc.ControlPlaneServiceStub(channel)
    now = stub.GetDeployment(cp.GetDeploymentRequest(name="keep"), timeout=5).deployment
    assert (now.version, now.spec) == (kept.version, kept.spec)
    assert now.state == cp.DEPLOYMENT_STATE_HEALTHY
    assert [r.id for r in now.replicas] == [r.id for r in kept.replicas]
    [replica] = now.replicas
    assert replica.state == cp.REPLICA_STATE_RUNNING and replica.id in plane.world.replicas
    listed = stub.ListDeployments(cp.ListDeploymentsRequest(), timeout=5)
    assert "keep" in {d.id for d in listed.deployments}
    assert not plane.world.replicas[replica.id].is_draining

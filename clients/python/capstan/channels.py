"""The gRPC options of every channel and server Capstan opens.

Keepalive pings find a peer that vanished without closing its connection (a
host gone, a network partition). A server counts a ping that comes sooner than
its minimum after the previous one, with no data sent in between, as a strike,
and past two strikes it drops the connection with GOAWAY "too_many_pings". An
idle Exchange stream or route watch sends no data, so the servers' minimum must
not exceed the clients' interval: both come from one `Keepalive`.

Part of the core every package may import: it imports nothing of Capstan.
"""

from __future__ import annotations

import dataclasses

# The largest message either side sends or accepts: results and request bodies
# travel in one message each.
MAX_MESSAGE_BYTES = 64 << 20

Options = tuple[tuple[str, int], ...]


@dataclasses.dataclass(frozen=True)
class Keepalive:
    """Clients ping every `interval_ms` while a call is open and give the peer
    `timeout_ms` to answer; servers accept pings `server_min_interval_ms` apart.
    The servers' minimum sits below the interval so that a ping arriving a
    little early (timers are not exact) is never a strike."""

    interval_ms: int = 30_000
    timeout_ms: int = 10_000
    server_min_interval_ms: int = 10_000

    def __post_init__(self) -> None:
        if self.interval_ms <= 0 or self.timeout_ms <= 0:
            raise ValueError(
                f"keepalive interval_ms and timeout_ms must be > 0, "
                f"got {self.interval_ms} and {self.timeout_ms}"
            )
        if not 0 < self.server_min_interval_ms <= self.interval_ms:
            raise ValueError(
                f"keepalive server_min_interval_ms ({self.server_min_interval_ms}) must be "
                f"> 0 and at most interval_ms ({self.interval_ms}), or servers drop idle streams"
            )


KEEPALIVE = Keepalive()


def channel_options(keepalive: Keepalive = KEEPALIVE) -> Options:
    """Options for every client channel (grpc.insecure_channel or grpc.aio)."""
    return (
        *_both_sides(keepalive),
        # Without this a client stops pinging after two pings with no data
        # sent, so an idle stream would go unwatched.
        ("grpc.http2.max_pings_without_data", 0),
        # A peer that is starting (a control plane beside its proxy) or was
        # restarted (a replica) is reachable again within a second, not after
        # gRPC's default backoff of up to two minutes.
        ("grpc.initial_reconnect_backoff_ms", 50),
        ("grpc.min_reconnect_backoff_ms", 50),
        ("grpc.max_reconnect_backoff_ms", 1_000),
    )


def server_options(keepalive: Keepalive = KEEPALIVE) -> Options:
    """Options for every grpc.aio server."""
    return (
        *_both_sides(keepalive),
        # gRPC's name for the minimum interval between pings a server
        # accepts (GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS);
        # its default, five minutes, drops idle streams pinged every 30 s.
        ("grpc.http2.min_ping_interval_without_data_ms", keepalive.server_min_interval_ms),
        # Otherwise a connection with no call open may be pinged only every
        # two hours, and a client that pings it anyway is dropped.
        ("grpc.keepalive_permit_without_calls", 1),
        # Fail loudly when the port is taken instead of sharing it silently.
        ("grpc.so_reuseport", 0),
    )


def _both_sides(keepalive: Keepalive) -> Options:
    # Servers ping too, so that a caller that vanished frees its streams.
    return (
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", keepalive.interval_ms),
        ("grpc.keepalive_timeout_ms", keepalive.timeout_ms),
    )

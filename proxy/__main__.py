"""`python -m proxy --control-plane HOST:PORT`: run the Capstan proxy.

`--request-timeout-s` defaults to $CAPSTAN_REQUEST_TIMEOUT_S, which is how
`capstan start --request-timeout-s` hands it down."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

import uvloop

from capstan import defaults
from proxy.http import DEFAULT_MAX_BODY_BYTES
from proxy.server import DRAIN_TIMEOUT_S, ProxyServer, Settings


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Settings from the command line."""
    parser = argparse.ArgumentParser(prog="python -m proxy", description=__doc__)
    parser.add_argument("--control-plane", required=True, help="HOST:PORT of the control plane")
    parser.add_argument("--http-host", default="127.0.0.1")
    parser.add_argument(
        "--http-port", type=int, default=defaults.HTTP_PORT, help="0 picks a free port"
    )
    parser.add_argument("--grpc-host", default="127.0.0.1")
    parser.add_argument(
        "--grpc-port", type=int, default=defaults.GRPC_PORT, help="0 picks a free port"
    )
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--drain-timeout-s", type=float, default=DRAIN_TIMEOUT_S)
    parser.add_argument(
        "--access-log", default="", help="file for one JSON line per request (default: none)"
    )
    parser.add_argument("--tls-cert", default="", help="serve HTTPS and TLS: certificate (PEM)")
    parser.add_argument("--tls-key", default="", help="its private key (PEM)")
    parser.add_argument("--tls-client-ca", default="", help="require client certificates")
    parser.add_argument(
        "--request-timeout-s",
        type=float,
        default=os.environ.get("CAPSTAN_REQUEST_TIMEOUT_S") or None,
        help="504 / DEADLINE_EXCEEDED past this, unless a deployment sets its own "
        "(default: $CAPSTAN_REQUEST_TIMEOUT_S, else no limit)",
    )
    options = parser.parse_args(argv)
    return Settings(
        control_plane=options.control_plane,
        http_host=options.http_host,
        http_port=options.http_port,
        grpc_host=options.grpc_host,
        grpc_port=options.grpc_port,
        max_body_bytes=options.max_body_bytes,
        drain_timeout_s=options.drain_timeout_s,
        access_log=options.access_log,
        tls_cert=options.tls_cert,
        tls_key=options.tls_key,
        tls_client_ca=options.tls_client_ca,
        request_timeout_s=options.request_timeout_s,
    )


async def serve(settings: Settings) -> None:
    """Runs the proxy until SIGTERM or SIGINT, then drains and returns."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with ProxyServer(settings) as proxy:
        http = f"{settings.http_host}:{proxy.http_port}"
        grpc = f"{settings.grpc_host}:{proxy.grpc_port}"
        print(f"capstan proxy listening http={http} grpc={grpc}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    try:
        settings = parse_settings(argv)
        settings.tls  # noqa: B018 - a missing or unreadable file stops start-up here
    except ValueError as error:
        raise SystemExit(f"capstan proxy: {error}") from None
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()

"""`capstan`: start a local Capstan, run apps on it, see and change what runs.

capstan start                 control plane + HTTP/gRPC proxy, in the foreground
capstan run app.py            start (or connect), run the script's deploys, serve
capstan status [NAME]         deployments, versions, replicas by state, and why
capstan describe NAME         the methods a deployment answers, and which stream
capstan deploy app.yaml       apply a Ray Serve config file (--dry-run: only the plan)
capstan build mod:app -o F    write a config file for applications in code
capstan config [APP]          what is applied now, as a config file
capstan history NAME          a deployment's stored versions
capstan rollback NAME         back to a stored version (--to VERSION)
capstan scale NAME N          set the replica count in place, no restart
capstan status --watch        the same, redrawn as events arrive
capstan logs NAME [-f]        the output of a deployment's replicas
capstan delete NAME           remove a deployment
capstan shutdown              stop every replica, the proxy and the control plane
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import signal
import sys
import threading

from capstan import defaults
from capstan.client import ControlPlaneClient, default_address
from capstan.commands import declarative, describe, logs, status, versions
from capstan.errors import CapstanError
from capstan.options import DEFAULT
from capstan.targets import load_target, parse_arguments


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        args.command(args)
    except CapstanError as error:
        print(f"capstan: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `capstan status | head`: the reader has all it wants
        # Python flushes stdout again at exit; point it at /dev/null so that
        # flush cannot fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capstan", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--address", default=default_address(),
        help="the control plane's host:port (default: $CAPSTAN_ADDRESS, else %(default)s)",
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"capstan {_version()}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    start = commands.add_parser("start", help="run the control plane and proxy")
    start.add_argument(
        "--state-dir", default=".capstan",
        help="the store, the replicas' logs and environments (default %(default)s)",
    )  # fmt: skip
    start.add_argument(
        "--port", type=int,
        help="the control plane's gRPC port (default: the one in --address, "
        f"{defaults.CONTROL_PLANE_PORT})",
    )  # fmt: skip
    start.add_argument(
        "--http-host", default="127.0.0.1", help="where the HTTP proxy listens (%(default)s)"
    )
    start.add_argument(
        "--http-port", type=int, default=defaults.HTTP_PORT,
        help="the HTTP proxy's port, serving routes and /-/metrics (%(default)s)",
    )  # fmt: skip
    start.add_argument(
        "--grpc-port", type=int, default=defaults.GRPC_PORT,
        help="the gRPC DataPlane's port, for calls to deployments (%(default)s)",
    )  # fmt: skip
    start.add_argument(
        "--metrics-port", type=int, default=defaults.METRICS_PORT,
        help="the control plane's HTTP port: /metrics and the dashboard at / (%(default)s)",
    )  # fmt: skip
    start.add_argument(
        "--access-log", action=argparse.BooleanOptionalAction, default=True,
        help="write one JSON line per request to <state-dir>/logs/access.log (default: on)",
    )  # fmt: skip
    start.add_argument("--config", help="YAML or JSON file: default_executor, executors")
    start.add_argument(
        "--token-file", help="a file holding the bearer token the control API requires "
        "(default: $CAPSTAN_TOKEN); needed to listen off this machine",
    )  # fmt: skip
    # Refused: a token on the command line is in `ps` for every user to read.
    start.add_argument("--token", help=argparse.SUPPRESS)
    start.add_argument("--tls-cert", help="serve the control API, DataPlane and HTTP over TLS")
    start.add_argument("--tls-key", help="the private key of --tls-cert (PEM)")
    start.add_argument("--tls-client-ca", help="require client certificates signed by this CA")
    start.add_argument(
        "--request-timeout-s",
        type=float,
        help="the proxy answers 504 past this, unless a deployment sets its own "
        "request_timeout_s (default: $CAPSTAN_REQUEST_TIMEOUT_S, else no limit)",
    )
    start.set_defaults(command=_start)

    run = commands.add_parser("run", help="deploy from a script or module:attribute and serve")
    run.add_argument("target", help="path/to/app.py, or package.module:app_or_builder")
    run.add_argument("arguments", nargs="*", help="key=value arguments for an app builder")
    run.add_argument("--name", default="default", help="the application's name")
    run.add_argument("--route-prefix", help='where the application answers HTTP (default "/")')
    run.add_argument(
        "--state-dir", default=".capstan",
        help="where a Capstan started here keeps its state and logs (default %(default)s)",
    )  # fmt: skip
    run.add_argument("--http-port", type=int, default=defaults.HTTP_PORT, help="if it starts one")
    run.add_argument("--grpc-port", type=int, default=defaults.GRPC_PORT, help="if it starts one")
    run.set_defaults(command=_run)

    status.register(commands)
    describe.register(commands)
    logs.register(commands)

    declarative.register(commands)
    versions.register(commands)

    delete = commands.add_parser("delete", help="remove a deployment")
    delete.add_argument("name", help="the deployment to remove")
    delete.set_defaults(command=_delete)

    shutdown = commands.add_parser("shutdown", help="stop everything, deleting deployments")
    shutdown.add_argument(
        "--keep-deployments",
        action="store_true",
        help="keep the deployments stored, for the next capstan start",
    )
    shutdown.set_defaults(command=_shutdown)
    return parser


def _start(args: argparse.Namespace) -> None:
    from capstan.launcher import LocalServices, read_config
    from capstan.tls import TlsFiles
    from controlplane.settings import read_token_file

    if args.token is not None:
        sys.exit(
            "capstan start: --token is refused, since every user of this machine can read "
            "it in `ps`; put the token in a file only you can read and pass --token-file FILE, "
            "or set CAPSTAN_TOKEN"
        )
    try:
        if args.token_file:  # the proxy and local replicas read it from their environment
            os.environ["CAPSTAN_TOKEN"] = read_token_file(args.token_file)
        tls = TlsFiles.of(args.tls_cert, args.tls_key, args.tls_client_ca)
    except ValueError as error:
        sys.exit(f"capstan start: {error}")
    if args.request_timeout_s is not None:  # the proxy reads it from its environment
        os.environ["CAPSTAN_REQUEST_TIMEOUT_S"] = str(args.request_timeout_s)
    import yaml

    try:
        config = read_config(args.config) if args.config else None
    except (OSError, ValueError, yaml.YAMLError) as error:
        print(f"capstan start: --config {args.config}: {_one_line(error)}", file=sys.stderr)
        sys.exit(2)
    address = args.address
    if args.port is not None:
        address = f"{address.rpartition(':')[0] or '127.0.0.1'}:{args.port}"
    services = LocalServices(
        config=config,
        state_dir=args.state_dir,
        address=address,
        http_host=args.http_host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        access_log=args.access_log,
        tls=tls,
    )
    try:
        services.run()
    except ValueError as error:  # settings that cannot work, e.g. no token off-machine
        print(f"capstan start: {error}", file=sys.stderr)
        sys.exit(2)


def _run(args: argparse.Namespace) -> None:
    from capstan import serve

    serve.start(
        address=args.address,
        state_dir=args.state_dir,
        http_options={"port": args.http_port},
        grpc_options={"port": args.grpc_port},
    )
    app = load_target(args.target, parse_arguments(args.arguments))
    if app is not None:
        prefix = args.route_prefix if args.route_prefix is not None else DEFAULT
        serve.run(app, name=args.name, route_prefix=prefix)
    client = serve.connect()
    http_url = _http_url(client)
    for deployment in client.list():
        route = deployment.spec.route_prefix
        where = f"{http_url}{route}" if route else "(no HTTP route)"
        print(f"{deployment.spec.name} ready at {where}", flush=True)
    print("Serving; press Ctrl-C to stop.", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        # Ends with Ctrl-C, SIGTERM, or the control plane going away (capstan shutdown).
        while not stop.wait(1.0) and client.is_reachable(timeout_s=2.0):
            pass


def _delete(args: argparse.Namespace) -> None:
    ControlPlaneClient(args.address).delete(args.name)
    print(f"deleted {args.name}")


def _http_url(client: ControlPlaneClient) -> str:
    """The proxy's real URL as the control plane knows it; the default one
    for an older control plane or a proxy run apart."""
    try:
        return client.server_info().proxy_url or defaults.HTTP_URL
    except CapstanError:
        return defaults.HTTP_URL


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _version() -> str:
    try:
        return importlib.metadata.version("capstan")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def _shutdown(args: argparse.Namespace) -> None:
    client = ControlPlaneClient(args.address)
    if not client.is_reachable(timeout_s=2.0):
        print(f"nothing is running at {client.address}")
        return
    client.shutdown(keep_deployments=args.keep_deployments)
    print("capstan is shut down")

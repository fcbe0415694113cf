"""`capstan`: start a local Capstan, run apps on it, see and change what runs.

capstan start                 control plane + HTTP/gRPC proxy, in the foreground
capstan run app.py            start (or connect), run the script's deploys, serve
capstan status [NAME]         deployments, versions, replicas by state, and why
capstan delete NAME           remove a deployment
capstan shutdown              stop every replica, the proxy and the control plane
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import sys
import threading

from capstan import defaults
from capstan.client import ControlPlaneClient, default_address
from capstan.errors import CapstanError
from capstan.options import DEFAULT
from capstan.targets import load_target, parse_arguments
from capstan.v1 import controlplane_pb2 as cp


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        args.command(args)
    except CapstanError as error:
        print(f"capstan: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capstan", description=__doc__.split("\n")[0])
    parser.add_argument("--address", default=default_address(), help="control plane host:port")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    start = commands.add_parser("start", help="run the control plane and proxy")
    start.add_argument("--state-dir", default=".capstan")
    start.add_argument("--http-host", default="127.0.0.1")
    start.add_argument("--http-port", type=int, default=defaults.HTTP_PORT)
    start.add_argument("--grpc-port", type=int, default=defaults.GRPC_PORT)
    start.add_argument("--config", help="YAML or JSON: default_executor, executors")
    start.add_argument(
        "--token", help="bearer token the control API requires (default: $CAPSTAN_TOKEN)"
    )
    start.set_defaults(command=_start)

    run = commands.add_parser("run", help="deploy from a script or module:attribute and serve")
    run.add_argument("target", help="path/to/app.py, or package.module:app_or_builder")
    run.add_argument("arguments", nargs="*", help="key=value arguments for an app builder")
    run.add_argument("--name", default="default", help="the application's name")
    run.add_argument("--route-prefix", help='where the application answers HTTP (default "/")')
    run.add_argument("--state-dir", default=".capstan")
    run.add_argument("--http-port", type=int, default=defaults.HTTP_PORT, help="if it starts one")
    run.add_argument("--grpc-port", type=int, default=defaults.GRPC_PORT, help="if it starts one")
    run.set_defaults(command=_run)

    status = commands.add_parser("status", help="show deployments and their replicas")
    status.add_argument("name", nargs="?")
    status.set_defaults(command=_status)

    delete = commands.add_parser("delete", help="remove a deployment")
    delete.add_argument("name")
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

    if args.token:  # the proxy and local replicas read it from their environment
        os.environ["CAPSTAN_TOKEN"] = args.token

    services = LocalServices(
        config=read_config(args.config) if args.config else None,
        state_dir=args.state_dir,
        address=args.address,
        http_host=args.http_host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
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
    base_url = os.environ.get("CAPSTAN_HTTP_URL", f"http://127.0.0.1:{args.http_port}")
    for deployment in serve.connect().list():
        route = deployment.spec.route_prefix
        where = f"{base_url}{route}" if route else "(no HTTP route)"
        print(f"{deployment.spec.name} ready at {where}", flush=True)
    print("Serving; press Ctrl-C to stop.", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client = serve.connect()
    with contextlib.suppress(KeyboardInterrupt):
        # Ends with Ctrl-C, SIGTERM, or the control plane going away (capstan shutdown).
        while not stop.wait(1.0) and client.is_reachable(timeout_s=2.0):
            pass


def _status(args: argparse.Namespace) -> None:
    client = ControlPlaneClient(args.address)
    deployments = [client.get(args.name)] if args.name else client.list()
    if not args.name:
        print(_describe_proxy(client.proxy_status()))
    if not deployments:
        print("no deployments")
    for deployment in deployments:
        print(_describe(deployment))


def _describe(deployment: cp.Deployment) -> str:
    state = cp.DeploymentState.Name(deployment.state).removeprefix("DEPLOYMENT_STATE_")
    counts = collections.Counter(
        cp.ReplicaState.Name(r.state).removeprefix("REPLICA_STATE_") for r in deployment.replicas
    )
    replicas = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no replicas"
    route = deployment.spec.route_prefix or "(no HTTP route)"
    lines = [f"{deployment.spec.name}  version {deployment.version}  {state}  {replicas}  {route}"]
    if deployment.message:
        lines.append(f"  why: {deployment.message}")
    for replica in deployment.replicas:
        replica_state = cp.ReplicaState.Name(replica.state).removeprefix("REPLICA_STATE_")
        line = f"  {replica.id}  {replica_state}  v{replica.version}  {replica.address or '-'}"
        line += f"  {replica.executor}/{replica.node}" if replica.node else f"  {replica.executor}"
        if replica.message:
            line += f"  ({replica.message})"
        lines.append(line)
    return "\n".join(lines)


def _describe_proxy(proxy: cp.ProxyStatus) -> str:
    state = cp.ProxyState.Name(proxy.state).removeprefix("PROXY_STATE_").lower()
    line = f"proxy  {state.replace('_', ' ')}"
    if proxy.pid:
        line += f"  pid {proxy.pid}"
    if proxy.state != cp.PROXY_STATE_UNSUPERVISED:
        line += f"  restarts {proxy.restarts}"
    return line + (f"\n  why: {proxy.message}" if proxy.message else "")


def _delete(args: argparse.Namespace) -> None:
    ControlPlaneClient(args.address).delete(args.name)
    print(f"deleted {args.name}")


def _shutdown(args: argparse.Namespace) -> None:
    client = ControlPlaneClient(args.address)
    if not client.is_reachable(timeout_s=2.0):
        print(f"nothing is running at {client.address}")
        return
    client.shutdown(keep_deployments=args.keep_deployments)
    print("capstan is shut down")

"""`capstan status`: what runs, as text, JSON or YAML, once or redrawn as
events arrive (`--watch`)."""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time

import yaml

from capstan.client import ControlPlaneClient
from capstan.json_values import readable_deployment
from capstan.progress import describe_event
from capstan.v1 import controlplane_pb2 as cp

# The watch redraws at least this often, and at most once per event batch.
_REDRAW_PERIOD_S = 1.0
_CLEAR = "\x1b[H\x1b[2J"


def register(commands: argparse._SubParsersAction) -> None:
    status = commands.add_parser("status", help="show deployments and their replicas")
    status.add_argument("name", nargs="?", help="one deployment (default: all)")
    status.add_argument(
        "-o", "--output", choices=("text", "json", "yaml"), default="text",
        help="text for people (default), json or yaml for programs",
    )  # fmt: skip
    status.add_argument(
        "-w", "--watch", action="store_true",
        help="redraw as things change, with the latest events; Ctrl-C stops",
    )  # fmt: skip
    status.set_defaults(command=run)


def run(args: argparse.Namespace) -> None:
    client = ControlPlaneClient(args.address)
    if args.watch:
        watch(client, args.name)
        return
    if args.output == "text" and not args.name:
        print(where(client))
        print(describe_proxy(client.proxy_status()))
    print(render(_deployments(client, args.name), args.output))


def where(client: ControlPlaneClient) -> str:
    """One line: the control plane, the proxy and the dashboard."""
    info = client.server_info()
    line = f"capstan {info.version} at {client.address}"
    if info.proxy_url:
        line += f"  ·  HTTP {info.proxy_url}"
    if info.metrics_url:
        line += f"  ·  dashboard {info.metrics_url}/"
    return line + "\n"


def describe_proxy(proxy: cp.ProxyStatus) -> str:
    """The supervised proxy's state, pid and restarts, and why it waits."""
    state = cp.ProxyState.Name(proxy.state).removeprefix("PROXY_STATE_").lower()
    line = f"proxy  {state.replace('_', ' ')}"
    if proxy.pid:
        line += f"  pid {proxy.pid}"
    if proxy.state != cp.PROXY_STATE_UNSUPERVISED:
        line += f"  restarts {proxy.restarts}"
    return line + (f"\n  why: {proxy.message}" if proxy.message else "")


def render(deployments: list[cp.Deployment], output: str) -> str:
    """The deployments as text, or as a JSON or YAML document."""
    if output == "text":
        return "\n".join(describe(d) for d in deployments) or "no deployments"
    document = {"deployments": [readable_deployment(d) for d in deployments]}
    if output == "json":
        return json.dumps(document, indent=2)
    return yaml.safe_dump(document, sort_keys=False).rstrip()


def watch(client: ControlPlaneClient, name: str | None) -> None:
    """Redraws the status with the latest events until Ctrl-C."""
    latest: collections.deque[cp.Event] = collections.deque(maxlen=8)
    changed = threading.Event()

    def follow() -> None:
        for event in client.watch_events(deployment=name or "", backlog=latest.maxlen or 0):
            latest.append(event)
            changed.set()

    threading.Thread(target=follow, name="capstan-events", daemon=True).start()
    while True:
        screen = where(client) + "\n" + render(_deployments(client, name), "text")
        events = "\n".join(describe_event(e) for e in latest) or "(none yet)"
        stamp = time.strftime("%H:%M:%S")
        sys.stdout.write(f"{_CLEAR}{screen}\n\nlatest events ({stamp}):\n{events}\n")
        sys.stdout.flush()
        changed.wait(_REDRAW_PERIOD_S)
        changed.clear()


def describe(deployment: cp.Deployment) -> str:
    """A deployment in a few lines: state, replicas by state, route, why."""
    state = cp.DeploymentState.Name(deployment.state).removeprefix("DEPLOYMENT_STATE_")
    counts = collections.Counter(_replica_state(r) for r in deployment.replicas)
    replicas = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no replicas"
    route = deployment.spec.route_prefix or "(no HTTP route)"
    name = deployment.id or deployment.spec.name
    lines = [f"{name}  version {deployment.version}  {state}  {replicas}  {route}"]
    if deployment.message:
        lines.append(f"  why: {deployment.message}")
    for replica in deployment.replicas:
        line = f"  {replica.id}  {_replica_state(replica)}  v{replica.version}"
        line += f"  {replica.address or '-'}"
        line += f"  {replica.executor}/{replica.node}" if replica.node else f"  {replica.executor}"
        if replica.message:
            line += f"  ({replica.message})"
        lines.append(line)
    return "\n".join(lines)


def _deployments(client: ControlPlaneClient, name: str | None) -> list[cp.Deployment]:
    return [client.get(name)] if name else client.list()


def _replica_state(replica: cp.Replica) -> str:
    return cp.ReplicaState.Name(replica.state).removeprefix("REPLICA_STATE_")

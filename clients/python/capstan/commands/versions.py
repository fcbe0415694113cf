"""`capstan history NAME`, `capstan rollback NAME [--to VERSION]` and
`capstan scale NAME N`: a deployment's stored versions, going back to one,
and its replica count changed in place."""

from __future__ import annotations

import argparse
import datetime

from capstan.client import ControlPlaneClient


def register(commands: argparse._SubParsersAction) -> None:
    history = commands.add_parser("history", help="list a deployment's stored versions")
    history.add_argument("name", help='a deployment ("app.Name" for one of an application)')
    history.set_defaults(command=_history)

    rollback = commands.add_parser("rollback", help="roll a deployment back to a stored version")
    rollback.add_argument("name")
    rollback.add_argument("--to", default="", help="the version (default: the one before)")
    rollback.add_argument("--no-wait", action="store_true", help="return before it finishes")
    rollback.set_defaults(command=_rollback)

    scale = commands.add_parser("scale", help="set a deployment's replica count, no restart")
    scale.add_argument("name")
    scale.add_argument("num_replicas", type=int)
    scale.add_argument("--no-wait", action="store_true", help="return before it finishes")
    scale.set_defaults(command=_scale)


def _history(args: argparse.Namespace) -> None:
    for version in ControlPlaneClient(args.address).versions(args.name):
        when = datetime.datetime.fromtimestamp(version.applied_at).isoformat(" ", "seconds")
        spec = version.spec
        count = (
            f"autoscaled {spec.autoscaling_config.min_replicas}-"
            f"{spec.autoscaling_config.max_replicas}"
            if spec.HasField("autoscaling_config")
            else f"{spec.num_replicas} replicas"
        )
        mark = "  (current)" if version.is_current else ""
        print(f"#{version.generation}  {when}  version {version.version}  {count}{mark}")


def _rollback(args: argparse.Namespace) -> None:
    reply = ControlPlaneClient(args.address).rollback(args.name, args.to, wait=not args.no_wait)
    print(f"{args.name}: rolled back to version {reply.version}")


def _scale(args: argparse.Namespace) -> None:
    ControlPlaneClient(args.address).scale(args.name, args.num_replicas, wait=not args.no_wait)
    print(f"{args.name}: scaled to {args.num_replicas} replicas")

"""`capstan logs NAME`: the output of a deployment's replicas, read by their
executors (a file here, over SSH, through Ray) and streamed by the control
plane, so it works from any machine that reaches the control plane."""

from __future__ import annotations

import argparse
import re

from capstan.client import ControlPlaneClient

_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(commands: argparse._SubParsersAction) -> None:
    logs = commands.add_parser("logs", help="show a deployment's replicas' output")
    logs.add_argument("name", help="the deployment (application.deployment for an application's)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--replica", default="", help="one replica's id (see capstan status)")
    logs.add_argument(
        "--since", type=duration_s, default=0.0,
        help="only lines from the last 30s, 10m, 2h or 1d (lines dated by logging)",
    )  # fmt: skip
    logs.set_defaults(command=run)


def run(args: argparse.Namespace) -> None:
    client = ControlPlaneClient(args.address)
    lines = client.stream_logs(
        args.name, replica=args.replica, since_s=args.since, follow=args.follow
    )
    is_many = not args.replica
    for reply in lines:
        print(f"[{reply.replica}] {reply.line}" if is_many else reply.line, flush=args.follow)


def duration_s(text: str) -> float:
    """Seconds in "90", "30s", "10m", "2h" or "1d"."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30s, 10m, 2h or 1d")
    return float(match.group(1)) * _UNITS_S[match.group(2) or "s"]

"""`capstan deploy FILE [--dry-run] [-o json]`, `capstan build TARGET... -o
FILE` and `capstan config [APP]`: Ray Serve's config files on Capstan.

A deploy is declarative: the file's applications are applied (each only
after its plan is shown) and applications it no longer names are deleted;
deployments applied on their own (Ray Serve 1.x) are left alone."""

from __future__ import annotations

import argparse
import sys

from capstan import app_config, config_dump, config_file, plan_view
from capstan.build import build
from capstan.client import ControlPlaneClient
from capstan.config_schema import ignored
from capstan.errors import InvalidSpec
from capstan.targets import load_target
from capstan.v1 import controlplane_pb2 as cp

# `--dry-run` exit status when the apply would change something (as `diff`).
EXIT_WOULD_CHANGE = 2


def register(commands: argparse._SubParsersAction) -> None:
    deploy = commands.add_parser("deploy", help="apply a Ray Serve config file (declarative)")
    deploy.add_argument("file", help="YAML in Ray Serve's format: applications: [...]")
    deploy.add_argument(
        "--dry-run", action="store_true",
        help="print what would change and exit 0 (nothing) or 2 (something)",
    )  # fmt: skip
    deploy.add_argument("-o", "--output", choices=("text", "json"), default="text")
    deploy.add_argument("--no-wait", action="store_true", help="return before rollouts finish")
    deploy.add_argument("--timeout-s", type=float, default=0, help="wait at most this long")
    deploy.set_defaults(command=_deploy)

    make = commands.add_parser("build", help="write a config file for applications in code")
    make.add_argument("targets", nargs="+", help="package.module:app_or_builder")
    make.add_argument("-o", "--output-path", help="file to write (default: print)")
    make.set_defaults(command=_build)

    config = commands.add_parser("config", help="print what is applied, as a config file")
    config.add_argument("name", nargs="?", help="one application (default: all)")
    config.set_defaults(command=_config)


def _deploy(args: argparse.Namespace) -> None:
    loaded = config_file.read(args.file)
    for path in ignored(loaded.config):
        print(f"capstan: {loaded.where(path)} is a Ray option Capstan ignores", file=sys.stderr)
    specs = app_config.application_specs(loaded)
    client = ControlPlaneClient(args.address)
    named = {spec.name for spec in specs}
    gone = [a for a in client.list_applications() if a.name not in named]
    plans = {spec.name: list(client.plan_application(spec).deployments) for spec in specs}
    plans |= {app.name: [_deleted(d) for d in app.deployments] for app in gone}
    deleted = [app.name for app in gone]
    shown = plan_view.as_json if args.output == "json" else plan_view.as_text
    print(shown(plans, deleted), flush=True)
    if args.dry_run:
        sys.exit(0 if plan_view.is_unchanged(plans) else EXIT_WOULD_CHANGE)
    never = [d for deployments in plans.values() for d in deployments if d.never_fits]
    if never:  # refused before anything is applied, not half way through the file
        raise InvalidSpec(f'deployment "{never[0].id}" can never be placed: {never[0].fit_message}')
    for app in gone:
        client.delete_application(app.name, wait=False)
    for spec in specs:
        reply = client.apply_application(spec, wait=not args.no_wait, timeout_s=args.timeout_s)
        for warning in reply.warnings:
            print(f"capstan: {warning}", file=sys.stderr)
    if args.output == "text":
        print(f"applied {len(specs)} application(s), deleted {len(gone)}")


def _deleted(deployment: cp.Deployment) -> cp.DeploymentPlan:
    live = [r for r in deployment.replicas if r.state <= cp.REPLICA_STATE_RUNNING]
    return cp.DeploymentPlan(
        id=deployment.id,
        changes=[cp.PLAN_CHANGE_DELETE],
        replicas_before=len(live),
        version_before=deployment.version,
        fits=True,
        steps=[cp.RolloutStep(stopped=len(live), serving=len(live))],
    )


def _build(args: argparse.Namespace) -> None:
    entries = []
    for index, target in enumerate(args.targets):
        name = f"app{index + 1}"
        prefix = "/" if len(args.targets) == 1 else f"/{name}"
        spec = build(load_target(target, {}), name, prefix)
        source = {"import_path": target, "runtime_env": {}}
        entries.append(config_dump.application_entry(name, prefix, source, spec.deployments))
    text = config_dump.render(entries)
    if args.output_path:
        with open(args.output_path, "w") as out:
            out.write(text)
        print(f"wrote {args.output_path}")
    else:
        print(text, end="")


def _config(args: argparse.Namespace) -> None:
    client = ControlPlaneClient(args.address)
    apps = [client.get_application(args.name)] if args.name else client.list_applications()
    print(config_dump.render(config_dump.stored_entry(app) for app in apps), end="")

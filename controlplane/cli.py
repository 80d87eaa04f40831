"""The ``switchman`` command line: serve, bootstrap, translate, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from controlplane.bootstrap import build_bootstrap, render_bootstrap
from controlplane.logs import configure_logging
from controlplane.settings import (
    MIB,
    GrpcSettings,
    ServeSettings,
    parse_entrypoint,
    parse_group_by,
    parse_hostport,
    parse_node_group,
)
from controlplane.sources.files import FileSource
from controlplane.store import ResourceStore
from translators.envoy import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, build_resources
from translators.envoy.common import to_dict
from translators.envoy.wire import message_of
from translators.groups import NodeGroup
from translators.ir import EntryPoint
from translators.options import Options
from translators.translate import translate_world
from translators.world import build_world

DEFAULT_ENTRYPOINTS = (
    EntryPoint(name="web", address="0.0.0.0", port=8000),
    EntryPoint(name="websecure", address="0.0.0.0", port=8443),
)


def _add_translation_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--entrypoint",
        action="append",
        type=parse_entrypoint,
        metavar="NAME=HOST:PORT",
        help="an entry point (repeatable); default: web=0.0.0.0:8000 and websecure=0.0.0.0:8443",
    )
    p.add_argument("--default-rule-syntax", choices=("v2", "v3"), default="v3")
    p.add_argument("--allow-cross-namespace", action="store_true")
    p.add_argument("--allow-empty-services", action="store_true")
    p.add_argument("--allow-external-name-services", action="store_true")
    p.add_argument(
        "--upstream-ca-file",
        default="/etc/ssl/certs/ca-certificates.crt",
        help="CA bundle on the Envoy host for https backends without a ServersTransport CA",
    )
    p.add_argument(
        "--forward-auth",
        choices=("service", "envoy"),
        default="service",
        help="forwardAuth: Switchman's authorization service calls the auth server with "
        "Traefik's exact request (default), or Envoy's own HTTP client does (no extra hop, "
        "Envoy's request shape; see docs/compatibility.md)",
    )
    p.add_argument(
        "--route-scopes",
        choices=("off", "host"),
        default="off",
        help="host: an entry point whose every route pins one Host gets one route table per host "
        "(scoped RDS), so an edit re-sends and Envoy rebuilds one host's routes; for large "
        "tables (see docs/xds.md and docs/compatibility.md)",
    )


def _positive(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {value!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value!r}")
    return seconds


def _mebibytes(value: str) -> int:
    if not value.isdigit() or not 4 <= int(value) <= 2047:
        raise argparse.ArgumentTypeError(f"expected MiB between 4 and 2047, got {value!r}")
    return int(value) * MIB


def _add_grpc_flags(p: argparse.ArgumentParser) -> None:
    d = GrpcSettings()
    g = p.add_argument_group("xDS gRPC server (see docs/xds.md)")
    g.add_argument(
        "--grpc-keepalive-time",
        type=_positive,
        default=d.keepalive_time,
        metavar="SECONDS",
        help=f"ping a quiet Envoy connection this often (default {d.keepalive_time:g})",
    )
    g.add_argument(
        "--grpc-keepalive-timeout",
        type=_positive,
        default=d.keepalive_timeout,
        metavar="SECONDS",
        help=f"drop a connection whose ping is not answered in time (default "
        f"{d.keepalive_timeout:g})",
    )
    g.add_argument(
        "--grpc-keepalive-permit-without-calls",
        action=argparse.BooleanOptionalAction,
        default=d.keepalive_permit_without_calls,
        help="keepalive pings also on connections with no open stream",
    )
    g.add_argument(
        "--grpc-min-ping-interval",
        type=_positive,
        default=d.min_ping_interval,
        metavar="SECONDS",
        help=f"the most often an Envoy may ping without data (default {d.min_ping_interval:g}; "
        "keep below the Envoy's own keepalive interval, 30 s in `switchman bootstrap`)",
    )
    g.add_argument(
        "--grpc-max-message-size",
        type=_mebibytes,
        default=d.max_message_bytes,
        metavar="MIB",
        help=f"largest xDS message sent or received, in MiB (default "
        f"{d.max_message_bytes // MIB}; gRPC's own default of 4 is too small for large route "
        "tables)",
    )


def _grpc_settings(args: argparse.Namespace) -> GrpcSettings:
    return GrpcSettings(
        keepalive_time=args.grpc_keepalive_time,
        keepalive_timeout=args.grpc_keepalive_timeout,
        keepalive_permit_without_calls=args.grpc_keepalive_permit_without_calls,
        min_ping_interval=args.grpc_min_ping_interval,
        max_message_bytes=args.grpc_max_message_size,
    )


def _options(args: argparse.Namespace) -> Options:
    return Options(
        entrypoints=tuple(args.entrypoint) if args.entrypoint else DEFAULT_ENTRYPOINTS,
        default_rule_syntax=args.default_rule_syntax,
        allow_cross_namespace=args.allow_cross_namespace,
        allow_empty_services=args.allow_empty_services,
        allow_external_name_services=args.allow_external_name_services,
        upstream_ca_file=args.upstream_ca_file,
        forward_auth_mode=args.forward_auth,
        route_scopes=args.route_scopes,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchman", description="An Envoy xDS control plane that speaks Traefik."
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    parser.add_argument("--log-json", action="store_true", help="structured JSON logs")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="watch a directory and serve it to Envoy over ADS")
    serve.add_argument("--config-dir", type=Path, required=True)
    serve.add_argument(
        "--xds-address", type=parse_hostport, default=("0.0.0.0", 18000), metavar="HOST:PORT"
    )
    serve.add_argument(
        "--admin-address", type=parse_hostport, default=("127.0.0.1", 9080), metavar="HOST:PORT"
    )
    serve.add_argument(
        "--debounce", type=float, default=0.02, help="seconds of quiet before a push"
    )
    serve.add_argument(
        "--max-delay", type=float, default=0.5, help="longest a change waits under churn"
    )
    serve.add_argument(
        "--node-group",
        type=parse_node_group,
        action="append",
        default=[],
        metavar="NAME=EP[,EP...]",
        help="Envoys of group NAME get only these entry points (repeatable); others get all",
    )
    serve.add_argument(
        "--node-group-by",
        type=parse_group_by,
        default="cluster",
        metavar="cluster|metadata:KEY",
        help="what names an Envoy's group: its node cluster (default) or a node metadata key",
    )
    _add_grpc_flags(serve)
    _add_translation_flags(serve)

    boot = sub.add_parser("bootstrap", help="print an Envoy bootstrap that pulls from Switchman")
    boot.add_argument("--xds-address", type=parse_hostport, required=True, metavar="HOST:PORT")
    boot.add_argument("--node-id", required=True)
    boot.add_argument("--node-cluster", default="switchman-gateway")
    boot.add_argument(
        "--xds-protocol",
        choices=("sotw", "delta"),
        default="delta",
        help="incremental Delta xDS (default: only what changed is sent) or state of the world",
    )
    boot.add_argument(
        "--admin-address", type=parse_hostport, default=("127.0.0.1", 9901), metavar="HOST:PORT"
    )

    tr = sub.add_parser(
        "translate", help="print the Envoy resources and diagnostics for a directory"
    )
    tr.add_argument("directory", type=Path)
    tr.add_argument("--output", choices=("yaml", "json"), default="yaml")
    _add_translation_flags(tr)

    demo = sub.add_parser("demo", help="run a canary 90/10 → 50/50 → 0/100 through a real Envoy")
    demo.add_argument("--requests", type=int, default=1000, help="requests per step")
    return parser


def translate_directory(directory: Path, options: Options) -> tuple[dict[str, Any], list[Any]]:
    store = ResourceStore([FileSource.name])
    source = FileSource(directory, store)
    source.scan()
    source.publish()
    world, world_diags = build_world(store.objects())
    result = translate_world(world, options)
    resources = build_resources(result.ir)
    out: dict[str, Any] = {}
    for key, type_url in (
        ("clusters", CLUSTER),
        ("endpoints", ENDPOINT),
        ("listeners", LISTENER),
        ("routes", ROUTE),
        ("scoped_routes", SCOPED_ROUTE),
    ):
        entries = resources.by_type[type_url]
        if entries or type_url != SCOPED_ROUTE:
            out[key] = [to_dict(message_of(msg)) for _, msg in entries]
    diags = sorted({*store.diagnostics(), *world_diags, *result.diagnostics})
    return out, diags


def _node_groups(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[NodeGroup, ...]:
    known = {ep.name for ep in _options(args).entrypoints}
    seen: set[str] = set()
    for group in args.node_group:
        if group.name in seen:
            parser.error(f"--node-group {group.name} is given twice")
        seen.add(group.name)
        unknown = sorted(set(group.entrypoints) - known)
        if unknown:
            parser.error(
                f"--node-group {group.name}: no entry point {', '.join(unknown)} "
                f"(have: {', '.join(sorted(known))})"
            )
    return tuple(args.node_group)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, json_logs=args.log_json)
    if args.command == "serve":
        from controlplane.serve import serve

        settings = ServeSettings(
            config_dir=args.config_dir,
            xds_address=args.xds_address,
            admin_address=args.admin_address,
            options=_options(args),
            debounce=args.debounce,
            max_delay=args.max_delay,
            grpc=_grpc_settings(args),
            node_groups=_node_groups(parser, args),
            group_by=args.node_group_by,
        )
        asyncio.run(serve(settings))
        return 0
    if args.command == "bootstrap":
        host, port = args.xds_address
        ahost, aport = args.admin_address
        config = build_bootstrap(
            xds_host="127.0.0.1" if host == "0.0.0.0" else host,
            xds_port=port,
            node_id=args.node_id,
            node_cluster=args.node_cluster,
            admin_host=ahost,
            admin_port=aport,
            protocol=args.xds_protocol,
        )
        sys.stdout.write(render_bootstrap(config))
        return 0
    if args.command == "translate":
        if not args.directory.is_dir():
            print(f"switchman translate: {args.directory}: not a directory", file=sys.stderr)
            return 2
        resources, diags = translate_directory(args.directory, _options(args))
        doc = {"resources": resources, "diagnostics": [d.as_dict() for d in diags]}
        if args.output == "json":
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        else:
            sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
        for d in diags:
            print(str(d), file=sys.stderr)
        return 1 if any(d.severity == "error" for d in diags) else 0
    if args.command == "demo":
        from controlplane.demo import run_demo

        return run_demo(requests_per_step=args.requests)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

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
from controlplane.settings import ServeSettings, parse_entrypoint, parse_hostport
from controlplane.sources.files import FileSource
from controlplane.store import ResourceStore
from translators.envoy import CLUSTER, ENDPOINT, LISTENER, ROUTE, build_resources
from translators.envoy.common import to_dict
from translators.envoy.wire import message_of
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


def _options(args: argparse.Namespace) -> Options:
    return Options(
        entrypoints=tuple(args.entrypoint) if args.entrypoint else DEFAULT_ENTRYPOINTS,
        default_rule_syntax=args.default_rule_syntax,
        allow_cross_namespace=args.allow_cross_namespace,
        allow_empty_services=args.allow_empty_services,
        allow_external_name_services=args.allow_external_name_services,
        upstream_ca_file=args.upstream_ca_file,
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
    ):
        out[key] = [to_dict(message_of(msg)) for _, msg in resources.by_type[type_url]]
    diags = sorted({*store.diagnostics(), *world_diags, *result.diagnostics})
    return out, diags


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

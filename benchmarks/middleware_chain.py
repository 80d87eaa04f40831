"""Envoy's throughput through a route with a five-middleware chain against the same route with none.

One Envoy fed by Switchman, two hosts on one entry point: ``plain.example`` (no middleware) and
``chain.example`` (headers, stripPrefix, basicAuth, rateLimit set high, compress, in that order).
The backend is a second Envoy answering a fixed 4 KiB JSON body itself, so the Python echo
backend does not cap the figures. Load: closed-loop keep-alive clients (``wrk`` when installed,
else Python processes), alternating the two hosts in rounds so drift hits both alike.

    .venv/bin/python -m benchmarks.middleware_chain [--rounds 4] [--seconds 3] [--no-write]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import multiprocessing
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.report import machine_line, median, table, write_section
from benchmarks.route_latency import Conn
from controlplane.localrun import ControlPlane, Envoy, find_envoy, free_port, wait_for

BODY = '{"data": "' + "x" * 4080 + '"}'
PASSWORD = "bench-password"


def backend_config(port: int, admin: int) -> dict[str, object]:
    """A static Envoy that answers every request with BODY (application/json)."""
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "backend",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters."
                                        "network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "backend",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "direct_response": {
                                                                "status": 200,
                                                                "body": {"inline_string": BODY},
                                                            },
                                                            "response_headers_to_add": [
                                                                {
                                                                    "header": {
                                                                        "key": "content-type",
                                                                        "value": "application/json",
                                                                    }
                                                                }
                                                            ],
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions."
                                                    "filters.http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }


def config_files(backend_port: int) -> dict[str, str]:
    sha = base64.b64encode(hashlib.sha1(PASSWORD.encode()).digest()).decode()
    users = base64.b64encode(f"bench:{{SHA}}{sha}\n".encode()).decode()
    return {
        "all.yaml": f"""apiVersion: v1
kind: Service
metadata: {{name: app, namespace: default}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: app-1, namespace: default, labels: {{kubernetes.io/service-name: app}}}}
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{name: http, port: {backend_port}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: users, namespace: default}}
data: {{users: {users}}}
---
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {{name: chain, namespace: default}}
spec:
  chain:
    middlewares: [{{name: hdrs}}, {{name: strip}}, {{name: auth}}, {{name: limit}}, {{name: gz}}]
---
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {{name: hdrs, namespace: default}}
spec: {{headers: {{customRequestHeaders: {{X-Bench: "1"}}, frameDeny: true}}}}
---
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {{name: strip, namespace: default}}
spec: {{stripPrefix: {{prefixes: [/api]}}}}
---
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {{name: auth, namespace: default}}
spec: {{basicAuth: {{secret: users}}}}
---
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {{name: limit, namespace: default}}
spec: {{rateLimit: {{average: 1000000, burst: 1000000}}}}
---
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {{name: gz, namespace: default}}
spec: {{compress: {{}}}}
---
apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {{name: bench, namespace: default}}
spec:
  routes:
  - match: Host(`plain.example`)
    services: [{{name: app, port: 80}}]
  - match: Host(`chain.example`)
    middlewares: [{{name: chain}}]
    services: [{{name: app, port: 80}}]
"""
    }


def request(host: str) -> bytes:
    token = base64.b64encode(f"bench:{PASSWORD}".encode()).decode()
    return (
        f"GET /api/items HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {token}\r\n"
        "Accept-Encoding: gzip\r\n\r\n"
    ).encode()


def python_load(port: int, host: str, seconds: float) -> float:
    """Requests per second from one keep-alive client for ``seconds``."""
    conn, req, n = Conn(port), request(host), 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if conn.roundtrip(req) != 200:
            raise RuntimeError(f"{host}: unexpected status")
        n += 1
    conn.close()
    return n / seconds


def _entry(args: tuple[int, str, float]) -> float:
    return python_load(*args)


def run_round(port: int, host: str, seconds: float, clients: int) -> float:
    if shutil.which("wrk"):
        token = base64.b64encode(f"bench:{PASSWORD}".encode()).decode()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s",
             "-H", f"Host: {host}", "-H", f"Authorization: Basic {token}",
             "-H", "Accept-Encoding: gzip", f"http://127.0.0.1:{port}/api/items"],
            capture_output=True, text=True, timeout=seconds + 30, check=False,
        ).stdout  # fmt: skip
        for line in out.splitlines():
            if line.startswith("Requests/sec:"):
                return float(line.split()[1])
        raise RuntimeError(f"wrk gave no figure:\n{out}")
    with multiprocessing.Pool(clients) as pool:
        return sum(pool.map(_entry, [(port, host, seconds)] * clients))


def _rounds(xs: list[float]) -> str:
    return ", ".join(f"{x:,.0f}" for x in xs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="switchman-bench-mw-"))
    backend_port, backend_admin, web = free_port(), free_port(), free_port()
    (work / "backend.yaml").write_text(yaml.safe_dump(backend_config(backend_port, backend_admin)))
    backend = subprocess.Popen(
        [find_envoy(), "-c", str(work / "backend.yaml"), "--concurrency", "1",
         "--disable-hot-restart", "--base-id", "7", "-l", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    config = work / "config"
    config.mkdir()
    for name, text in config_files(backend_port).items():
        (config / name).write_text(text)
    cp = ControlPlane(config, work, {"web": web})
    envoy = Envoy(cp.xds_port, work)
    try:
        cp.start()
        envoy.start()
        for host in ("plain.example", "chain.example"):
            wait_for(lambda h=host: Conn(web).roundtrip(request(h)) == 200, 20, f"{host} served")  # type: ignore[misc]
        rps: dict[str, list[float]] = {"plain.example": [], "chain.example": []}
        for k in range(args.rounds):
            order = ["plain.example", "chain.example"][:: 1 if k % 2 == 0 else -1]
            for host in order:
                rps[host].append(run_round(web, host, args.seconds, args.clients))
                print(f"round {k + 1}: {host}: {rps[host][-1]:,.0f} req/s")
    finally:
        envoy.stop()
        cp.stop()
        backend.terminate()
        backend.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    plain, chain = median(rps["plain.example"]), median(rps["chain.example"])
    ratio = chain / plain
    tool = "wrk" if shutil.which("wrk") else "Python clients"
    print(f"throughput with the chain / without: {ratio:.2f}x ({chain:,.0f} vs {plain:,.0f} req/s)")
    body = "\n\n".join(
        [
            "## Middleware chain throughput",
            machine_line(),
            "Same Envoy, same route, same 4 KiB JSON backend (a second Envoy answering directly); "
            "the chain is headers → stripPrefix → basicAuth ({SHA}) → rateLimit (set high) → "
            f"compress (gzip, 4 KiB compressed per response). Load: {tool}, {args.clients} "
            f"keep-alive connections, {args.rounds} alternating rounds of {args.seconds:.0f} s.",
            table(
                ["route", "median req/s", "rounds"],
                [
                    [
                        "no middleware",
                        f"{plain:,.0f}",
                        ", ".join(f"{x:,.0f}" for x in rps["plain.example"]),
                    ],
                    [
                        "five-middleware chain",
                        f"{chain:,.0f}",
                        ", ".join(f"{x:,.0f}" for x in rps["chain.example"]),
                    ],
                ],
            ),
            f"**Ratio chain / none: {ratio:.2f}x** (median rounds). On 2 shared cores the load "
            "generator, both Envoys and the control plane compete for CPU: compare the two rows "
            "of one run, not runs with each other.",
        ]
    )
    if not args.no_write:
        write_section("middleware_chain", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

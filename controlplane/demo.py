"""``switchman demo``: a canary rollout 100/0 → 90/10 → 50/50 → 0/100 through a real Envoy.

Everything runs locally, on 127.0.0.1 free ports, with the parts of :mod:`controlplane.localrun`:
two HTTP backends (v1 and v2), ``switchman serve`` watching a temporary directory of Traefik
YAML, and a real Envoy bootstrapped from it. Each step rewrites the TraefikService file, as a
user or Flagger would, waits until Envoy serves the new weights, sends requests through Envoy
and checks the observed split against a 99.9% binomial interval.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import signal
import socketserver
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from controlplane.localrun import Backend, ControlPlane, Envoy, free_port, wait_for, workdir

NAMESPACE = "demo"
HOST = "app.example.com"
STEPS: tuple[tuple[int, int], ...] = ((100, 0), (90, 10), (50, 50), (0, 100))
APPLY_TIMEOUT = 10.0  # seconds from writing a file to Envoy serving it
Z_999 = 3.2905  # two-sided 99.9% quantile of the standard normal
KEEP_ENV = "SWITCHMAN_KEEP_WORKDIR"

_SERVICES_YAML = """\
# Two versions of one app, each a Service with an EndpointSlice to a local backend.
apiVersion: v1
kind: Service
metadata: {{name: app-v1, namespace: {ns}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: app-v1-local
  namespace: {ns}
  labels: {{kubernetes.io/service-name: app-v1}}
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{name: http, port: {v1_port}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: app-v2, namespace: {ns}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: app-v2-local
  namespace: {ns}
  labels: {{kubernetes.io/service-name: app-v2}}
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{name: http, port: {v2_port}}}]
"""

_INGRESSROUTE_YAML = """\
apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {{name: app, namespace: {ns}}}
spec:
  entryPoints: [web]
  routes:
  - match: Host(`{host}`)
    kind: Rule
    services:
    - {{name: app, kind: TraefikService}}
"""

_TRAEFIKSERVICE_YAML = """\
# The canary: edit the weights and Envoy follows.
apiVersion: traefik.io/v1alpha1
kind: TraefikService
metadata: {{name: app, namespace: {ns}}}
spec:
  weighted:
    services:
    - {{name: app-v1, port: 80, weight: {w1}}}
    - {{name: app-v2, port: 80, weight: {w2}}}
"""

HINT = """\
Try it with your own YAML:
  switchman translate DIR                      # preview the Envoy config and diagnostics
  switchman serve --config-dir DIR --entrypoint web=0.0.0.0:8000 --xds-address 127.0.0.1:18000
  switchman bootstrap --xds-address 127.0.0.1:18000 --node-id gateway-1 > envoy.yaml
  envoy -c envoy.yaml"""


@dataclass(frozen=True, slots=True)
class StepResult:
    weights: tuple[int, int]
    v1: int
    v2: int
    errors: int
    low: float  # the 99.9% interval of the v2 count
    high: float
    apply_ms: float | None  # None for the initial load

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.low <= self.v2 <= self.high

    @property
    def verdict(self) -> str:
        if self.errors:
            return f"{self.errors} errors"
        return "ok" if self.ok else "outside interval"


def binomial_interval(n: int, p: float, z: float = Z_999) -> tuple[float, float]:
    """The normal-approximation interval of a Binomial(n, p) count; exact when p is 0 or 1."""
    sd = math.sqrt(n * p * (1.0 - p))
    return max(0.0, n * p - z * sd), min(float(n), n * p + z * sd)


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` in one rename, so the watcher never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")  # hidden: the file source does not read it
    tmp.write_text(text)
    os.replace(tmp, path)


def _version_of(cluster: str) -> str | None:
    for version in ("v1", "v2"):
        if f"app-{version}/" in cluster or cluster.endswith(f"app-{version}"):
            return version
    return None


def served_split(envoy: Envoy) -> dict[str, float]:
    """The v1/v2 shares of the route Envoy currently holds, from its admin /config_dump."""
    _, body = envoy.admin("/config_dump?resource=dynamic_route_configs")
    shares: dict[str, float] = {}
    for config in json.loads(body).get("configs", []):
        for vhost in config.get("route_config", {}).get("virtual_hosts", []):
            for route in vhost.get("routes", []):
                action: dict[str, Any] = route.get("route", {})
                if "cluster" in action:
                    weights = {action["cluster"]: 1}
                else:
                    clusters = action.get("weighted_clusters", {}).get("clusters", [])
                    weights = {c["name"]: int(c.get("weight", 0)) for c in clusters}
                total = sum(weights.values())
                for cluster, weight in weights.items():
                    version = _version_of(cluster)
                    if version is not None and total:
                        shares[version] = shares.get(version, 0.0) + weight / total
    return shares


def _clusters_with_hosts(envoy: Envoy) -> set[str]:
    _, body = envoy.admin("/clusters?format=json")
    return {
        version
        for status in json.loads(body).get("cluster_statuses", [])
        if status.get("host_statuses") and (version := _version_of(status["name"])) is not None
    }


def is_serving(envoy: Envoy, weights: tuple[int, int]) -> bool:
    """Envoy routes with these weights, and every cluster with a share has endpoints."""
    total = sum(weights)
    expected = {v: w / total for v, w in zip(("v1", "v2"), weights, strict=True) if w}
    shares = served_split(envoy)
    if set(shares) != set(expected):
        return False
    if any(abs(shares[v] - expected[v]) > 1e-6 for v in expected):
        return False
    return set(expected) <= _clusters_with_hosts(envoy)


def send_requests(port: int, n: int, progress: Progress, description: str) -> Counter[str]:
    """``n`` GETs through Envoy on one keep-alive connection; counts by answering backend."""
    counts: Counter[str] = Counter()
    task = progress.add_task(description, total=n)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        for _ in range(n):
            for attempt in (1, 2):
                try:
                    conn.request("GET", "/", headers={"Host": HOST})
                    resp = conn.getresponse()
                    resp.read()
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    conn.close()  # Envoy closed an idle keep-alive connection: reconnect once
                    if attempt == 2:
                        counts["error"] += 1
                    continue
                backend = resp.getheader("X-Backend")
                if resp.status == 200 and backend in ("v1", "v2"):
                    counts[backend] += 1
                else:
                    counts["error"] += 1
                break
            progress.advance(task)
    finally:
        conn.close()
    return counts


def results_table(results: list[StepResult]) -> Table:
    table = Table(title="Canary through Envoy", title_justify="left")
    table.add_column("step", justify="right")
    table.add_column("expected v1/v2", justify="center")
    table.add_column("observed v1/v2", justify="center")
    table.add_column("v2 interval", justify="center")
    table.add_column("applied in", justify="right")
    table.add_column("verdict")
    for i, r in enumerate(results):
        table.add_row(
            str(i),
            f"{r.weights[0]}/{r.weights[1]}",
            f"{r.v1}/{r.v2}",
            f"{math.ceil(r.low)}-{math.floor(r.high)}",
            "initial" if r.apply_ms is None else f"{r.apply_ms:.0f} ms",
            f"[{'green' if r.ok else 'red'}]{r.verdict}[/]",
        )
    return table


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so the same ``finally`` blocks stop the children."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextlib.contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated`, a KeyboardInterrupt, while the demo runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while children are being stopped (bounded by their timeouts)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _quiet_disconnects(server: socketserver.BaseServer) -> Callable[[Any, Any], None]:
    """A backend's ``handle_error``: Envoy going away mid-response (Ctrl-C) is no traceback."""

    def handle_error(request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            type(server).handle_error(server, request, client_address)

    return handle_error


def _tuned(backend: Backend) -> Backend:
    server: Any = backend.server
    # Envoy keeps its upstream connections alive: without TCP_NODELAY the body, written after
    # the headers, waits out the peer's delayed ACK, ~40 ms a request.
    server.RequestHandlerClass.disable_nagle_algorithm = True
    server.handle_error = _quiet_disconnects(backend.server)
    return backend


class _Demo:
    def __init__(self, wd: Path, requests_per_step: int, console: Console) -> None:
        self.wd = wd
        self.n = requests_per_step
        self.console = console
        self.config_dir = wd / "config"
        self.backends: list[Backend] = []
        self.control_plane: ControlPlane | None = None
        self.envoy: Envoy | None = None

    def log_paths(self) -> list[Path]:
        return sorted(self.wd.glob("*.log"))

    def _write_weights(self, weights: tuple[int, int]) -> None:
        text = _TRAEFIKSERVICE_YAML.format(ns=NAMESPACE, w1=weights[0], w2=weights[1])
        _write_atomic(self.config_dir / "traefikservice.yaml", text)

    def start(self) -> int:
        """Backends, the initial YAML (the first step), the control plane and Envoy."""
        for name in ("v1", "v2"):
            self.backends.append(_tuned(Backend(name)).start())
        v1, v2 = self.backends
        self.config_dir.mkdir()
        services = _SERVICES_YAML.format(ns=NAMESPACE, v1_port=v1.port, v2_port=v2.port)
        (self.config_dir / "services.yaml").write_text(services)
        (self.config_dir / "ingressroute.yaml").write_text(
            _INGRESSROUTE_YAML.format(ns=NAMESPACE, host=HOST)
        )
        self._write_weights(STEPS[0])
        web = free_port()
        self.control_plane = ControlPlane(self.config_dir, self.wd, {"web": web})
        self.control_plane.start()
        self.envoy = Envoy(self.control_plane.xds_port, self.wd)
        self.envoy.start()
        return web

    def apply(self, weights: tuple[int, int], initial: bool) -> float | None:
        """Write the weights (unless already there) and wait until Envoy serves them."""
        assert self.envoy is not None
        envoy = self.envoy
        started = time.monotonic()
        if not initial:
            self._write_weights(weights)
        try:
            wait_for(
                lambda: is_serving(envoy, weights),
                APPLY_TIMEOUT,
                f"Envoy to serve {weights[0]}/{weights[1]}",
                interval=0.01,
            )
        except TimeoutError as exc:
            try:
                served = ", ".join(f"{v} {s:.0%}" for v, s in sorted(served_split(envoy).items()))
            except Exception as dump_error:
                served = f"unknown ({dump_error})"
            raise TimeoutError(f"{exc}; Envoy serves: {served or 'no route'}") from None
        return None if initial else (time.monotonic() - started) * 1000

    def step(self, index: int, weights: tuple[int, int], port: int) -> StepResult:
        apply_ms = self.apply(weights, initial=index == 0)
        label = f"step {index}  {weights[0]}/{weights[1]}"
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,
        ) as progress:
            counts = send_requests(port, self.n, progress, label)
        low, high = binomial_interval(self.n, weights[1] / sum(weights))
        result = StepResult(
            weights=weights,
            v1=counts["v1"],
            v2=counts["v2"],
            errors=counts["error"],
            low=low,
            high=high,
            apply_ms=apply_ms,
        )
        applied = "initial config" if apply_ms is None else f"applied in {apply_ms:.0f} ms"
        self.console.print(
            f"{label:<14} {applied:<18} observed {result.v1}/{result.v2}"
            f" (v2 99.9% interval {math.ceil(low)}-{math.floor(high)}): {result.verdict}",
            soft_wrap=True,
        )
        return result

    def stop(self) -> None:
        with _uninterrupted():
            for stop in (
                self.envoy.stop if self.envoy else None,
                self.control_plane.stop if self.control_plane else None,
                *(b.stop for b in self.backends),
            ):
                if stop is None:
                    continue
                try:
                    stop()
                except Exception as exc:
                    self.console.print(f"warning: while stopping: {exc!r}", soft_wrap=True)


@contextlib.contextmanager
def _restoring_keep_env() -> Iterator[None]:
    """:func:`localrun.workdir` keeps its directory when ``SWITCHMAN_KEEP_WORKDIR=1`` as it
    exits; the demo sets it on failure, and puts the environment back afterwards."""
    before = os.environ.get(KEEP_ENV)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(KEEP_ENV, None)
        else:
            os.environ[KEEP_ENV] = before


def run_demo(requests_per_step: int = 1000, console: Console | None = None) -> int:
    """Run the canary demo; 0 when every step's split is inside its interval, else 1.

    130 after Ctrl-C and 143 after SIGTERM, with every child stopped and the workdir removed.
    """
    console = console or Console(highlight=False)
    if requests_per_step < 1:
        console.print("switchman demo: --requests must be at least 1", soft_wrap=True)
        return 2
    steps = " -> ".join(f"{a}/{b}" for a, b in STEPS)
    console.print(
        f"Canary demo: two local backends (v1, v2) behind a real Envoy fed by switchman; "
        f"the TraefikService weights go {steps}, {requests_per_step} requests a step.",
        soft_wrap=True,
    )
    code = 1
    with _signals_as_interrupts(), _restoring_keep_env(), workdir("switchman-demo-") as wd:
        console.print(f"workdir: {wd}", soft_wrap=True)
        demo = _Demo(wd, requests_per_step, console)
        results: list[StepResult] = []
        try:
            started = time.monotonic()
            port = demo.start()
            console.print(
                f"control plane and Envoy up in {(time.monotonic() - started) * 1000:.0f} ms;"
                f" Envoy listens on 127.0.0.1:{port} (Host: {HOST})",
                soft_wrap=True,
            )
            for index, weights in enumerate(STEPS):
                results.append(demo.step(index, weights, port))
            code = 0 if all(r.ok for r in results) else 1
        except KeyboardInterrupt as exc:
            code = 143 if isinstance(exc, Terminated) else 130
            console.print("terminated" if code == 143 else "interrupted", soft_wrap=True)
        except Exception as exc:
            code = 1
            console.print(f"error: {exc}", soft_wrap=True)
        finally:
            demo.stop()
        if results:
            console.print()
            console.print(results_table(results))
        if code == 1:
            os.environ[KEEP_ENV] = "1"
            logs = ", ".join(str(p) for p in demo.log_paths()) or str(wd)
            console.print(f"FAILED. Logs kept in {wd}: {logs}", soft_wrap=True)
        elif code == 0:
            console.print("All steps inside their 99.9% intervals.", soft_wrap=True)
    if code in (0, 1):
        console.print()
        console.print(HINT, soft_wrap=True)
    return code

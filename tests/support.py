"""Helpers for tests that run real processes: YAML for local backends, a gateway client."""

from __future__ import annotations

import collections
import http.client
import json
import re
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.localrun import Backend, ControlPlane, Envoy, wait_for

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def service_yaml(
    name: str,
    backends: list[Backend],
    *,
    namespace: str = "default",
    port: int = 80,
    port_name: str = "http",
) -> str:
    """A Service and its EndpointSlice pointing at local backends (all on one port each)."""
    docs = [
        f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports: [{{name: {port_name}, port: {port}}}]
"""
    ]
    for i, b in enumerate(backends):
        docs.append(
            f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{i}
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
endpoints: [{{addresses: ["{b.host}"], conditions: {{ready: true}}}}]
ports: [{{name: {port_name}, port: {b.port}}}]
"""
        )
    return "---\n".join(docs)


@dataclass
class Stack:
    """A control plane and an Envoy over one config directory, and a client for the gateway."""

    config: Path
    workdir: Path
    controlplane: ControlPlane
    envoy: Envoy
    web_port: int
    _conn: http.client.HTTPConnection | None = field(default=None, repr=False)

    def write(self, name: str, text: str) -> Path:
        path = self.config / name
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic, as editors and kubectl cp do
        return path

    def request(
        self,
        path: str = "/",
        host: str = "example.com",
        headers: dict[str, str] | None = None,
        method: str = "GET",
    ) -> tuple[int, str, dict[str, object]]:
        """One request through Envoy: (status, backend name or "", decoded JSON echo or {})."""
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=5)
            try:
                self._conn.request(method, path, headers={"Host": host, **(headers or {})})
                resp = self._conn.getresponse()
                body = resp.read()
                break
            except (ConnectionError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        echo: dict[str, object] = {}
        if resp.getheader("Content-Type") == "application/json":
            echo = json.loads(body)
        if resp.getheader("Connection", "").lower() == "close":
            self._conn.close()
            self._conn = None
        return resp.status, str(echo.get("backend", "")), echo

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def split(self, n: int, **kw: object) -> collections.Counter[str]:
        out: collections.Counter[str] = collections.Counter()
        for _ in range(n):
            status, backend, _ = self.request(**kw)  # type: ignore[arg-type]
            out[backend if status == 200 else f"HTTP {status}"] += 1
        return out

    def wait_serving(self, predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
        wait_for(predicate, timeout, what)


def binomial_ok(observed: int, n: int, p: float, z: float = 3.2905) -> bool:
    """Is `observed` successes in `n` trials inside the 99.9% interval around p?"""
    mean = n * p
    sd = (n * p * (1 - p)) ** 0.5
    return abs(observed - mean) <= z * sd + 0.5


def copy_shared(name: str, dest: Path) -> Path:
    src = SHARED / name
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copy(src, dest)
    return dest


def send_raw(port: int, raw: bytes, source: str = "127.0.0.1") -> tuple[int, str]:
    """Send exact request bytes from ``source``; (status, echo backend name or "").

    Status 0: no complete answer within 5 s. Raises ConnectionRefusedError while nothing listens.
    Reads up to Content-Length, not to EOF: Envoy delays closing after a local reply
    (``delayed_close_timeout``, 1 s).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
        s.sendall(raw)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            while length and len(body) < int(length.group(1)):
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
        except (TimeoutError, ConnectionResetError):
            return 0, ""
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not m:
        return 0, ""
    status = int(m.group(1))
    backend = ""
    if status == 200 and body.startswith(b"{"):
        backend = str(json.loads(body)["backend"])
    return status, backend


def middleware_yaml(name: str, spec: str, namespace: str = "default") -> str:
    """A Middleware; ``spec`` is the YAML under ``spec:``, indented by two spaces."""
    return (
        "apiVersion: traefik.io/v1alpha1\nkind: Middleware\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}\n"
    )


def route_yaml(match: str, *middlewares: str) -> str:
    """One IngressRoute route to the Service ``app`` (port 80) through ``middlewares``."""
    names = ", ".join(f"{{name: {m}}}" for m in middlewares)
    return (
        f"  - match: {match}\n    middlewares: [{names}]\n    services: [{{name: app, port: 80}}]"
    )

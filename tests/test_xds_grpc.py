"""The xDS port's gRPC settings: flags → settings → channel arguments, messages over gRPC's 4 MB
default both ways, and keepalive pings that drop an Envoy which vanished without closing its
connection (seen through a TCP proxy that stops forwarding, as a dead host or a dropped NAT
entry would)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from controlplane.cli import _grpc_settings, build_parser
from controlplane.localrun import ControlPlane, free_port
from controlplane.serve import grpc_server_options
from controlplane.settings import MIB, GrpcSettings
from tests.xds_aio import AioClient, TunedXdsServer, synthetic
from translators.envoy import CLUSTER, ENDPOINT, ROUTE


def test_flags_become_grpc_channel_arguments() -> None:
    parser = build_parser()
    defaults = _grpc_settings(parser.parse_args(["serve", "--config-dir", "x"]))
    assert defaults == GrpcSettings()
    assert dict(grpc_server_options(defaults)) == {
        "grpc.max_send_message_length": 64 * MIB,
        "grpc.max_receive_message_length": 64 * MIB,
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 10_000,
        "grpc.http2.ping_timeout_ms": 10_000,
        "grpc.keepalive_permit_without_calls": 1,
        "grpc.http2.min_ping_interval_without_data_ms": 10_000,
        "grpc.http2.max_pings_without_data": 0,
    }
    args = parser.parse_args(
        [
            "serve",
            "--config-dir=x",
            "--grpc-keepalive-time=5",
            "--grpc-keepalive-timeout=2.5",
            "--no-grpc-keepalive-permit-without-calls",
            "--grpc-min-ping-interval=20",
            "--grpc-max-message-size=128",
        ]
    )
    options = dict(grpc_server_options(_grpc_settings(args)))
    assert options["grpc.keepalive_time_ms"] == 5000
    assert options["grpc.keepalive_timeout_ms"] == options["grpc.http2.ping_timeout_ms"] == 2500
    assert options["grpc.keepalive_permit_without_calls"] == 0
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 20_000
    assert options["grpc.max_receive_message_length"] == 128 * MIB


@pytest.mark.parametrize(
    "flag",
    [
        "--grpc-max-message-size=3",  # below gRPC's own default: surely a mistake
        "--grpc-max-message-size=2048",  # gRPC takes a 32-bit signed byte count
        "--grpc-max-message-size=64MB",
        "--grpc-keepalive-time=0",
        "--grpc-keepalive-timeout=-1",
        "--grpc-min-ping-interval=soon",
    ],
)
def test_bad_grpc_flags_are_refused(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--config-dir=x", flag])
    assert flag.split("=")[0] in capsys.readouterr().err


def _eds_request_of(size: int) -> list[str]:
    """Cluster names adding up to about ``size`` bytes on the wire (none of them exists)."""
    return [f"missing-{i:08d}-" + "n" * 40 for i in range(size // 59)]


def test_requests_over_four_megabytes_and_the_limit_flag(tmp_path: Path) -> None:
    """Through the real ``switchman serve``: with its default limit (64 MiB) a 6 MB request is
    answered; with ``--grpc-max-message-size 5`` the same request is refused and a 4.5 MB one
    (over gRPC's own 4 MB default) still gets through."""
    config = tmp_path / "config"
    config.mkdir()
    (tmp_path / "small").mkdir()
    big = ControlPlane(config, tmp_path, {"web": free_port()})
    small = ControlPlane(
        config, tmp_path / "small", {"web": free_port()}, extra_args=["--grpc-max-message-size=5"]
    )
    try:
        big.start()
        small.start()

        async def scenario() -> None:
            ok = AioClient(big.xds_port, "big")
            refused = AioClient(small.xds_port, "refused")
            fits = AioClient(small.xds_port, "fits")
            try:
                await ok.request(ENDPOINT, _eds_request_of(6_000_000))
                assert (await ok.recv()).type_url == ENDPOINT
                await fits.request(ENDPOINT, _eds_request_of(4_500_000))
                assert (await fits.recv()).type_url == ENDPOINT
                await refused.request(ENDPOINT, _eds_request_of(6_000_000))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await refused.recv()
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            finally:
                for c in (ok, refused, fits):
                    await c.close()

        asyncio.run(scenario())
    finally:
        small.stop()
        big.stop()


def test_a_large_route_configuration_reaches_the_client() -> None:
    server = TunedXdsServer()
    try:

        async def scenario() -> None:
            await server.apublish(synthetic(0, route_bytes=12 * MIB))
            client = AioClient(server.port, "big-routes")
            try:
                await client.subscribe_all(["c0"])
                got = await client.sync()
                assert got[ROUTE].resources[0].ByteSize() > 12 * MIB
            finally:
                await client.close()

        server.run(scenario)
    finally:
        server.stop()


class FreezingProxy:
    """A TCP proxy on 127.0.0.1 that can stop forwarding in both directions, keeping both
    connections open: to the server, the client is then alive but silent."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.frozen = threading.Event()
        self.stopped = threading.Event()
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                self.threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.2)
        while not self.stopped.is_set():
            if self.frozen.is_set():
                time.sleep(0.05)
                continue
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.stopped.set()
        for s in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                s.close()
        for t in self.threads:
            t.join(5)


@pytest.fixture
def proxy_for() -> Iterator[list[FreezingProxy]]:
    made: list[FreezingProxy] = []
    yield made
    for p in made:
        p.close()


@pytest.mark.parametrize(
    ("keepalive", "dropped"),
    [(1.0, True), (3600.0, False)],
    ids=["keepalive-1s-drops", "keepalive-off-lingers"],
)
def test_keepalive_drops_an_envoy_that_went_silent(
    proxy_for: list[FreezingProxy], keepalive: float, dropped: bool
) -> None:
    # keepalive_timeout also bounds every other ping's ACK (gRPC's ping timeout), so "off" is
    # both set to an hour.
    server = TunedXdsServer(GrpcSettings(keepalive_time=keepalive, keepalive_timeout=keepalive))
    try:
        proxy = FreezingProxy(server.port)
        proxy_for.append(proxy)

        async def scenario() -> None:
            await server.apublish(synthetic(0))
            client = AioClient(proxy.port, "silent")
            try:
                await client.request(CLUSTER)
                await client.ack(await client.recv())
                assert [s.node_id for s in server.streams()] == ["silent"]
                proxy.frozen.set()
                # Dropped within keepalive + timeout (generously bounded), or, with keepalive
                # effectively off, still there well after that.
                deadline = time.monotonic() + (30 if dropped else 6)
                while server.streams() and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                assert (not server.streams()) is dropped
                assert (not server.ads.nodes) is dropped
            finally:
                await client.close()

        server.run(scenario)
    finally:
        server.stop()

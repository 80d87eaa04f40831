"""Prometheus metrics, registered on a registry of our own (no global state at import time)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connected = Gauge(
            "switchman_xds_connected_proxies", "Connected ADS streams", registry=r
        )
        self.proxies = Gauge(
            "switchman_xds_proxies",
            "Connected Envoys by node cluster, Envoy version and xDS protocol",
            ["group", "node_cluster", "envoy_version", "protocol"],
            registry=r,
        )
        self.writes_pending = Gauge(
            "switchman_xds_writes_pending",
            "ADS responses waiting for HTTP/2 flow control; one that stays means an Envoy that "
            "stopped reading",
            registry=r,
        )
        self.pushes = Counter("switchman_xds_pushes", "xDS responses sent", ["type"], registry=r)
        self.acks = Counter(
            "switchman_xds_acks", "xDS responses acknowledged", ["type"], registry=r
        )
        self.nacks = Counter(
            "switchman_xds_nacks", "xDS responses rejected by Envoy", ["node", "type"], registry=r
        )
        self.push_latency = Histogram(
            "switchman_xds_push_ack_seconds",
            "From sending an xDS response to its ACK",
            ["type"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.translations = Counter(
            "switchman_translations", "Translations run", ["result"], registry=r
        )
        self.translation_seconds = Histogram(
            "switchman_translation_seconds",
            "Time to translate the world into a snapshot",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.snapshots = Counter("switchman_snapshots_published", "Snapshots published", registry=r)
        self.snapshot_bytes = Gauge(
            "switchman_snapshot_bytes",
            "Serialized size of the current snapshot, by node group",
            ["group"],
            registry=r,
        )
        self.diagnostics = Gauge(
            "switchman_diagnostics", "Current diagnostics", ["reason", "severity"], registry=r
        )
        self.source_errors = Gauge(
            "switchman_source_errors", "Files that currently fail to parse", registry=r
        )

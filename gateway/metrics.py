"""The gateway's Prometheus metrics (served at GET /metrics).

One registry per server object (tests run several gateways in one process). Counted at the
points where the gateway decides: admission, the end of a session, a failover.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions_active = Gauge(
            "voxwire_gateway_sessions_active",
            "Open edge sessions by kind (stt, tts, http_stt, http_tts, grpc)",
            ["kind"],
            registry=self.registry,
        )
        self.sessions_ended = Counter(
            "voxwire_gateway_sessions_ended",
            "Ended edge sessions by kind and WebSocket close code (HTTP: status)",
            ["kind", "code"],
            registry=self.registry,
        )
        self.refused = Counter(
            "voxwire_gateway_refused",
            "Requests refused before reaching an adapter, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.failovers = Counter(
            "voxwire_gateway_failovers",
            "Upstream streams moved to another adapter (the client saw a notice)",
            ["kind"],
            registry=self.registry,
        )
        self.session_seconds = Histogram(
            "voxwire_gateway_session_seconds",
            "Duration of edge sessions",
            ["kind"],
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""The gateway's Prometheus metrics (served at GET /metrics).

One registry per server object (tests run several gateways in one process). Counted at the
points where the gateway decides: admission, the end of a session, a failover.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.http.decoder_pool import DecoderPool
from voxwire import errors

# WebSocket close codes that are label values as they are: RFC 6455's (1000-1015, the IANA
# registry's) and the ones voxwire's errors close with. A client may close with any code from
# 3000 to 4999; those are all "other", so that no client can grow the label set.
_CLOSE_CODES = frozenset(range(1000, 1016)) | {e.ws_close_code for e in errors.reasons().values()}


def close_code_label(code: int) -> str:
    """The ``code`` label of a WebSocket session that ended with ``code``."""
    return str(code) if code in _CLOSE_CODES else "other"


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The process beside the sessions, as the adapter's scrape has it: resident memory and
        # open descriptors against sessions_active is how an operator reads memory per session
        # and spots leaked sockets; read from /proc at scrape time, nothing per message.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
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
            # Counted when the new upstream is opened; the client's FAILOVER notice follows
            # once it answers.
            "Upstream streams (STT) and contexts (TTS) reopened after their adapter failed",
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

    def session_opened(self, kind: str) -> float:
        """An admitted session of ``kind`` begins; returns its start for ``session_closed``."""
        self.sessions_active.labels(kind=kind).inc()
        return time.monotonic()

    def session_closed(self, kind: str, code: str, opened: float) -> None:
        """The session of ``kind`` that began at ``opened`` ended with ``code`` (a bounded
        value: ``close_code_label``'s, a gRPC status code's name, an HTTP status, "aborted")."""
        self.sessions_active.labels(kind=kind).dec()
        self.sessions_ended.labels(kind=kind, code=code).inc()
        self.session_seconds.labels(kind=kind).observe(time.monotonic() - opened)

    def session_refused(self, kind: str, reason: str) -> None:
        """The WebSocket session of ``kind`` counted open at its upgrade was refused at its
        start (a new session over the key's per-minute limit: a socket tells a new session
        from a resume only by its first message): a refusal, like one at the upgrade."""
        self.sessions_active.labels(kind=kind).dec()
        self.refused.labels(reason=reason).inc()

    def watch_decoders(self, pool: DecoderPool) -> None:
        """The upload decoders' counts, read from ``pool`` at scrape time."""
        self.registry.register(_DecoderCollector(pool))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _DecoderCollector(Collector):
    """POST /v1/stt's decoder processes (gateway/http/decoder_pool.py)."""

    def __init__(self, pool: DecoderPool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        pool = self._pool
        busy = GaugeMetricFamily(
            "voxwire_gateway_upload_decoders_busy",
            "Upload decoder processes decoding now (at most max_decoders)",
            value=pool.busy,
        )
        idle = GaugeMetricFamily(
            "voxwire_gateway_upload_decoders_idle",
            "Upload decoder processes ready for the next upload (spare_decoders started ahead "
            "of need, and those kept after a clean end)",
            value=pool.idle,
        )
        started = CounterMetricFamily(
            "voxwire_gateway_upload_decoders_started",
            "Upload decoder processes started (spares ahead of need; one is kept for the next "
            "upload after a clean end)",
            value=pool.spawned,
        )
        failed = CounterMetricFamily(
            "voxwire_gateway_upload_decoders_failed",
            "Upload decoders that failed their upload: crashed (its process died) or stalled",
            labels=["how"],
        )
        for how, count in sorted(pool.failed.items()):
            failed.add_metric([how], count)
        stderr = CounterMetricFamily(
            "voxwire_gateway_upload_decoder_stderr_lines",
            "Lines the upload decoders wrote to stderr (logged in bursts, not one by one)",
            value=pool.stderr_lines,
        )
        return iter((busy, idle, started, failed, stderr))

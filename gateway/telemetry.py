"""Tracing for the gateway: a span per edge session, W3C trace context in and out.

Every session (a WebSocket, an HTTP request, a call on the gRPC front) runs inside one span
that continues the client's trace when it sent a ``traceparent`` (the WebSocket handshake's or
the HTTP request's headers, the gRPC call's metadata; W3C Trace Context, section 3), and the
gateway's own context goes upstream in the adapter call's metadata, so one trace spans
client -> gateway -> adapter -> Triton (the adapter continues it the same way,
``inference_adapter/telemetry.py``).

The exporter is chosen by configuration (``GatewayConfig.telemetry``):
- ``none`` (default): a no-op tracer. Its spans carry the client's context unchanged, so a
  client's trace still reaches the adapter, and the gateway pays a header parse per session.
- ``console``: spans printed to stdout (development).
- ``otlp``: OTLP/gRPC to ``otlp_endpoint`` (needs the ``otlp`` extra).

Metrics stay in Prometheus form (``gateway/metrics.py``, ``GET /metrics``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
# The W3C Trace Context fields (traceparent, tracestate): the only metadata the gateway adds
# to an adapter call on a client's behalf.
TRACE_FIELDS = frozenset(_PROPAGATOR.fields)
MODES = ("none", "console", "otlp")


def tracer_provider(mode: str, otlp_endpoint: str) -> Any:
    """The tracer provider for ``mode``. Raises ValueError on an unknown mode."""
    if mode == "none":
        return trace.NoOpTracerProvider()
    if mode not in MODES:
        raise ValueError(f"unknown telemetry mode {mode!r} ({', '.join(MODES)})")
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "voxwire-gateway"}))
    if mode == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True))
        )
    return provider


def trace_carrier(pairs: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    """The trace context fields among header or metadata ``pairs`` (names case-insensitive,
    binary values ignored)."""
    carrier: dict[str, str] = {}
    for name, value in pairs:
        lowered = name.lower()
        if lowered in TRACE_FIELDS and isinstance(value, str):
            carrier[lowered] = value
    return carrier


class GatewayTracing:
    """The gateway's tracer. A provider passed in (a test's, an embedding application's) wins
    over the configured mode; the configured one is shut down with ``shutdown``."""

    def __init__(self, mode: str = "none", otlp_endpoint: str = "", provider: Any = None) -> None:
        self._owned = provider is None
        self._provider = provider if provider is not None else tracer_provider(mode, otlp_endpoint)
        self.tracer = self._provider.get_tracer("voxwire.gateway")
        # No spans are recorded: a session holds no span and no context of its own (memory per
        # idle session counts), only the client's trace context when it sent one.
        self._noop = isinstance(self._provider, trace.NoOpTracerProvider)

    def shutdown(self) -> None:
        if self._owned and hasattr(self._provider, "shutdown"):
            self._provider.shutdown()

    @contextlib.contextmanager
    def session_span(
        self,
        name: str,
        carrier: Mapping[str, str],
        attributes: Mapping[str, str | int] | None = None,
    ) -> Iterator[trace.Span]:
        """A SERVER span for one session, current while the block runs, child of the trace
        context in ``carrier`` when it holds a valid one (else a new trace). With no recording
        provider, the client's context itself is current (what goes upstream is the same)."""
        if self._noop and not carrier:
            yield trace.INVALID_SPAN
            return
        token = otel_context.attach(_PROPAGATOR.extract(carrier))
        try:
            if self._noop:
                yield trace.get_current_span()
                return
            with self.tracer.start_as_current_span(
                name, kind=trace.SpanKind.SERVER, attributes=attributes
            ) as span:
                yield span
        finally:
            otel_context.detach(token)


def upstream_trace_metadata() -> tuple[tuple[str, str], ...]:
    """The current trace context (the session's span, or the client's context when the
    gateway does not trace) as gRPC metadata for an adapter call."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return tuple(carrier.items())

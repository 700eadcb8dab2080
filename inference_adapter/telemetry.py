"""OpenTelemetry for the adapter: a span per stream, stage metrics, W3C trace context.

The exporter is chosen by configuration:
- ``none`` (default): no-op tracer and meter providers; the hot path pays a few attribute
  look-ups and nothing else.
- ``console``: spans and metrics printed to stdout (development).
- ``otlp``: OTLP/gRPC to ``otlp_endpoint`` (needs the ``otlp`` extra).
- ``prometheus``: a scrape endpoint on 127.0.0.1:``prometheus_port``.

W3C trace context (``traceparent``/``tracestate``) is read from the incoming gRPC metadata and
written into the metadata of the ModelStreamInfer call, so a Triton started with
``--trace-config mode=opentelemetry`` continues the same trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.propagators.textmap import DefaultGetter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from inference_adapter.config import AdapterConfig
from voxwire.timings import STAGES

if TYPE_CHECKING:
    from inference_adapter.triton.replicas import ReplicaPool

_PROPAGATOR = TraceContextTextMapPropagator()
_GETTER = DefaultGetter()


class Telemetry:
    def __init__(
        self,
        config: AdapterConfig,
        *,
        tracer_provider: Any | None = None,
        meter_provider: Any | None = None,
    ) -> None:
        """Providers passed in (an embedding application's, or a test's) win over the config."""
        self._shutdown: list[Any] = []
        self._scrape_server: Any = None
        if tracer_provider is None or meter_provider is None:
            configured = self._providers(config)
            tracer_provider = tracer_provider or configured[0]
            meter_provider = meter_provider or configured[1]
        self.tracer = tracer_provider.get_tracer("voxwire.inference_adapter")
        meter = meter_provider.get_meter("voxwire.inference_adapter")
        self.active_streams = meter.create_up_down_counter(
            "voxwire.streams.active", description="Open streams by service (stt, tts)"
        )
        # What holds a replica slot, so a leak on either side shows.
        self.sequences = meter.create_up_down_counter(
            "voxwire.sequences.active", description="Open STT model sequences by model and replica"
        )
        self.contexts = meter.create_up_down_counter(
            "voxwire.contexts.active", description="Open TTS contexts by model and replica"
        )
        self.stage_latency = meter.create_histogram(
            "voxwire.stage.duration", unit="ms", description="Time per stage, per utterance/context"
        )
        self.errors = meter.create_counter("voxwire.errors", description="Errors by reason")
        self.failovers = meter.create_counter(
            "voxwire.failovers",
            description="Streams (STT) and contexts (TTS) moved off a failed replica, by model",
        )
        self.enabled = not isinstance(meter_provider, metrics.NoOpMeterProvider)
        self._meter = meter

    def observe_triton_calls(self, pool: ReplicaPool) -> None:
        """``voxwire.triton.calls``: Triton calls ended, by replica and how (``finished``:
        half-closed and ended by Triton; ``cancelled``: what Triton had in flight on it was
        cancelled; ``failed``: broken under its half-close). Triton 2.51 can crash when many
        streaming calls are cancelled (docs/fuzzing.md, defect 9), so the share of cancelled
        calls is worth watching."""

        def per_replica(counts: str, label: str) -> Callable[[CallbackOptions], Iterator[Any]]:
            def observe(_options: CallbackOptions) -> Iterator[Observation]:
                for replica in pool.replicas:
                    for key, count in getattr(replica, counts).items():
                        yield Observation(count, {"replica": replica.name, label: key})

            return observe

        self._meter.create_observable_counter(
            "voxwire.triton.calls",
            callbacks=[per_replica("calls_ended", "ended")],
            description="Triton calls ended, by replica and how (finished, cancelled, failed)",
        )
        self._meter.create_observable_counter(
            "voxwire.triton.cancels",
            callbacks=[per_replica("calls_cancelled", "why")],
            description="Triton calls cancelled, by replica and why (the adapter's path)",
        )

    def _providers(self, config: AdapterConfig) -> tuple[Any, Any]:
        mode = config.telemetry
        if mode == "none":
            return trace.NoOpTracerProvider(), metrics.NoOpMeterProvider()
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": "voxwire-inference-adapter"})
        tracer_provider = TracerProvider(resource=resource)
        readers: list[Any] = []
        if mode == "console":
            from opentelemetry.sdk.metrics.export import (
                ConsoleMetricExporter,
                PeriodicExportingMetricReader,
            )
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(), 10_000))
        elif mode == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            tracer_provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=config.otlp_endpoint, insecure=True))
            )
            readers.append(
                PeriodicExportingMetricReader(
                    OTLPMetricExporter(endpoint=config.otlp_endpoint, insecure=True)
                )
            )
        elif mode == "prometheus":
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import start_http_server

            httpd, _thread = start_http_server(config.prometheus_port, addr="127.0.0.1")
            self._scrape_server = httpd
            readers.append(PrometheusMetricReader())
        else:
            raise ValueError(f"unknown telemetry mode {mode!r} (none, console, otlp, prometheus)")
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        self._shutdown += [tracer_provider, meter_provider]
        return tracer_provider, meter_provider

    def shutdown(self) -> None:
        for provider in self._shutdown:
            provider.shutdown()
        if self._scrape_server is not None:
            # prometheus_client serves from a daemon thread: stop it and free the port.
            self._scrape_server.shutdown()
            self._scrape_server.server_close()

    @contextlib.contextmanager
    def stream_span(
        self, name: str, invocation_metadata: Sequence[tuple[str, Any]] | None
    ) -> Iterator[trace.Span]:
        """A span for one stream, child of the caller's W3C trace context if it sent one."""
        carrier = {k: v for k, v in (invocation_metadata or ()) if isinstance(v, str)}
        parent = _PROPAGATOR.extract(carrier, getter=_GETTER)
        token = otel_context.attach(parent)
        try:
            with self.tracer.start_as_current_span(name, kind=trace.SpanKind.SERVER) as span:
                yield span
        finally:
            otel_context.detach(token)

    def outgoing_metadata(self, span: trace.Span) -> list[tuple[str, str]]:
        """traceparent/tracestate for the call to Triton (empty when tracing is off)."""
        if not span.get_span_context().is_valid:
            return []
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        return list(carrier.items())

    def record_stages(
        self, timings: Any, attributes: dict[str, str], *, span: trace.Span | None, event: str
    ) -> None:
        """One utterance / context done (a StageTimings message): histogram points, and a span
        event on the stream's span carrying every stage in microseconds."""
        if not self.enabled:
            return
        if span is not None and span.is_recording():
            stages = {f"voxwire.{stage}_us": getattr(timings, fld) for stage, fld in STAGES.items()}
            span.add_event(event, {**stages, "voxwire.total_us": timings.total_us})
        for stage, fld in STAGES.items():
            self.stage_latency.record(getattr(timings, fld) / 1000, {**attributes, "stage": stage})
        if timings.HasField("first_response_us"):
            self.stage_latency.record(
                timings.first_response_us / 1000, {**attributes, "stage": "first"}
            )

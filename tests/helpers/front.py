"""The instrumented edge: a real adapter that records every call reaching it and a gateway in
front of it with its gRPC front, both tracing into in-memory exporters (same process).

``CallRecorder`` is a grpc.aio server interceptor on the real adapter: it records each call's
method, the deadline the adapter saw and the metadata, so a test can say "a refused request
never reached the adapter" and "the client's deadline and trace context did". The keys file is
reloaded by the gateway every 0.1 s, so revocation tests wait for the gateway's own reload.
Also here: what a gRPC client of the front does (metadata, configs, the rich error).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from grpc_status import rpc_status
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.auth.keys import create_key
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from gateway.upstream.pool import POOL_CALL_METADATA
from inference_adapter.config import AdapterConfig
from inference_adapter.server import AdapterServer
from inference_adapter.telemetry import Telemetry
from localstack.triton import TritonServer
from tests.helpers.edge import auth_config
from tests.helpers.status import RichError, unpack
from voxwire.v1 import audio_pb2, transcription_pb2, transcription_pb2_grpc

HEALTH_PREFIX = "/grpc.health.v1.Health/"
((POOL_KEY, POOL_VALUE),) = POOL_CALL_METADATA


@dataclass(frozen=True)
class RecordedCall:
    method: str
    deadline_s: float | None  # what the adapter's context said was left at the call's start
    metadata: dict[str, str]


class CallRecorder(grpc.aio.ServerInterceptor):
    """Records every call that reaches the server's handlers (health probes aside)."""

    def __init__(self) -> None:
        self.calls: list[RecordedCall] = []

    def contract_calls(self) -> list[RecordedCall]:
        """The calls a client's request made: not health probes, nor the gateway pool's own
        capabilities calls (each adapter's, every 30 s: one fell in a test's window in CI)."""
        return [
            c
            for c in self.calls
            if not c.method.startswith(HEALTH_PREFIX) and c.metadata.get(POOL_KEY) != POOL_VALUE
        ]

    async def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method  # type: ignore[attr-defined]
        for kind in ("unary_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                return handler._replace(**{kind: self._wrap(method, behavior)})
        return handler

    def _wrap(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def recorded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            self.calls.append(RecordedCall(method, context.time_remaining(), metadata))
            return await behavior(request, context)

        return recorded


@dataclass(eq=False)
class InstrumentedEdge:
    adapter: AdapterServer
    gateway: GatewayServer
    recorder: CallRecorder
    adapter_spans: InMemorySpanExporter
    gateway_spans: InMemorySpanExporter
    keys_file: Path
    key: str
    keys: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def ws(self) -> str:
        return self.gateway.url.replace("http", "ws", 1)

    @property
    def grpc(self) -> str:
        return self.gateway.grpc_address

    def new_key(self, name: str, **kwargs: Any) -> str:
        """A new key in the file, loaded by the gateway at once."""
        key, _ = create_key(
            self.keys_file, name=name, now=datetime.datetime.now(datetime.UTC), **kwargs
        )
        self.gateway.auth.keys.reload_if_changed()
        return key

    def spans(self) -> tuple[list[ReadableSpan], list[ReadableSpan]]:
        return list(self.gateway_spans.get_finished_spans()), list(
            self.adapter_spans.get_finished_spans()
        )


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def start_instrumented_edge(
    triton: TritonServer, directory: Path, **gateway_overrides: Any
) -> AsyncIterator[InstrumentedEdge]:
    recorder = CallRecorder()
    adapter_provider, adapter_spans = _provider()
    # Tolerant readiness probes, as tests/inference_adapter's: the machine may be loaded.
    adapter_config = AdapterConfig(
        listen="127.0.0.1:0", triton_urls=(triton.grpc_url,), health_timeout_seconds=1.0
    )
    adapter = AdapterServer(
        adapter_config,
        telemetry=Telemetry(adapter_config, tracer_provider=adapter_provider),
        interceptors=(recorder,),
    )
    await adapter.start()
    keys_file = directory / "keys.toml"
    key, _ = create_key(keys_file, name="front", now=datetime.datetime.now(datetime.UTC))
    auth = replace(auth_config(keys_file), keys_reload_interval_s=0.1)
    gateway_provider, gateway_spans = _provider()
    config = GatewayConfig(
        listen="127.0.0.1:0",
        grpc_listen="127.0.0.1:0",
        adapters=(adapter.address,),
        auth=auth,
        **gateway_overrides,
    )
    gateway = GatewayServer(config, tracer_provider=gateway_provider)
    try:
        await gateway.start()
        yield InstrumentedEdge(
            adapter, gateway, recorder, adapter_spans, gateway_spans, keys_file, key
        )
    finally:
        await gateway.stop(grace=1.0)
        await adapter.stop(grace=1.0)
        adapter_provider.shutdown()
        gateway_provider.shutdown()


# -- a gRPC client of the front ------------------------------------------------------------------


def bearer(key: str, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"), *extra)


def stt_config(
    rate: int = 16000, model: str = "stt_pocketsphinx"
) -> transcription_pb2.TranscriptionConfig:
    return transcription_pb2.TranscriptionConfig(
        model=model,
        audio_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate, channels=1
        ),
    )


async def rich_error(call: Any) -> RichError:
    """The voxwire error a finished call ended with, read with grpcio-status."""
    status = await rpc_status.aio.from_call(call)
    assert status is not None, (await call.code(), await call.details())
    return unpack(status)


async def wait_until(predicate: Callable[[], bool], within_s: float, step_s: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``within_s`` passes; whether it held."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step_s)
    return True


def metadata_of(pairs: Sequence[tuple[str, str]] | None) -> dict[str, str]:
    return dict(pairs or ())


@contextlib.asynccontextmanager
async def open_grpc_session(front: InstrumentedEdge, key: str) -> AsyncIterator[None]:
    """A gRPC STT call of ``key`` held open (it holds one of the key's concurrent slots)."""
    async with grpc.aio.insecure_channel(front.grpc) as channel:
        call = transcription_pb2_grpc.TranscriptionStub(channel).StreamingTranscribe(
            metadata=bearer(key), timeout=60
        )
        await call.write(transcription_pb2.StreamingTranscribeRequest(config=stt_config()))
        assert (await call.read()).HasField("started")
        try:
            yield
        finally:
            call.cancel()

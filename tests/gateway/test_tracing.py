"""One trace across the hops: the client's trace context -> the gateway's session span -> the
adapter's stream span, on a WebSocket, an HTTP request and a gRPC call. Both servers trace
into in-memory exporters (the instrumented edge, same process); the context crosses the hop
only in the gRPC metadata, as between processes (the adapter reads it from the metadata, and
its span's parent is marked remote)."""

from __future__ import annotations

import json
import secrets

import aiohttp
import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from gateway.telemetry import GatewayTracing, upstream_trace_metadata
from localstack.client import collect, write_all
from tests.gateway.conftest import InstrumentedEdge
from tests.helpers.front import bearer, stt_config, wait_until
from tests.helpers.speech_fixtures import SPEECH_DIR
from tests.helpers.wavio import read_wav
from voxwire.v1 import transcription_pb2, transcription_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUERY = "model=stt_pocketsphinx&encoding=pcm_s16le&sample_rate=16000"


def client_context() -> tuple[str, int, int]:
    """A client's traceparent (W3C Trace Context, version 00, sampled) and its ids."""
    trace_id, span_id = secrets.randbits(128) | 1, secrets.randbits(64) | 1
    return f"00-{trace_id:032x}-{span_id:016x}-01", trace_id, span_id


def one_second() -> bytes:
    pcm, _ = read_wav(SPEECH_DIR / "call_me_back.wav")
    return pcm.tobytes()[:32000]


async def spans_of_trace(
    front: InstrumentedEdge, trace_id: int, gateway_name: str, adapter_name: str
) -> tuple[ReadableSpan, ReadableSpan]:
    """The gateway's and the adapter's span in trace ``trace_id`` (waits for both to end)."""

    def find() -> tuple[ReadableSpan | None, ReadableSpan | None]:
        gateway, adapter = front.spans()
        mine = [s for s in gateway if s.context.trace_id == trace_id and s.name == gateway_name]
        theirs = [s for s in adapter if s.context.trace_id == trace_id and s.name == adapter_name]
        return (mine[0] if mine else None), (theirs[0] if theirs else None)

    assert await wait_until(lambda: None not in find(), 5.0), (front.spans(), trace_id)
    gateway_span, adapter_span = find()
    assert gateway_span is not None and adapter_span is not None
    return gateway_span, adapter_span


def assert_one_trace(
    gateway_span: ReadableSpan, adapter_span: ReadableSpan, client_span_id: int | None
) -> None:
    assert gateway_span.kind is SpanKind.SERVER and adapter_span.kind is SpanKind.SERVER
    if client_span_id is not None:
        assert gateway_span.parent is not None and gateway_span.parent.span_id == client_span_id
    # The adapter's stream is a child of the gateway's session, through the metadata.
    assert adapter_span.parent is not None and adapter_span.parent.is_remote
    assert adapter_span.parent.span_id == gateway_span.context.span_id
    assert adapter_span.context.trace_id == gateway_span.context.trace_id


async def test_a_websocket_session_is_one_trace_from_the_client_to_the_adapter(
    front: InstrumentedEdge,
):
    traceparent, trace_id, span_id = client_context()
    headers = {**bearer_header(front.key), "traceparent": traceparent}
    async with aiohttp.ClientSession() as http:
        url = f"{front.ws}/v1/stt/stream?{QUERY}"
        async with http.ws_connect(url, headers=headers) as ws:
            await ws.send_bytes(one_second())
            await ws.send_str(json.dumps({"close": {}}))
            kinds = [next(iter(json.loads(m.data))) async for m in ws if m.type.name == "TEXT"]
    assert kinds[-1] == "summary", kinds
    gateway_span, adapter_span = await spans_of_trace(
        front, trace_id, "GET /v1/stt/stream", "voxwire.stt.stream"
    )
    assert_one_trace(gateway_span, adapter_span, span_id)
    assert gateway_span.attributes is not None
    assert gateway_span.attributes["http.response.status_code"] == 101


async def test_an_http_request_is_one_trace(front: InstrumentedEdge):
    traceparent, trace_id, span_id = client_context()
    headers = {**bearer_header(front.key), "traceparent": traceparent}
    async with aiohttp.ClientSession() as http:
        url = f"{front.url}/v1/tts?model=tts_espeak&sample_rate=16000"
        async with http.post(url, data="Call me back.", headers=headers) as resp:
            assert resp.status == 200
            await resp.read()
    gateway_span, adapter_span = await spans_of_trace(
        front, trace_id, "POST /v1/tts", "voxwire.tts.stream"
    )
    assert_one_trace(gateway_span, adapter_span, span_id)


@pytest.mark.parametrize("from_client", [True, False], ids=["client-trace", "new-trace"])
async def test_a_grpc_call_is_one_trace(front: InstrumentedEdge, from_client: bool):
    traceparent, trace_id, span_id = client_context()
    metadata = bearer(front.key, *([("traceparent", traceparent)] if from_client else []))
    async with grpc.aio.insecure_channel(front.grpc) as channel:
        call = transcription_pb2_grpc.TranscriptionStub(channel).StreamingTranscribe(
            metadata=metadata, timeout=30
        )
        messages = [
            transcription_pb2.StreamingTranscribeRequest(config=stt_config()),
            transcription_pb2.StreamingTranscribeRequest(audio=one_second()),
        ]
        await write_all(call, messages)
        assert (await collect(call)).code == grpc.StatusCode.OK
    name = "grpc /voxwire.v1.Transcription/StreamingTranscribe"
    if not from_client:
        # The gateway started the trace: find it by its newest span of this name.
        gateway, _ = front.spans()
        trace_id = [s for s in gateway if s.name == name][-1].context.trace_id
    gateway_span, adapter_span = await spans_of_trace(front, trace_id, name, "voxwire.stt.stream")
    assert_one_trace(gateway_span, adapter_span, span_id if from_client else None)
    if not from_client:
        assert gateway_span.parent is None  # a root span: a new trace
    assert gateway_span.attributes is not None
    assert gateway_span.attributes["voxwire.key_id"] == front.key.split("_")[1]


def bearer_header(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_without_tracing_the_clients_context_goes_upstream_unchanged() -> None:
    """The default (``telemetry = "none"``): no span of the gateway's own, the client's
    ``traceparent`` passed on as it came, and nothing made up when the client sent none."""
    tracing = GatewayTracing("none")
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracing.session_span("GET /v1/stt/stream", {"traceparent": traceparent}) as span:
        assert dict(upstream_trace_metadata()) == {"traceparent": traceparent}
        assert not span.is_recording()
    with tracing.session_span("GET /v1/stt/stream", {}) as span:
        assert upstream_trace_metadata() == ()
        assert not span.get_span_context().is_valid
    assert upstream_trace_metadata() == ()  # nothing left current after the session

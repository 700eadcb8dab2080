"""The gateway's gRPC front end to end: real grpc.aio clients -> the gateway -> the adapter ->
Triton. What comes back is the adapter's answer (its results, statuses and reasons, its stage
timings within the gateway's); what the front adds is auth, limits, the client's deadline and
trace context, cancel and drain, and failover (tests/gateway/test_adapter_failover.py)."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.config import GatewayConfig
from gateway.grpc_front.call_port import UPSTREAM_DEADLINE_MARGIN_S
from gateway.server import GatewayServer
from inference_adapter.server import AdapterServer
from localstack.client import collect, transcribe, write_all
from tests.gateway.conftest import Edge, InstrumentedEdge
from tests.helpers.front import bearer, rich_error, stt_config, wait_until
from tests.helpers.raw_calls import bytes_taken_unread, plain_burst_after_a_bad_chunk
from tests.helpers.speech_fixtures import SPEECH_DIR, TRANSCRIPTS
from tests.helpers.wavio import read_wav
from tests.helpers.wer import word_error_rate
from voxwire.timings import SERVER_TIMING_TRAILER, TIMINGS_TRAILER
from voxwire.v1 import (
    audio_pb2,
    capabilities_pb2,
    capabilities_pb2_grpc,
    synthesis_pb2,
    synthesis_pb2_grpc,
    transcription_pb2,
    transcription_pb2_grpc,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

SttReq = transcription_pb2.StreamingTranscribeRequest
TtsReq = synthesis_pb2.StreamingSynthesizeRequest
# How much gRPC core may round a deadline up when it encodes grpc-timeout.
ROUNDING_S = 0.5
# The drain test's grace: room for a one-second transcription on a loaded machine.
GRACE_S = 6.0
PCM16 = audio_pb2.AudioFormat(
    encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000, channels=1
)


def tts_messages(text: str) -> list[TtsReq]:
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000)
    return [
        TtsReq(
            context_id="c1",
            open=synthesis_pb2.SynthesisContextConfig(
                model="tts_espeak", output_format=fmt, word_timestamps=True
            ),
        ),
        TtsReq(context_id="c1", append=synthesis_pb2.AppendText(text=text)),
        TtsReq(context_id="c1", close=synthesis_pb2.CloseContext()),
    ]


async def test_a_file_is_transcribed_through_the_front_with_the_adapters_trailers(edge: Edge):
    pcm, rate = read_wav(SPEECH_DIR / "call_me_back.wav")
    async with grpc.aio.insecure_channel(edge.server.grpc_address) as channel:
        outcome = await transcribe(
            channel, pcm.tobytes(), PCM16, model="stt_pocketsphinx", metadata=bearer(edge.key)
        )
    assert outcome.code == grpc.StatusCode.OK, outcome.details
    finals = [r.result.transcript for r in outcome.responses if r.result.is_final]
    # One word of slack: this checks the transport (tests/gateway/test_stt_socket.py).
    assert word_error_rate(TRANSCRIPTS["call_me_back.wav"], " ".join(finals)) <= 0.125, finals
    # The adapter's trailers, unchanged: its stage timings, its Server-Timing.
    assert outcome.timings.compute_us > 0
    assert "compute;dur=" in str(outcome.trailers[SERVER_TIMING_TRAILER])
    assert outcome.responses[-1].HasField("summary")


async def test_synthesis_streams_audio_through_the_front(edge: Edge):
    async with grpc.aio.insecure_channel(edge.server.grpc_address) as channel:
        stub = synthesis_pb2_grpc.SynthesisStub(channel)
        call = stub.StreamingSynthesize(metadata=bearer(edge.key), timeout=60)
        writer = asyncio.create_task(write_all(call, tts_messages("Call me back tomorrow.")))
        outcome = await collect(call)
        await writer
    assert outcome.code == grpc.StatusCode.OK, outcome.details
    chunks = outcome.of("audio")
    assert [c.sequence_number for c in chunks] == list(range(1, len(chunks) + 1))
    assert sum(len(c.audio) for c in chunks) > 16000  # more than half a second of 16 kHz PCM16
    assert outcome.of("done") and outcome.of("words") and TIMINGS_TRAILER in outcome.trailers


async def test_capabilities_through_the_front_are_the_adapters(
    edge: Edge, edge_adapter: AdapterServer
):
    request = capabilities_pb2.GetCapabilitiesRequest()
    async with grpc.aio.insecure_channel(edge.server.grpc_address) as channel:
        front = await capabilities_pb2_grpc.CapabilitiesStub(channel).GetCapabilities(
            request, metadata=bearer(edge.key), timeout=5
        )
    async with grpc.aio.insecure_channel(edge_adapter.address) as channel:
        direct = await capabilities_pb2_grpc.CapabilitiesStub(channel).GetCapabilities(
            request, timeout=5
        )
    assert front == direct
    assert {"stt_pocketsphinx", "tts_espeak"} <= {m.name for m in front.models}


async def test_the_adapters_error_passes_through_unchanged(edge: Edge, edge_adapter: AdapterServer):
    """A config the adapter refuses: the same code, details, reason and trailers as a call
    made to the adapter directly."""

    async def refused(address: str, metadata: tuple) -> tuple:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = transcription_pb2_grpc.TranscriptionStub(channel)
            call = stub.StreamingTranscribe(metadata=metadata, timeout=10)
            await call.write(SttReq(config=stt_config(model="no_such_model")))
            error = await rich_error(call)
            trailers = dict(await call.trailing_metadata())
            return await call.code(), await call.details(), error, sorted(trailers)

    front = await refused(edge.server.grpc_address, bearer(edge.key))
    direct = await refused(edge_adapter.address, ())
    assert front == direct
    code, _, error, trailer_keys = front
    assert code == grpc.StatusCode.NOT_FOUND and error.reason == "UNKNOWN_MODEL"
    assert TIMINGS_TRAILER in trailer_keys


async def test_a_plain_client_writing_fast_gets_the_reason_through_the_front_and_direct(
    edge: Edge, edge_adapter: AdapterServer
):
    """A plain grpc.aio client sending a file as fast as it can after a bad chunk: its writes
    wait on the window when the stream fails, and grpc.aio would report INTERNAL "Internal
    error from Core" (grpc/grpc#36066) but that the server reads and drops what it still
    sends before the status (voxwire.stream_write, DRAIN_S)."""
    for address, metadata in (
        (edge.server.grpc_address, bearer(edge.key)),
        (edge_adapter.address, ()),
    ):
        async with grpc.aio.insecure_channel(address) as channel:
            for _ in range(3):
                outcome = await plain_burst_after_a_bad_chunk(channel, metadata)
                assert outcome.reason == "MISALIGNED_AUDIO", (address, outcome)


async def test_health_and_reflection_need_no_key(edge: Edge):
    async with grpc.aio.insecure_channel(edge.server.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "voxwire.v1.Transcription", "voxwire.v1.Synthesis"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        reply = await call.read()
        call.cancel()
    names = {s.name for s in reply.list_services_response.service}
    assert {
        "voxwire.v1.Transcription",
        "voxwire.v1.Synthesis",
        "voxwire.v1.Capabilities",
        "grpc.health.v1.Health",
    } <= names


async def test_a_client_cancel_cancels_the_upstream_stream_at_once(
    edge: Edge, edge_adapter: AdapterServer
):
    runtime = edge_adapter.runtime
    before = runtime.active_streams
    async with grpc.aio.insecure_channel(edge.server.grpc_address) as channel:
        stub = transcription_pb2_grpc.TranscriptionStub(channel)
        call = stub.StreamingTranscribe(metadata=bearer(edge.key), timeout=30)
        await call.write(SttReq(config=stt_config()))
        await call.write(SttReq(audio=bytes(3200)))
        assert await wait_until(lambda: runtime.active_streams == before + 1, 5.0)
        call.cancel()
        # The gateway cancels its upstream call as its handler is cancelled; the adapter's
        # stream ends (and frees its Triton sequence) well within a second.
        assert await wait_until(lambda: runtime.active_streams == before, 1.0)
    assert await wait_until(lambda: len(edge.server.registry) == 0, 1.0)


async def test_the_clients_deadline_and_trace_context_go_upstream(front: InstrumentedEdge):
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    metadata = bearer(front.key, ("traceparent", traceparent))
    async with grpc.aio.insecure_channel(front.grpc) as channel:
        stub = capabilities_pb2_grpc.CapabilitiesStub(channel)
        await stub.GetCapabilities(
            capabilities_pb2.GetCapabilitiesRequest(), metadata=metadata, timeout=7.0
        )
        call = transcription_pb2_grpc.TranscriptionStub(channel).StreamingTranscribe(
            metadata=metadata, timeout=20.0
        )
        await call.write(SttReq(config=stt_config()))
        await call.done_writing()
        await collect(call)
    unary, stream = front.recorder.contract_calls()[-2:]
    assert unary.method == "/voxwire.v1.Capabilities/GetCapabilities"
    assert stream.method == "/voxwire.v1.Transcription/StreamingTranscribe"
    # What the adapter saw left of the client's deadline: less what the hops took, plus what
    # gRPC core adds when it rounds a timeout up for its grpc-timeout header (without the
    # gateway passing it on, the adapter would see no deadline at all: None). A stream's is
    # the client's plus UPSTREAM_DEADLINE_MARGIN_S, so the client's own deadline ends the call
    # first: before, the two fell together, and an upstream that failed first was answered
    # INTERNAL "Deadline Exceeded" (docs/fuzzing.md, 2026-12-03).
    assert unary.deadline_s is not None and 5.0 < unary.deadline_s <= 7.0 + ROUNDING_S
    margin = UPSTREAM_DEADLINE_MARGIN_S
    assert stream.deadline_s is not None
    assert 20.0 + ROUNDING_S < stream.deadline_s <= 20.0 + margin + ROUNDING_S
    # The client's trace goes on (the gateway's span is the adapter's parent); the key does not
    # go upstream.
    for recorded in (unary, stream):
        assert recorded.metadata["traceparent"].split("-")[1] == traceparent.split("-")[1]
        assert recorded.metadata["traceparent"] != traceparent
        assert "authorization" not in recorded.metadata


async def test_a_drain_refuses_new_calls_lets_short_ones_finish_and_ends_the_rest(
    front: InstrumentedEdge, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="gateway.server")
    server = GatewayServer(
        GatewayConfig(
            listen="127.0.0.1:0",
            grpc_listen="127.0.0.1:0",
            adapters=(front.adapter.address,),
            auth=front.gateway.config.auth,
        )
    )
    await server.start()
    runtime = front.adapter.runtime
    before = runtime.active_streams
    pcm, _ = read_wav(SPEECH_DIR / "call_me_back.wav")
    try:
        async with grpc.aio.insecure_channel(server.grpc_address) as channel:
            stub = transcription_pb2_grpc.TranscriptionStub(channel)
            short = stub.StreamingTranscribe(metadata=bearer(front.key), timeout=30)
            long = stub.StreamingTranscribe(metadata=bearer(front.key), timeout=30)
            for call in (short, long):
                await call.write(SttReq(config=stt_config()))
            assert await wait_until(lambda: runtime.active_streams == before + 2, 5.0)
            stopping = asyncio.create_task(server.stop(grace=GRACE_S))
            await asyncio.sleep(0.1)
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            late = stub.StreamingTranscribe(metadata=bearer(front.key), timeout=10)
            await late.write(SttReq(config=stt_config()))
            error = await rich_error(late)
            assert (error.code, error.reason, error.retryable) == (
                grpc.StatusCode.UNAVAILABLE,
                "DRAINING",
                True,
            )
            # The short call ends within the grace, normally.
            await write_all(
                short, [SttReq(audio=pcm.tobytes()[i : i + 3200]) for i in range(0, 32000, 3200)]
            )
            assert (await collect(short)).code == grpc.StatusCode.OK
            # The long one (still open at the end of the grace) ends with DRAINING (read to
            # its end: gRPC delivers a status after the messages before it).
            drained = await collect(long)
            assert drained.of("started")
            # Told of the drain when it began, as the adapter's callers are (it said nothing
            # until the status): KIND_DRAINING with the grace left.
            [notice] = drained.of("notice")
            assert notice.kind == notice.KIND_DRAINING, notice
            assert 0 < notice.remaining.ToTimedelta().total_seconds() <= GRACE_S
            error = await rich_error(long)
            assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "DRAINING")
            await stopping
    finally:
        await server.stop()
    assert await wait_until(lambda: runtime.active_streams == before, 2.0)
    # The operator reads the drain in the log: its start, and how the open sessions ended.
    drain = [r.getMessage() for r in caplog.records if r.getMessage().startswith("drain")]
    assert drain[0] == f"drain started: 2 sessions open, grace {GRACE_S:g} s"
    assert drain[-1] == (
        "drain finished: 1 sessions ended by themselves, 1 closed at the grace "
        "(DRAINING: their clients resume elsewhere)"
    )


async def test_a_callers_deadline_ends_its_call_not_the_adapters_turn_in_the_pool(edge: Edge):
    """The caller's deadline goes upstream, and the upstream call ends with DEADLINE_EXCEEDED
    and no voxwire details: that is the caller's end, not the adapter's transport failing.
    Before the fix the gateway took the adapter out of its pool for it, and every session after
    got BACKEND_UNAVAILABLE until the health watch put it back (a fuzz run through the front)."""
    async with grpc.aio.insecure_channel(edge.server.grpc_address) as channel:
        stub = transcription_pb2_grpc.TranscriptionStub(channel)
        for _ in range(3):
            call = stub.StreamingTranscribe(metadata=bearer(edge.key), timeout=0.5)
            await call.write(SttReq(config=stt_config()))
            assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert all(adapter.serving for adapter in edge.server.pool.adapters)
        pcm, _ = read_wav(SPEECH_DIR / "call_me_back.wav")
        outcome = await transcribe(
            channel, pcm.tobytes()[:32000], PCM16, model="bench_stt", metadata=bearer(edge.key)
        )
    assert outcome.code == grpc.StatusCode.OK, outcome.details


async def test_a_client_faster_than_the_model_waits_after_a_bounded_amount(edge: Edge):
    # In 2 s: the front's share of a stream (gRPC's 64 KiB window), the session's upstream
    # outbox (256 KiB), the adapter's share (tests/inference_adapter/test_receive_window.py) and
    # what pocketsphinx took meanwhile: 600 KiB measured. Before, gRPC core's windows grown by
    # bandwidth-delay probing let the front and the adapter take 9.3 MiB.
    # Speech, over and over: pocketsphinx goes through silence much faster.
    pcm, _ = read_wav(SPEECH_DIR / "call_me_back.wav")
    audio = pcm.tobytes()
    chunks = [
        SttReq(audio=audio[i : i + 3200]).SerializeToString() for i in range(0, len(audio), 3200)
    ]
    first = SttReq(config=stt_config()).SerializeToString()
    async with grpc.aio.insecure_channel(edge.server.grpc_address) as channel:
        taken = await bytes_taken_unread(channel, first, chunks, metadata=bearer(edge.key))
    assert 0 < taken <= 2 * 1024 * 1024, f"the front took {taken:,} bytes before holding back"


@pytest.mark.parametrize(
    ("requests", "reason", "says"),
    [
        ([SttReq(audio=bytes(3200))], "CONFIG_REQUIRED", "must be its config"),
        (
            [SttReq(config=stt_config()), SttReq(config=stt_config())],
            "CONFIG_ALREADY_SET",
            "config may only be the first message",
        ),
    ],
)
async def test_the_fronts_errors_speak_of_the_contracts_messages(
    edge: Edge, requests: list, reason: str, says: str
):
    # They were the WebSocket's: "send start (or the config in the query string) first", to a
    # gRPC caller that has neither a start message nor a query string.
    async with grpc.aio.insecure_channel(edge.server.grpc_address) as channel:
        stub = transcription_pb2_grpc.TranscriptionStub(channel)
        call = stub.StreamingTranscribe(metadata=bearer(edge.key), timeout=10)
        for request in requests:
            await call.write(request)
        error = await rich_error(call)
        details = await call.details()
    assert error.reason == reason, error
    assert says in details and "start" not in details, details


async def test_a_fronts_continued_offset_past_any_stream_names_the_config_field(edge: Edge):
    config = stt_config()
    config.stream_offset_ms = 4_294_967_000
    async with grpc.aio.insecure_channel(edge.server.grpc_address) as channel:
        stub = transcription_pb2_grpc.TranscriptionStub(channel)
        call = stub.StreamingTranscribe(metadata=bearer(edge.key), timeout=10)
        await call.write(SttReq(config=config))
        error = await rich_error(call)
    assert error.reason == "INVALID_CONFIG", error
    assert error.violations == ("config.stream_offset_ms",), error

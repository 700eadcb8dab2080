"""Triton's sequence slots, seen from Triton's side (issue 8, defects 2, 5 and 7).

Against the session's second Triton (``variants_triton``), with test-only variants of bench_stt
(same code, another config): ``bench_stt_2slot`` has two sequence slots and a 120 s idle
timeout, so a slot the adapter fails to free stays taken for the whole session;
``bench_stt_idle`` forgets an idle sequence after 0.3 s; ``bench_stt_slow`` has two slots and
takes 0.9 s per batch. A slot is free when Triton answers a new sequence's START at once (within
one batch).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
import pytest_asyncio

from inference_adapter.config import AdapterConfig, Limits
from inference_adapter.server import AdapterServer
from inference_adapter.triton.stream import ModelStream
from localstack.client import StreamOutcome
from localstack.triton import TritonServer
from tests.helpers.raw_calls import TRANSCRIBE, raw_stream, read_rest
from tests.helpers.status import from_trailers
from tests.helpers.triton_models import HeldSequence, pending_requests, start_latency
from voxwire.v1 import (
    audio_pb2,
    synthesis_pb2,
    synthesis_pb2_grpc,
    transcription_pb2,
    transcription_pb2_grpc,
)

TReq = transcription_pb2.StreamingTranscribeRequest
SReq = synthesis_pb2.StreamingSynthesizeRequest
TWO_SLOTS = "bench_stt_2slot"
FORGETFUL = "bench_stt_idle"
SLOW = "bench_stt_slow"
CHUNK = np.zeros(1600, dtype="<i2").tobytes()  # 100 ms at 16 kHz
RESPONSE_TIMEOUT_S = 2.0


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def slots_adapter(variants_triton: TritonServer) -> AsyncIterator[AdapterServer]:
    server = AdapterServer(
        AdapterConfig(
            listen="127.0.0.1:0",
            triton_urls=(variants_triton.grpc_url,),
            model_response_timeout_seconds=RESPONSE_TIMEOUT_S,
            health_interval_seconds=0.2,
            limits=Limits(idle_timeout_seconds=5.0),
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


def config(model: str = TWO_SLOTS) -> TReq:
    return TReq(
        config=transcription_pb2.TranscriptionConfig(
            model=model,
            audio_format=audio_pb2.AudioFormat(
                encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000
            ),
        )
    )


async def _started(call) -> None:
    while not (await call.read()).HasField("started"):
        pass


async def end_a_stream(address: str, ending: str) -> grpc.StatusCode:
    """One stream on the two-slot model that ends the way ``ending`` says."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = transcription_pb2_grpc.TranscriptionStub(channel)
        call = stub.StreamingTranscribe(timeout=1.0 if ending == "deadline" else 20)
        await call.write(config())
        await _started(call)  # Triton has given the sequence its slot
        if ending == "error":  # 3 bytes of PCM16: MISALIGNED_AUDIO
            await call.write(TReq(audio=b"\0" * 3))
            return (await read_rest(call)).code
        await call.write(TReq(audio=CHUNK))
        if ending == "deadline":  # keep streaming until the client's deadline passes
            while not call.done():
                try:
                    await call.write(TReq(audio=CHUNK))
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    break
                await asyncio.sleep(0.1)
            return await call.code()
        if ending == "cancel":
            call.cancel()
            return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNAVAILABLE  # "disconnect": the channel, and its connection, closed


async def _queued(
    metrics_port: int, model: str, *, within_s: float, at_least: float = 0, at_most: float = 1e9
) -> None:
    """Wait until Triton's pending request count for ``model`` is within the bounds."""
    count = -1.0
    for _ in range(round(within_s / 0.05)):
        count = await pending_requests(metrics_port, model)
        if at_least <= count <= at_most:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{model} has {count:g} requests pending after {within_s:g} s")


async def adapter_released(adapter: AdapterServer, within_s: float = 2.0) -> None:
    """Wait until the adapter holds no replica slot (a stream the client cancelled ends at the
    adapter a moment after the client let go of it)."""
    for _ in range(round(within_s / 0.05)):
        if all(r.active == 0 for r in adapter.pool.replicas):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the adapter still holds a replica slot after {within_s:g} s")


@pytest.mark.parametrize("ending", ["error", "cancel", "disconnect", "deadline"])
async def test_every_ending_frees_the_triton_sequence_slot(slots_adapter, variants_triton, ending):
    # Three streams on a two-slot model, one after the other: before the fix, a failed or
    # abandoned stream kept its slot until Triton's idle timeout (here 120 s).
    for _ in range(3):
        code = await asyncio.wait_for(end_a_stream(slots_adapter.address, ending), 10)
        assert code != grpc.StatusCode.OK
        await adapter_released(slots_adapter)
    # Triton's side: both slots take a new sequence at once, nothing waits in its queue.
    latencies = [
        await asyncio.wait_for(start_latency(variants_triton.grpc_url, TWO_SLOTS), 3)
        for _ in range(2)
    ]
    assert max(latencies) < 0.5, latencies
    assert await pending_requests(variants_triton.ports.metrics, TWO_SLOTS) == 0


async def _paced(call, seconds: float, started: asyncio.Event) -> StreamOutcome:
    """Stream audio at real time for ``seconds``, half-close, collect the rest."""
    await call.write(config())
    await _started(call)
    started.set()
    for _ in range(int(seconds * 10)):
        await call.write(TReq(audio=CHUNK))
        await asyncio.sleep(0.1)
    await call.done_writing()
    return await read_rest(call)


async def _speak(channel, seconds: float) -> StreamOutcome:
    """A TTS stream on the same replica: one context playing ``seconds`` of bench_tts tone."""
    open_ = SReq(
        context_id="c",
        open=synthesis_pb2.SynthesisContextConfig(
            model="bench_tts",
            output_format=audio_pb2.AudioFormat(
                encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=24000
            ),
        ),
    )
    words = " ".join(["word"] * int(seconds / 0.3))  # 300 ms per word
    text = SReq(context_id="c", append=synthesis_pb2.AppendText(text=words))
    close = SReq(context_id="c", close=synthesis_pb2.CloseContext())
    call = synthesis_pb2_grpc.SynthesisStub(channel).StreamingSynthesize(
        iter([open_, text, close]), timeout=30
    )
    out = StreamOutcome()
    async for response in call:  # "plays" the audio: reads at real time
        out.responses.append(response)
        if response.HasField("audio"):
            await asyncio.sleep(response.audio.duration_ms / 1000)
    out.code = await call.code()
    return out


async def test_a_stream_whose_model_times_out_fails_alone(slots_adapter, variants_triton, caplog):
    # Another client of the same Triton holds one of the two slots; the adapter admits two
    # streams: the first gets the free slot, the second's START waits in Triton's queue until
    # the response timeout. Before the fix that timeout marked the whole replica failed: every
    # stream on it (STT and TTS) ended with BACKEND_UNAVAILABLE and the replica flapped.
    async with grpc.aio.insecure_channel(variants_triton.grpc_url) as direct:
        held = HeldSequence(direct, TWO_SLOTS)
        await held.start()
        async with grpc.aio.insecure_channel(slots_adapter.address) as channel:
            stub = transcription_pb2_grpc.TranscriptionStub(channel)
            has_slot = asyncio.Event()
            call = stub.StreamingTranscribe(timeout=30)
            healthy = asyncio.create_task(_paced(call, 5.0, has_slot))
            speaking = asyncio.create_task(_speak(channel, 5.0))
            await asyncio.wait_for(has_slot.wait(), 10)  # the healthy stream has the free slot
            started = time.monotonic()
            victim = await raw_stream(channel, TRANSCRIBE, [config().SerializeToString()])
            assert time.monotonic() - started >= RESPONSE_TIMEOUT_S
            assert (victim.code, victim.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "BACKEND_UNAVAILABLE",
            )
            assert slots_adapter.pool.replicas[0].ready  # the replica was never taken out
            # The log says what the replica's channels were doing: connected, so the request
            # waited in Triton (here: behind its exhausted sequence slots).
            (silent,) = [
                r.getMessage() for r in caplog.records if "no answer within" in r.getMessage()
            ]
            assert "no answer within 2 s" in silent and "READY" in silent, silent
            ok, spoken = await healthy, await speaking
            assert ok.code == grpc.StatusCode.OK and ok.responses[-1].HasField("summary")
            assert spoken.code == grpc.StatusCode.OK and spoken.of("done")
        await held.close()
    # The victim's queued START did not take a slot when one came free.
    latencies = [await asyncio.wait_for(start_latency(variants_triton.grpc_url, TWO_SLOTS), 3)]
    latencies.append(await asyncio.wait_for(start_latency(variants_triton.grpc_url, TWO_SLOTS), 3))
    assert max(latencies) < 0.5, latencies


async def test_a_sequence_triton_forgot_is_retryable_backend_unavailable(slots_adapter):
    # Triton drops a sequence idle past max_sequence_idle_microseconds (0.3 s here), as it
    # forgets every sequence when it restarts: the next request is refused in-band. That is
    # not the client's fault (before: non-retryable MODEL_ERROR / INVALID_MESSAGE).
    async with grpc.aio.insecure_channel(slots_adapter.address) as channel:
        call = transcription_pb2_grpc.TranscriptionStub(channel).StreamingTranscribe(timeout=20)
        await call.write(config(FORGETFUL))
        await _started(call)
        await asyncio.sleep(1.5)
        await call.write(TReq(audio=CHUNK))
        out = await read_rest(call)
    err = from_trailers(out.trailers)
    assert (out.code, err.reason, err.retryable) == (
        grpc.StatusCode.UNAVAILABLE,
        "BACKEND_UNAVAILABLE",
        True,
    )


async def test_a_stream_whose_end_is_answered_late_still_frees_its_slot(
    slots_adapter, variants_triton, monkeypatch
):
    """A client that cancels with audio still queued on a slow model: the adapter sends the
    END, waits END_ANSWER_BUDGET_S (2 s) for its answer, which comes later (at least three
    0.9 s batches are ahead of it), and cancels the call. Triton still frees the sequence:
    three such streams on a two-slot model, then both slots take a new sequence within one
    batch."""
    cancels: list[str] = []
    original = ModelStream.cancel

    def counted(self: ModelStream, why: str) -> None:
        cancels.append(why)
        original(self, why)

    monkeypatch.setattr(ModelStream, "cancel", counted)
    async with grpc.aio.insecure_channel(slots_adapter.address) as channel:
        stub = transcription_pb2_grpc.TranscriptionStub(channel)
        for _ in range(3):
            call = stub.StreamingTranscribe(timeout=20)
            await call.write(config(SLOW))
            await _started(call)
            for _ in range(4):
                await call.write(TReq(audio=CHUNK))
            # Cancel only once Triton holds three of them queued (2.7 s ahead of the END, more
            # than its 2 s budget): on a busy machine the writes can otherwise still be on their
            # way when the cancel lands, and the END is answered in time.
            await _queued(variants_triton.ports.metrics, SLOW, at_least=3, within_s=10.0)
            call.cancel()
            await adapter_released(slots_adapter, within_s=4.0)
    assert "end_not_answered" in cancels, cancels  # the case this test is about happened
    await _queued(variants_triton.ports.metrics, SLOW, at_most=0, within_s=20.0)
    latencies = [
        await asyncio.wait_for(start_latency(variants_triton.grpc_url, SLOW), 5) for _ in range(2)
    ]
    assert max(latencies) < 2 * 0.9, latencies
    assert await pending_requests(variants_triton.ports.metrics, SLOW) == 0

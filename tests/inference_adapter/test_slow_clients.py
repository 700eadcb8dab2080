"""Clients that are silent or do not read (issue 8, defects 3 and 6).

An adapter with short limits in front of the session's second Triton (``variants_triton``):
``idle_timeout`` 1 s, ``write_timeout`` 1 s and ``max_unread_response_bytes`` 32 KiB.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest_asyncio

from inference_adapter.config import AdapterConfig, Limits
from inference_adapter.server import AdapterServer
from localstack.triton import TritonServer
from tests.helpers.raw_calls import read_rest
from tests.helpers.status import from_trailers
from voxwire.stream_write import write_unless_ended
from voxwire.v1 import audio_pb2, synthesis_pb2, synthesis_pb2_grpc

Req = synthesis_pb2.StreamingSynthesizeRequest
LIMITS = Limits(
    idle_timeout_seconds=1.0, write_timeout_seconds=1.0, max_unread_response_bytes=32 * 1024
)
WORD_MS = 300  # bench_tts speaks 300 ms of tone per word


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def strict_adapter(variants_triton: TritonServer) -> AsyncIterator[AdapterServer]:
    server = AdapterServer(
        AdapterConfig(listen="127.0.0.1:0", triton_urls=(variants_triton.grpc_url,), limits=LIMITS)
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


def open_(model: str) -> Req:
    return Req(
        context_id="c",
        open=synthesis_pb2.SynthesisContextConfig(
            model=model,
            output_format=audio_pb2.AudioFormat(
                encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=24000
            ),
        ),
    )


def append(text: str) -> Req:
    return Req(context_id="c", append=synthesis_pb2.AppendText(text=text))


async def test_a_client_silent_while_its_text_plays_is_not_idle(strict_adapter):
    # bench_tts_realtime takes as long to synthesize as the audio lasts: 3 s for 10 words, three
    # idle timeouts during which the client, waiting for its audio, sends nothing. Before, the
    # idle timeout cancelled the read of the client's next message, which ended gRPC's request
    # iterator as if the client had half-closed: what the client sent next was never read.
    async with grpc.aio.insecure_channel(strict_adapter.address) as channel:
        call = synthesis_pb2_grpc.SynthesisStub(channel).StreamingSynthesize(timeout=30)
        await call.write(open_("bench_tts_realtime"))
        await call.write(append("one two three four five six seven eight nine ten. "))
        heard_ms = 0
        while heard_ms < 10 * WORD_MS:
            response = await call.read()
            assert response is not grpc.aio.EOF, "the stream ended while the client waited"
            heard_ms += response.audio.duration_ms
        await call.write(append("eleven twelve."))
        await call.write(Req(context_id="c", close=synthesis_pb2.CloseContext()))
        await call.done_writing()
        out = await read_rest(call)
    assert out.code == grpc.StatusCode.OK, out.details
    (done,) = out.of("done")
    assert done.audio_ms == 12 * WORD_MS  # the text sent after the silence was spoken too


async def test_a_client_that_reads_nothing_fails_with_slow_consumer(strict_adapter):
    # 30 s of audio for a client that never reads: once its flow-control window is full a write
    # waits; after write_timeout the stream fails and its model slot is free again (before, it
    # stayed held for as long as the client kept the call open). The client's window stays at
    # HTTP/2's 64 KiB (grpc's BDP probing would grow it, and its buffers, to megabytes).
    options = [("grpc.http2.bdp_probe", 0)]
    async with grpc.aio.insecure_channel(strict_adapter.address, options=options) as channel:
        call = synthesis_pb2_grpc.SynthesisStub(channel).StreamingSynthesize(timeout=20)
        await call.write(open_("bench_tts"))
        await call.write(append("word. " * 100))  # 100 sentences, each a unit
        started = time.monotonic()
        for _ in range(100):
            await asyncio.sleep(0.1)
            if all(r.active == 0 for r in strict_adapter.pool.replicas):
                break
        freed_after = time.monotonic() - started
        out = await read_rest(call)  # the client reads at last: audio, then the status
    err = from_trailers(out.trailers)
    assert (out.code, err.reason, err.retryable) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "SLOW_CONSUMER",
        True,
    )
    assert "write_timeout" in out.details
    assert 1.0 <= freed_after < 5.0


async def test_a_client_that_takes_audio_at_playback_pace_in_bursts_is_not_slow(strict_adapter):
    # A player with a deep buffer: it takes what audio it can, then plays it before it takes
    # more, so its window stays shut for longer than write_timeout (1 s) at a time, although it
    # takes the audio at real time. An edge reads so when its own client's socket buffers hold
    # seconds of audio (POST /v1/tts read by a player: the adapter's write waited 36 s, and
    # the stream failed SLOW_CONSUMER with the audio half played). Only a client slower than
    # playback is late (the test above).
    options = [("grpc.http2.bdp_probe", 0)]
    words = 16  # 4.8 s of audio in one unit, made far faster than real time
    async with grpc.aio.insecure_channel(strict_adapter.address, options=options) as channel:
        call = synthesis_pb2_grpc.SynthesisStub(channel).StreamingSynthesize(timeout=30)
        await call.write(open_("bench_tts"))
        await call.write(append("word " * words + "."))
        await call.write(Req(context_id="c", close=synthesis_pb2.CloseContext()))
        await call.done_writing()
        audio_ms, held_ms, pauses, done = 0, 0, 0, False
        while not done:
            response = await call.read()
            assert response is not grpc.aio.EOF, await call.details()
            kind = response.WhichOneof("response")
            done = kind == "done"
            if kind == "audio":
                audio_ms += response.audio.duration_ms
                held_ms += response.audio.duration_ms
            if held_ms >= 1500:  # plays what it holds, reading nothing meanwhile
                await asyncio.sleep(held_ms / 1000)
                held_ms, pauses = 0, pauses + 1
        out = await read_rest(call)  # the summary, then the status
    assert out.code == grpc.StatusCode.OK, out.details
    assert audio_ms >= words * WORD_MS  # all of it (bench_tts speaks the period too)
    assert pauses >= 3


async def test_acks_a_client_provokes_count_against_its_unread_bytes(strict_adapter):
    # Flushes answered at once, never read: the acks pile up at the server. Before, without a
    # bound; now past max_unread_response_bytes the stream fails, before any write timeout.
    # Each ack echoes its 1 kB flush id; the client's window stays at 64 KiB (see above). The
    # adapter's window is fixed too (inference_adapter/server.py): once it stops reading, a
    # write waits, and fails as the stream ends; written with grpc.aio's plain ``write``, that
    # failure would replace the adapter's status with INTERNAL (voxwire/stream_write.py).
    flush = Req(context_id="c", flush=synthesis_pb2.Flush(flush_id="f" * 1000))
    options = [("grpc.http2.bdp_probe", 0)]
    async with grpc.aio.insecure_channel(strict_adapter.address, options=options) as channel:
        call = synthesis_pb2_grpc.SynthesisStub(channel).StreamingSynthesize(timeout=20)
        await call.write(open_("bench_tts"))
        started = time.monotonic()
        wrote_at = [started]

        async def write() -> None:
            for _ in range(1000):  # about 1 MB of acks
                if not await write_unless_ended(call, flush):
                    return  # the server ended the call
                wrote_at.append(time.monotonic())

        writer = asyncio.create_task(write())
        for _ in range(100):  # until the writes stop going through
            await asyncio.sleep(0.1)
            if time.monotonic() - wrote_at[-1] > 0.5:
                break
        ended_after = wrote_at[-1] - started
        out = await read_rest(call)  # the client reads at last: the acks, then the status
        await asyncio.wait_for(writer, 5)
    err = from_trailers(out.trailers)
    assert (out.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SLOW_CONSUMER")
    assert "max_unread_response_bytes" in out.details
    assert ended_after < LIMITS.write_timeout_seconds  # the cap came first

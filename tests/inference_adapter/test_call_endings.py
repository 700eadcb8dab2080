"""How the adapter ends its Triton calls: a stream or context whose work is over half-closes its
ModelStreamInfer call and Triton ends it; only work that must stop is cancelled (issue 8:
Triton 2.51 crashes under storms of cancelled streaming calls, tools/triton_cancel_storm.py).

Counted from the adapter's side (``Replica.calls_ended``) against the session's real Triton.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import numpy as np

from inference_adapter.server import AdapterServer
from localstack.client import collect
from voxwire.v1 import (
    audio_pb2,
    synthesis_pb2,
    synthesis_pb2_grpc,
    transcription_pb2,
    transcription_pb2_grpc,
)

SReq = synthesis_pb2.StreamingSynthesizeRequest
TReq = transcription_pb2.StreamingTranscribeRequest
PCM16_16K = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000)
CHUNK = (np.sin(np.arange(1600) / 5) * 3000).astype("<i2").tobytes()  # 100 ms at 16 kHz


def ended(adapter: AdapterServer) -> Counter[str]:
    total: Counter[str] = Counter()
    for replica in adapter.pool.replicas:
        total.update(replica.calls_ended)
    return total


async def settle(adapter: AdapterServer, before: Counter[str], calls: int) -> Counter[str]:
    """The calls ended since ``before``, once ``calls`` of them have (a stream's status may reach
    the client before its Triton call has ended)."""
    for _ in range(100):
        delta = ended(adapter) - before
        if sum(delta.values()) >= calls:
            break
        await asyncio.sleep(0.05)
    return ended(adapter) - before


def stt_messages() -> list[TReq]:
    cfg = transcription_pb2.TranscriptionConfig(model="bench_stt", audio_format=PCM16_16K)
    return [TReq(config=cfg), *(TReq(audio=CHUNK) for _ in range(3))]


async def test_streams_that_end_normally_end_their_calls_without_a_cancel(
    adapter: AdapterServer, channel: grpc.aio.Channel
):
    before = ended(adapter)
    stt = transcription_pb2_grpc.TranscriptionStub(channel)
    tts = synthesis_pb2_grpc.SynthesisStub(channel)

    async def one_stt() -> grpc.StatusCode:
        out = await collect(stt.StreamingTranscribe(iter(stt_messages()), timeout=30))
        return out.code

    async def one_tts() -> grpc.StatusCode:
        fmt = audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=24000
        )
        msgs = [
            SReq(
                context_id="a",
                open=synthesis_pb2.SynthesisContextConfig(model="bench_tts", output_format=fmt),
            ),
            SReq(context_id="a", append=synthesis_pb2.AppendText(text="Hello there. ")),
            SReq(context_id="a", close=synthesis_pb2.CloseContext()),
            SReq(
                context_id="b",
                open=synthesis_pb2.SynthesisContextConfig(model="bench_tts", output_format=fmt),
            ),
            SReq(context_id="b", append=synthesis_pb2.AppendText(text="Bye. ")),
            SReq(context_id="b", close=synthesis_pb2.CloseContext()),
        ]
        out = await collect(tts.StreamingSynthesize(iter(msgs), timeout=30))
        return out.code

    codes = await asyncio.gather(*(one_stt() for _ in range(10)), *(one_tts() for _ in range(10)))
    assert set(codes) == {grpc.StatusCode.OK}
    delta = await settle(adapter, before, 10 + 2 * 10)
    assert delta == Counter(finished=30), delta


async def test_a_client_that_cancels_mid_stream_frees_the_sequence_without_a_cancel_to_triton(
    adapter: AdapterServer, channel: grpc.aio.Channel
):
    # The adapter sends END (the slot is free once it is answered), then half-closes: nothing
    # in flight needs an RST_STREAM to stop.
    before = ended(adapter)
    stt = transcription_pb2_grpc.TranscriptionStub(channel)
    calls = []
    for _ in range(10):
        call = stt.StreamingTranscribe(timeout=30)
        for msg in stt_messages():
            await call.write(msg)
        calls.append(call)
    for call in calls:
        await call.read()  # `started`: the sequence is open on Triton
        call.cancel()
    delta = await settle(adapter, before, 10)
    assert delta == Counter(finished=10), delta

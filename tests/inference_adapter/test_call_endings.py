"""How the adapter ends its Triton calls: a stream or context whose work is over half-closes its
ModelStreamInfer call and Triton ends it; only work that must stop is cancelled (issue 8:
Triton 2.51 crashes under storms of cancelled streaming calls, tools/triton_cancel_storm.py).

Counted from the adapter's side (``Replica.calls_ended``) against the session's real Triton.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import grpc
import numpy as np

from inference_adapter.server import AdapterServer
from localstack.client import collect
from tests.helpers.front import wait_until
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


LONG_TEXT = " ".join(["This sentence goes on and on for a while."] * 20)  # ~3 s of bench_tts


def tts_open(context: str) -> SReq:
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=24000)
    return SReq(
        context_id=context,
        open=synthesis_pb2.SynthesisContextConfig(model="bench_tts", output_format=fmt),
    )


async def first_audio(call, context: str) -> list[synthesis_pb2.StreamingSynthesizeResponse]:
    seen = []
    async for r in call:
        seen.append(r)
        if r.context_id == context and r.HasField("audio"):
            return seen
    raise AssertionError(f"no audio for {context}: {seen}")


def leases(adapter: AdapterServer) -> int:
    return sum(r.active for r in adapter.pool.replicas)


async def quiet_leases(adapter: AdapterServer) -> int:
    """The replicas' leases once the streams of earlier tests have let theirs go (a drained
    TTS call releases its lease when Triton ends it, which can be seconds after its test)."""
    await adapter.runtime.calls.wait(10.0)
    await wait_until(lambda: leases(adapter) == 0, 5.0)
    return leases(adapter)


async def leases_back_to(adapter: AdapterServer, held: int) -> int:
    assert await adapter.runtime.calls.wait(5.0)
    await wait_until(lambda: leases(adapter) == held, 2.0)
    return leases(adapter)


async def test_a_tts_context_stopped_mid_synthesis_drains_its_call_instead_of_cancelling(
    adapter: AdapterServer, channel: grpc.aio.Channel
):
    # A cancel stops a context whose unit is in flight: the client's ack is at once,
    # Triton's call is half-closed and its unit runs out (Triton 2.51 crashes under cancels).
    held = await quiet_leases(adapter)
    before = ended(adapter)
    tts = synthesis_pb2_grpc.SynthesisStub(channel)
    call = tts.StreamingSynthesize(timeout=60)
    await call.write(tts_open("a"))
    await call.write(SReq(context_id="a", append=synthesis_pb2.AppendText(text=LONG_TEXT)))
    await first_audio(call, "a")
    await call.write(SReq(context_id="a", cancel=synthesis_pb2.Cancel()))
    await call.write(tts_open("b"))
    await call.write(SReq(context_id="b", append=synthesis_pb2.AppendText(text="Hi there. ")))
    await call.write(SReq(context_id="b", close=synthesis_pb2.CloseContext()))
    await call.done_writing()
    rest = [r async for r in call]
    assert await call.code() == grpc.StatusCode.OK
    a = [r.WhichOneof("response") for r in rest if r.context_id == "a"]
    assert a[-1] == "cancelled" and "audio" not in a[a.index("cancelled") :]
    assert [r.WhichOneof("response") for r in rest if r.context_id == "b"][-1] == "done"
    delta = await settle(adapter, before, 2)
    assert delta == Counter(finished=2), delta
    assert await leases_back_to(adapter, held) == held
    assert all(n == 0 for r in adapter.pool.replicas for n in r.draining.values())


async def test_a_tts_client_gone_mid_synthesis_leaves_its_calls_to_end_without_a_cancel(
    adapter: AdapterServer, channel: grpc.aio.Channel
):
    held = await quiet_leases(adapter)
    before = ended(adapter)
    tts = synthesis_pb2_grpc.SynthesisStub(channel)
    calls = []
    for _ in range(4):
        call = tts.StreamingSynthesize(timeout=60)
        for ctx in ("a", "b"):
            await call.write(tts_open(ctx))
            await call.write(SReq(context_id=ctx, append=synthesis_pb2.AppendText(text=LONG_TEXT)))
        calls.append(call)
    for call in calls:
        await first_audio(call, "b")
        call.cancel()
    delta = await settle(adapter, before, 8)
    assert delta == Counter(finished=8), delta
    assert await leases_back_to(adapter, held) == held


def cancels(adapter: AdapterServer) -> Counter[str]:
    """Cancelled Triton calls so far, by the adapter's reason."""
    total: Counter[str] = Counter()
    for replica in adapter.pool.replicas:
        total.update(replica.calls_cancelled)
    return total


async def cancel_mid_synthesis(channel: grpc.aio.Channel) -> None:
    """One stream: a long text, cancelled once its audio flows; the stream ends OK."""
    call = synthesis_pb2_grpc.SynthesisStub(channel).StreamingSynthesize(timeout=60)
    await call.write(tts_open("a"))
    await call.write(SReq(context_id="a", append=synthesis_pb2.AppendText(text=LONG_TEXT)))
    await first_audio(call, "a")
    await call.write(SReq(context_id="a", cancel=synthesis_pb2.Cancel()))
    await call.done_writing()
    [r async for r in call]
    assert await call.code() == grpc.StatusCode.OK


async def test_with_tts_stop_in_flight_cancel_a_stopped_context_cancels_its_call(
    adapter: AdapterServer, channel: grpc.aio.Channel
):
    # For a Triton with the cancellation fix: the fastest barge-in, the model stops at once.
    config = adapter.runtime.config
    adapter.runtime.config = dataclasses.replace(config, tts_stop_in_flight="cancel")
    try:
        before, cancelled = ended(adapter), cancels(adapter)
        await cancel_mid_synthesis(channel)
        delta = await settle(adapter, before, 1)
        assert delta == Counter(cancelled=1), delta
        assert cancels(adapter) - cancelled == Counter(context_stopped=1)
    finally:
        adapter.runtime.config = config


async def test_past_the_drain_bound_a_stopped_context_is_cancelled_and_counted(
    adapter: AdapterServer, channel: grpc.aio.Channel, monkeypatch
):
    # Calls running out have their leases back, so they are bounded apart (may_drain): a client
    # cancelling faster than units run out cannot fill Triton's queue.
    cancelled = cancels(adapter)
    monkeypatch.setattr(adapter.pool, "may_drain", lambda lease: False)
    await cancel_mid_synthesis(channel)
    assert cancels(adapter) - cancelled == Counter(drain_limit=1)
    assert all(not r.draining[m] for r in adapter.pool.replicas for m in r.draining)

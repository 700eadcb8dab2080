"""gateway.tts.convert.ContextConverter: a context's chunks converted, each keeping its number
and place, the responses behind a chunk kept behind it, all of it out at a flush ack."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.tts.convert import ContextConverter
from voxwire.audio.codecs import Encoding, PcmFormat, encode
from voxwire.v1 import synthesis_pb2

Response = synthesis_pb2.StreamingSynthesizeResponse
MADE = PcmFormat(Encoding.PCM_S16LE, 16000)


def chunks(ms: int, each_ms: int, start_seq: int = 1) -> list[Response]:
    """``ms`` of a 440 Hz tone at 16 kHz in chunks of ``each_ms``, numbered and placed."""
    tone = 0.5 * np.sin(np.arange(16 * ms) * 2 * np.pi * 440 / 16000)
    return [
        Response(
            audio=synthesis_pb2.AudioChunk(
                sequence_number=start_seq + i,
                start_ms=i * each_ms,
                duration_ms=each_ms,
                audio=encode(tone[16 * i * each_ms : 16 * (i + 1) * each_ms], Encoding.PCM_S16LE),
            )
        )
        for i in range(ms // each_ms)
    ]


def words(end_ms: int) -> Response:
    return Response(
        words=synthesis_pb2.WordTimestamps(
            words=[synthesis_pb2.WordTimestamp(word="w", start_ms=0, end_ms=end_ms)]
        )
    )


@pytest.mark.parametrize(
    "asked", [PcmFormat(Encoding.MULAW, 8000), PcmFormat(Encoding.PCM_F32LE, 48000)]
)
@pytest.mark.parametrize("each_ms", [20, 100])
def test_chunks_keep_number_place_and_order_and_carry_their_own_audio(
    asked: PcmFormat, each_ms: int
):
    converter = ContextConverter(MADE, asked)
    sent = chunks(1000, each_ms)
    feed: list[Response] = []
    for i, chunk in enumerate(sent):
        feed.append(chunk)
        if i % 3 == 1:
            feed.append(words(chunk.audio.start_ms + chunk.audio.duration_ms))
    feed.append(Response(flush_ack=synthesis_pb2.FlushAck(flush_id="f", last_sequence_number=9)))
    feed += chunks(200, each_ms, start_seq=len(sent) + 1)
    feed.append(Response(done=synthesis_pb2.ContextDone()))
    out: list[Response] = []
    first_at = None
    for n, resp in enumerate(feed, 1):
        ready = converter.feed(resp)
        if ready and first_at is None:
            first_at = n
        out += ready
    assert converter.held == 0
    # The same responses in the same order; each chunk as many frames as its place says (a
    # frame of rounding; the last before a flush takes what the resampler rounded).
    assert [r.WhichOneof("response") for r in out] == [r.WhichOneof("response") for r in feed]
    audio = [r.audio for r in out if r.HasField("audio")]
    assert [a.sequence_number for a in audio] == list(range(1, len(audio) + 1))
    per_ms = asked.sample_rate_hz // 1000
    for a in audio:
        assert abs(len(a.audio) // asked.bytes_per_frame - a.duration_ms * per_ms) <= 1, a
    total = sum(len(a.audio) for a in audio) // asked.bytes_per_frame
    assert abs(total - 1200 * per_ms) <= 2
    # The first chunk waits only for the resampler's first output, not for the flush.
    assert first_at is not None and first_at < len(sent)


def test_a_failover_converter_holds_nothing_of_the_old_call():
    converter = ContextConverter(MADE, PcmFormat(Encoding.MULAW, 8000))
    for chunk in chunks(60, 20):
        converter.feed(chunk)
    assert converter.held > 0
    fresh = converter.fresh()
    assert fresh.held == 0 and fresh.made == MADE


@pytest.mark.parametrize(
    "asked", [PcmFormat(Encoding.MULAW, 8000), PcmFormat(Encoding.PCM_F32LE, 48000)]
)
@pytest.mark.parametrize("each_ms", [20, 100])
def test_a_chunk_waits_only_for_the_next_one(asked: PcmFormat, each_ms: int):
    # The resampler looks 4-13 ms ahead, so the next chunk's first samples complete a chunk:
    # on a model streaming at real time it goes one chunk's interval later, no more. soxr's
    # own stream held a 20 ms chunk made into 8 kHz for 72 ms on average, a 100 ms one up to
    # 200.
    converter = ContextConverter(MADE, asked)
    released: list[int] = []
    for i, chunk in enumerate(chunks(1000, each_ms)):
        released += [r.audio.sequence_number for r in converter.feed(chunk)]
        assert released == list(range(1, i + 1))
        assert converter.held == 1

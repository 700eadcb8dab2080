"""How much of a stream the adapter takes before its client must wait: a bounded amount.

A client faster than its model (a file sent as fast as the socket takes it) is held back by
the adapter's own backpressure (``max_inflight_requests`` unanswered model requests) and the
HTTP/2 window of its call. gRPC core grew that window by bandwidth-delay probing until about
4 MiB of requests the servicer had not read sat in the adapter per stream (two minutes of
16 kHz audio): a client was not held back until then, and each stream could park that much
memory. The gateway in front then read a whole burst and its close at once, and failed the
session (tests/gateway/test_stt_fast_client.py). ``bench_stt_slow`` takes 0.9 s per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
import pytest_asyncio

from inference_adapter.config import AdapterConfig
from inference_adapter.server import AdapterServer
from localstack.triton import TritonServer
from tests.helpers.raw_calls import bytes_taken_unread
from voxwire.v1 import audio_pb2, transcription_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")

Req = transcription_pb2.StreamingTranscribeRequest
CHUNK = Req(audio=np.zeros(1600, dtype="<i2").tobytes()).SerializeToString()  # 100 ms
# What the adapter takes in 2 s: max_inflight_requests (16) chunks read, gRPC's 64 KiB window
# and what the model took meanwhile: 110 KiB measured. Before: 5.9 MiB.
BOUND = 512 * 1024


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def slow_adapter(variants_triton: TritonServer) -> AsyncIterator[AdapterServer]:
    server = AdapterServer(
        AdapterConfig(listen="127.0.0.1:0", triton_urls=(variants_triton.grpc_url,))
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


async def test_a_client_faster_than_its_model_waits_after_a_bounded_amount(slow_adapter):
    config = Req(
        config=transcription_pb2.TranscriptionConfig(
            model="bench_stt_slow",
            audio_format=audio_pb2.AudioFormat(
                encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000
            ),
        )
    )
    async with grpc.aio.insecure_channel(slow_adapter.address) as channel:
        taken = await bytes_taken_unread(channel, config.SerializeToString(), [CHUNK])
    assert 0 < taken <= BOUND, f"the adapter took {taken:,} bytes of audio before holding back"

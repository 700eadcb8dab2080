"""One model unloaded on a live Triton (explicit model control), then loaded again: the
replica stays ready for its other models (streams of those go on), and the reloaded model's
config is read again (capacity and formats come from it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
import pytest_asyncio
from tritonclient.grpc import service_pb2, service_pb2_grpc

from inference_adapter.config import AdapterConfig
from inference_adapter.server import AdapterServer
from localstack.client import transcribe
from localstack.triton import TritonServer
from tests.helpers.front import wait_until
from voxwire.v1 import audio_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")

PCM16 = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def adapter(explicit_triton: TritonServer) -> AsyncIterator[AdapterServer]:
    server = AdapterServer(
        AdapterConfig(
            listen="127.0.0.1:0",
            triton_urls=(explicit_triton.grpc_url,),
            health_interval_seconds=0.2,
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


async def _repository(triton: TritonServer, action: str, model: str) -> None:
    async with grpc.aio.insecure_channel(triton.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        if action == "unload":
            await stub.RepositoryModelUnload(
                service_pb2.RepositoryModelUnloadRequest(model_name=model), timeout=30
            )
        else:
            await stub.RepositoryModelLoad(
                service_pb2.RepositoryModelLoadRequest(model_name=model), timeout=60
            )


async def test_an_unloaded_model_takes_only_itself_out_and_is_read_again_on_reload(
    explicit_triton: TritonServer, adapter: AdapterServer
):
    # Before: Triton's ServerReady (strict) went false with one model unloaded, and the
    # adapter took the whole replica out: a bench_stt stream failed "not ready" though
    # bench_stt was ready. And a model's config was read once for the process's life.
    pool = adapter.pool
    [replica] = pool.replicas
    assert await wait_until(lambda: "bench_tts" in replica.ready_models, 10)
    async with grpc.aio.insecure_channel(adapter.address) as channel:
        stream = asyncio.create_task(
            transcribe(
                channel, np.zeros(32000, "<i2").tobytes(), PCM16, model="bench_stt", realtime=True
            )
        )
        await asyncio.sleep(0.3)
        await _repository(explicit_triton, "unload", "bench_tts")
        try:
            assert await wait_until(lambda: "bench_tts" not in replica.ready_models, 10)
            assert replica.ready and pool.ready_replicas("bench_stt") == [replica]
            assert "bench_tts" not in replica.seen  # its config is read again on reload
            out = await asyncio.wait_for(stream, 20)
            assert out.code == grpc.StatusCode.OK, out
        finally:
            await _repository(explicit_triton, "load", "bench_tts")
    assert await wait_until(lambda: "bench_tts" in replica.ready_models, 20)
    assert "bench_tts" in replica.seen

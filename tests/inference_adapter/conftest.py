"""The adapter under test: one AdapterServer per session, in front of the session's Triton."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest_asyncio

from inference_adapter.config import AdapterConfig, Limits
from inference_adapter.server import AdapterServer
from localstack.triton import TritonServer, default_model_repository
from tests.helpers.triton_models import variants_repository

# Small limits so the limit tests need little data; everything else is the default.
TEST_LIMITS = Limits(max_chunk_bytes=32_000, max_contexts_per_stream=4, idle_timeout_seconds=5.0)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def adapter(triton: TritonServer) -> AsyncIterator[AdapterServer]:
    server = AdapterServer(
        AdapterConfig(
            listen="127.0.0.1:0",
            triton_urls=(triton.grpc_url,),
            limits=TEST_LIMITS,
            # Tolerant readiness probes: the machine running the tests may be loaded, and
            # these tests are not about how fast a dead replica is noticed (test_replicas is).
            health_timeout_seconds=1.0,
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def channel(adapter: AdapterServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(adapter.address) as ch:
        yield ch


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def variants_triton(tmp_path_factory) -> AsyncIterator[TritonServer]:
    """A second Triton, started by the first test that needs it, with test-only variants of the
    benchmark models: bench_stt_2slot (direct strategy, two sequence slots, 120 s idle timeout),
    bench_stt_idle (forgets a sequence idle for 0.3 s), bench_stt_slow (two slots, 0.9 s per
    batch), bench_tts_realtime (synthesizes at real time). Same code as model_repository/,
    other config lines."""
    root = tmp_path_factory.mktemp("variants")
    server = TritonServer(variants_repository(root), log_path=root / "triton.log")
    await server.start(timeout=120)
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def explicit_triton(tmp_path_factory) -> AsyncIterator[TritonServer]:
    """A Triton of its own in explicit model control, serving the benchmark models (started by
    the first test that needs it): models can be unloaded and loaded again, and a run that
    brings it down (the wire fuzzer) does not take the session's Triton with it."""
    log = tmp_path_factory.mktemp("explicit-triton") / "tritonserver.log"
    server = TritonServer(
        default_model_repository(), models=["bench_stt", "bench_tts"], log_path=log
    )
    await server.start(timeout=120.0)
    try:
        yield server
    finally:
        await server.stop()

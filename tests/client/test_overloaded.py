"""The SDK against a service at capacity: an adapter that admits one stream, the gateway in
front of it, a session holding that stream, and a second session that cannot get in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from localstack.triton import TritonServer
from tests.client.helpers import stt_config
from tests.helpers.edge import Edge, edge_on_own_adapter
from voxwire import errors
from voxwire.client import Backoff, SessionOptions, TranscriptionSession

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def full_edge(
    triton: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Edge]:
    async for edge in edge_on_own_adapter(
        triton, tmp_path_factory, max_streams_per_replica=1, health_timeout_seconds=1.0
    ):
        yield edge


async def test_connect_to_a_service_at_capacity_raises_overloaded_within_its_budget(
    full_edge: Edge,
):
    # The gateway's session message reset the reconnect budget at every attempt (the model's
    # OVERLOADED comes after it): connect retried for as long as the model stayed full (44 s
    # in a review), reporting a Resumed a second for a session that never started, and never
    # raised.
    config = stt_config(model="bench_stt")
    holder = await TranscriptionSession.connect(full_edge.ws, config, api_key=full_edge.key)
    try:
        budget = Backoff(base_s=0.05, cap_s=0.2, max_attempts=3, max_elapsed_s=5.0)
        began = time.monotonic()
        with pytest.raises(errors.Overloaded) as raised:
            async with asyncio.timeout(20):
                await TranscriptionSession.connect(
                    full_edge.ws,
                    config,
                    api_key=full_edge.key,
                    options=SessionOptions(backoff=budget),
                )
        assert time.monotonic() - began < 10
        assert "3 attempts" in str(raised.value), raised.value
        assert raised.value.retryable
    finally:
        await holder.close()

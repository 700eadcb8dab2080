"""Fixtures for driving the Triton models directly."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest_asyncio

from localstack.triton import TritonServer


@pytest_asyncio.fixture(loop_scope="session")
async def channel(triton: TritonServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(triton.grpc_url) as opened:
        yield opened

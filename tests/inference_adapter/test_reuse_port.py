"""Adapters sharing a port only when configured to (``AdapterConfig.reuse_port``): gRPC core
sets SO_REUSEPORT by default, so without this a second adapter started on a taken port would
silently take half its connections instead of failing."""

from __future__ import annotations

import pytest

from benchmarks.stack import free_port
from inference_adapter.config import AdapterConfig
from inference_adapter.server import AdapterServer
from localstack.triton import TritonServer

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("reuse_port", [False, True])
async def test_a_second_adapter_on_a_taken_port_starts_only_with_reuse_port(
    triton: TritonServer, reuse_port: bool
):
    config = AdapterConfig(
        listen=f"127.0.0.1:{free_port()}", triton_urls=(triton.grpc_url,), reuse_port=reuse_port
    )
    first, second = AdapterServer(config), AdapterServer(config)
    try:
        assert await first.start() == int(config.listen.rsplit(":", 1)[1])
        if reuse_port:
            assert await second.start() == first.port
        else:
            with pytest.raises(RuntimeError):
                await second.start()
    finally:
        await second.stop(grace=0.5)
        await first.stop(grace=0.5)

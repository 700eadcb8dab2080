"""The gateway's word of its adapters' capabilities follows them while they serve.

It was asked only as an adapter started serving: a model its Triton loaded later, or limits
changed, were unseen until the adapter's next restart (EdgeLimits.max_pending_text_bytes, the
defaults of POST /v1/tts). The example server (examples/minimal_server.py) stands in for an
adapter whose capabilities change."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from examples.minimal_server import (
    TTS_MODEL,
    Capabilities,
    Synthesis,
    Transcription,
    add_health_and_reflection,
    add_services,
)
from gateway.upstream.pool import AdapterPool
from voxwire.v1.capabilities_pb2 import MODEL_KIND_TTS as TTS


class Flaky(Capabilities):
    """The example's capabilities, refused (UNAVAILABLE) while ``failing``."""

    failing = False
    callers: list[str | bytes | None] = []

    async def GetCapabilities(self, request, context):
        said = dict(context.invocation_metadata())
        self.callers.append(said.get("voxwire-caller"))
        if self.failing:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not now")
        return await super().GetCapabilities(request, context)


async def _until(check, within_s: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@pytest.mark.asyncio(loop_scope="session")
async def test_a_serving_adapters_capabilities_are_asked_again(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger="gateway.upstream.pool")
    server = grpc.aio.server()
    capabilities = Flaky(30.0)
    add_services(server, Transcription(30.0), Synthesis(30.0), capabilities)
    await add_health_and_reflection(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    pool = AdapterPool([f"127.0.0.1:{port}"], capabilities_every_s=0.1)
    try:
        await pool.start()
        assert await pool.wait_ready(10)
        assert await _until(lambda: pool.max_pending_text_bytes == 16384)
        assert pool.model(TTS, "later") is None
        # The server's limits change and it serves a model more, without a restart.
        capabilities.response.limits.max_pending_text_bytes = 4096
        later = capabilities.response.models.add()
        later.CopyFrom(TTS_MODEL)
        later.name = "later"
        assert await _until(lambda: pool.max_pending_text_bytes == 4096)
        assert await _until(lambda: pool.model(TTS, "later") is not None)
        # A server that stops answering keeps what was known, and says so once, not at
        # every refresh.
        capabilities.failing = True
        capabilities.response.limits.max_pending_text_bytes = 2048
        await asyncio.sleep(0.6)
        assert pool.max_pending_text_bytes == 4096 and pool.ready
    finally:
        await pool.close()
        await server.stop(None)
    # The pool's own calls say so (an adapter's tests and logs tell them from a client's).
    assert len(capabilities.callers) >= 4 and set(capabilities.callers) == {"gateway-pool"}
    said = [r for r in caplog.records if "did not give its capabilities" in r.getMessage()]
    assert len(said) >= 3, "asked again at every refresh"
    assert [r.levelno for r in said].count(logging.INFO) == 1, [r.getMessage() for r in said]

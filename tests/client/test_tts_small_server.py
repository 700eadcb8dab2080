"""Long TTS text through a gateway whose server holds less unsynthesized text than the
reference adapter's 16 KiB: the session's ``limits.maxPendingTextBytes`` says how much, and the
SDK and ``POST /v1/tts`` cut their pieces to fit.

Before, the pieces were a fixed 4 KiB, two pending: any server advertising under 8 KiB (an ML
engineer's own server, the example server set smaller) failed long text with TEXT_TOO_LARGE.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from inference_adapter.config import Limits
from localstack.triton import TritonServer
from tests.client.test_tts_client import tts_config
from tests.helpers.edge import Edge, edge_on_own_adapter
from tests.helpers.long_text import long_text, speak_events
from voxwire.client import SynthesisSession
from voxwire.v1 import synthesis_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")

PENDING = 4096


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def small(
    triton: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Edge]:
    """A gateway in front of an adapter whose contexts hold 4 KiB unsynthesized."""
    limits = Limits(max_pending_text_bytes=PENDING)
    async for edge in edge_on_own_adapter(triton, tmp_path_factory, limits=limits):
        yield edge


async def test_the_sdk_cuts_long_text_to_what_the_servers_behind_the_gateway_hold(small: Edge):
    text = long_text(12)
    assert len(text.encode()) > 2 * PENDING
    async with asyncio.timeout(60):
        tts = await SynthesisSession.connect(small.ws, api_key=small.key, lead_ms=0)
        ctx = await tts.open("long", tts_config("bench_tts"))
        await ctx.append(text)
        await ctx.close()
        events = [e async for e in ctx]
        await tts.close()
    assert isinstance(events[-1], synthesis_pb2.ContextDone), events[-1]
    words = [w for e in events if isinstance(e, synthesis_pb2.WordTimestamps) for w in e.words]
    spoken = [text[w.text_offset : w.text_offset + w.text_length].rstrip(".") for w in words]
    assert spoken == [part.rstrip(".") for part in text.split()]
    assert tts.state.max_pending_text_bytes == PENDING and tts.piece_bytes == PENDING // 2


async def test_post_tts_cuts_long_text_to_what_the_servers_hold(small: Edge):
    text = long_text(12)
    request = {"text": text, "config": {"model": "bench_tts", "wordTimestamps": True}}
    events = await speak_events(small.server.url, small.headers, request)
    assert events[-1][0] == "done", events[-1]
    words = [w for name, e in events if name == "words" for w in e["words"]]
    assert len(words) == len(text.split())


async def test_the_session_says_what_a_context_holds_on_the_reference_adapter(edge: Edge):
    async with asyncio.timeout(30):
        tts = await SynthesisSession.connect(edge.ws, api_key=edge.key, lead_ms=0)
        await tts.close()
    assert tts.state.max_pending_text_bytes == 16 * 1024 and tts.piece_bytes == 4096
    tts.piece_bytes = 1000
    assert tts.piece_bytes == 1000
    with pytest.raises(ValueError, match="positive"):
        tts.piece_bytes = 0

"""A second SIGTERM or SIGINT during a drain ends the drain's grace now: every open session
closes with DRAINING (1012, its client resumes elsewhere) and the process exits, instead of
waiting out the whole grace with no word (an operator's second Ctrl-C looked hung)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from inference_adapter.server import AdapterServer
from tests.gateway.conftest import Edge
from tests.helpers.gateway_process import start_gateway, write_config

pytestmark = pytest.mark.asyncio(loop_scope="session")

GRACE_S = 30.0
QUERY = "model=bench_stt&encoding=pcm_s16le&sample_rate=16000"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_second_signal_ends_the_drain_now(
    edge: Edge, edge_adapter: AdapterServer, tmp_path: Path, sig: signal.Signals
):
    config = write_config(tmp_path / "gw.toml", edge, edge_adapter.address, drain_grace_s=GRACE_S)
    process = await start_gateway(config, tmp_path / "gw.log")
    try:
        async with aiohttp.ClientSession() as http:
            url = f"{process.ws}/v1/stt/stream?{QUERY}"
            async with http.ws_connect(url, headers=edge.headers) as ws:
                assert "session" in json.loads((await ws.receive(timeout=10)).data)
                process.signal(sig)
                going = json.loads((await ws.receive(timeout=10)).data)
                assert "goingAway" in going, going
                process.signal(sig)
                second = time.monotonic()
                events = []
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        events.append(json.loads(msg.data))
                closed_s = time.monotonic() - second
            assert ws.close_code == 1012, (ws.close_code, events)
            assert closed_s < GRACE_S / 3, closed_s
            assert [e["error"]["reason"] for e in events if "error" in e] == ["DRAINING"]
        assert await process.wait(GRACE_S / 2) == 0, process.log()
        assert "a second signal: the drain ends now" in process.log()
    finally:
        await process.stop()

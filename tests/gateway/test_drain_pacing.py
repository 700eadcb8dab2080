"""A drain paces its going_aways (``drain_pace_per_s``) and tells each client to reconnect at
once (``reconnect_now``): the other gateways take the resumes at a bounded rate, and a session
streams on until its turn instead of each client waiting a random jitter. With the pace off,
every going_away goes at once and asks for no immediate reconnect (the client's jitter spreads
the herd). A gateway of its own, drained, in front of the session's adapter; real WebSocket
sessions on loopback.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from gateway.server import going_away_interval
from inference_adapter.server import AdapterServer
from tests.gateway.conftest import Edge
from tests.helpers.edge import gateway_of_its_own

SESSIONS = 6
# The benchmark model: sessions that hold none of the real models' few slots.
STT_QUERY = "model=bench_stt&encoding=pcm_s16le&sample_rate=16000"


def test_the_interval_keeps_the_pace_and_ends_within_half_the_grace():
    assert going_away_interval(100, 200.0, 20.0) == pytest.approx(0.005)
    # 10,000 sessions at 200 a second would take 50 s: squeezed into half the 20 s grace.
    assert going_away_interval(10_000, 200.0, 20.0) == pytest.approx(10.0 / 9_999)
    assert going_away_interval(1, 200.0, 20.0) == 0.0
    assert going_away_interval(100, 0.0, 20.0) == 0.0  # the pace off: all at once
    assert going_away_interval(100, 200.0, 0.0) == 0.0  # no grace: nothing to wait for


async def _drained(edge: Edge, adapter: AdapterServer, pace: float) -> list[tuple[float, dict]]:
    """Open SESSIONS STT sessions on a gateway of their own, drain it (grace 2 s), and return
    each session's going_away with the time it arrived, in arrival order."""
    arrived: list[tuple[float, dict]] = []
    async with (
        gateway_of_its_own(adapter.address, edge.auth, drain_pace_per_s=pace) as server,
        aiohttp.ClientSession() as http,
    ):
        sockets = []
        for _ in range(SESSIONS):
            ws = await http.ws_connect(
                f"{server.url.replace('http', 'ws', 1)}/v1/stt/stream?{STT_QUERY}",
                headers=edge.headers,
            )
            sockets.append(ws)
            first = json.loads((await ws.receive(timeout=10)).data)
            assert "session" in first, first

        async def going_away(ws: aiohttp.ClientWebSocketResponse) -> None:
            seen: list[str] = []
            while True:
                msg = await ws.receive(timeout=10)
                assert msg.type is aiohttp.WSMsgType.TEXT, (msg, seen)
                seen.append(msg.data)
                event = json.loads(msg.data)
                if "goingAway" in event:
                    arrived.append((time.monotonic(), event["goingAway"]))
                    await ws.close()
                    return

        readers = [asyncio.create_task(going_away(ws)) for ws in sockets]
        drain = asyncio.create_task(server.drain(grace=2.0))
        await asyncio.wait_for(asyncio.gather(*readers), 10)
        await asyncio.wait_for(drain, 10)
    return sorted(arrived, key=lambda a: a[0])


@pytest.mark.asyncio(loop_scope="session")
async def test_a_drain_paces_its_going_aways_and_asks_for_an_immediate_reconnect(
    edge: Edge, edge_adapter: AdapterServer
):
    arrived = await _drained(edge, edge_adapter, pace=40.0)  # one every 25 ms
    assert len(arrived) == SESSIONS
    assert all(away.get("reconnectNow") is True for _, away in arrived), arrived
    assert all(away["reason"] == "DRAINING" and away["resumeToken"] for _, away in arrived)
    gaps = [b - a for (a, _), (b, _) in zip(arrived, arrived[1:], strict=False)]
    # 25 ms apart (a loaded loop may bunch two, never sends them faster on average).
    assert arrived[-1][0] - arrived[0][0] >= (SESSIONS - 1) * 0.025 * 0.8, gaps
    # Each session still closes at the drain's end: the later ones were told less grace.
    graces = [float(away["grace"].rstrip("s")) for _, away in arrived]
    assert graces == sorted(graces, reverse=True), graces
    assert graces[0] - graces[-1] >= (SESSIONS - 1) * 0.025 * 0.8, graces


@pytest.mark.asyncio(loop_scope="session")
async def test_without_a_pace_every_going_away_goes_at_once_and_the_client_jitters(
    edge: Edge, edge_adapter: AdapterServer
):
    arrived = await _drained(edge, edge_adapter, pace=0.0)
    assert len(arrived) == SESSIONS
    assert not any(away.get("reconnectNow") for _, away in arrived), arrived
    assert arrived[-1][0] - arrived[0][0] < 0.1

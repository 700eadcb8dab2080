"""The WebSocket keepalive (gateway/keepalive.py): its rule as a pure object, and the gateway's
pings on real connections: a player reading at playback pace is not taken for dead because its
pong waits behind the audio it is playing, and a client that answers no ping is let go."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)

from gateway.keepalive import Due, Keepalive
from gateway.server import GatewayServer
from tests.helpers.edge import Edge, running_gateway
from tests.helpers.raw_ws import connect

# The test gateways' ping interval; a pong is late half of it after its audio has played.
PING_S = 2.0


# -- the rule --------------------------------------------------------------------------------


def test_a_ping_goes_after_an_interval_of_silence_and_any_frame_answers_it():
    keepalive = Keepalive(10.0, now=100.0)
    assert keepalive.next_at() == 110.0
    assert keepalive.on_time(109.9, 0.0) is Due.NOTHING
    keepalive.heard(105.0)  # a frame: the silence starts again
    assert keepalive.on_time(110.0, 0.0) is Due.NOTHING
    assert keepalive.on_time(115.0, 0.0) is Due.PING
    assert keepalive.next_at() == 120.0  # its pong is due half an interval later
    assert keepalive.on_time(119.9, 0.0) is Due.NOTHING
    keepalive.heard(119.9)  # the pong, or any frame
    assert keepalive.on_time(120.0, 0.0) is Due.NOTHING
    assert keepalive.on_time(129.9, 0.0) is Due.PING


def test_a_pong_is_late_only_after_the_audio_sent_before_its_ping_has_played():
    keepalive = Keepalive(10.0, now=0.0)
    assert keepalive.on_time(10.0, 42.0) is Due.PING  # 42 s of audio ahead of the ping
    assert keepalive.next_at() == 57.0
    assert keepalive.on_time(56.9, 0.0) is Due.NOTHING
    assert keepalive.on_time(57.0, 0.0) is Due.GONE
    assert keepalive.pinged_ahead_s == 42.0


# -- on real connections ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _gateway(
    edge: Edge, adapter_address: str, ping_s: float = PING_S
) -> AsyncIterator[GatewayServer]:
    async for server in running_gateway(adapter_address, edge.auth, ping_interval_seconds=ping_s):
        yield server


on_session_loop = pytest.mark.asyncio(loop_scope="session")


@on_session_loop
async def test_a_player_reading_at_playback_pace_is_kept_through_a_long_text(
    edge: Edge, edge_adapter
):
    # lead_ms=0: the gateway sends the audio as fast as eSpeak makes it, and the player takes it
    # at real time: the socket buffers between them fill with seconds of it (48 kHz float is
    # 192 kB/s), the rest waits in the session, and its keepalive pings meanwhile, every
    # 0.5 s of silence. A ping's pong comes once the player has played what was ahead of it.
    # With aiohttp's heartbeat the pong was due 0.25 s after the ping's write (half the
    # interval, as 7.5 s of the default 15 s), and the player was cut off (1006) in its first
    # second, playing all along. And when the session had ended well, a pong that came after
    # the gateway had stopped reading made the kernel reset the connection, and the player
    # lost the last seconds of its audio.
    rate, width = 48000, 4
    text = "This is a sentence that the player hears at real time, word by word. " * 7
    async with _gateway(edge, edge_adapter.address, ping_s=0.5) as server:
        reader, writer, conn = await connect(server.port, "/v1/tts/stream?lead_ms=0", edge.key)
        for msg in (
            {
                "contextId": "c1",
                "open": {
                    "model": "tts_espeak",
                    "outputFormat": {"encoding": "AUDIO_ENCODING_PCM_F32LE", "sampleRateHz": rate},
                },
            },
            {"contextId": "c1", "append": {"text": text}},
            {"contextId": "c1", "close": {}},
            {"closeSession": {}},
        ):
            writer.write(conn.send(TextMessage(data=json.dumps(msg))))
        await writer.drain()
        started = time.monotonic()
        audio_bytes, pings, events, closed_with, text = 0, 0, [], None, ""
        async with asyncio.timeout(120):
            while closed_with is None:
                # Read no faster than the audio plays (2 % ahead, for the frames' headers and
                # the JSON): what has played by now, at most.
                allowed = (time.monotonic() - started) * rate * width * 1.02 + 4096
                if audio_bytes >= allowed:
                    await asyncio.sleep(0.05)
                    continue
                data = await reader.read(4096)
                if not data:
                    break
                conn.receive_data(data)
                for event in conn.events():
                    if isinstance(event, BytesMessage):
                        audio_bytes += len(event.data)
                    elif isinstance(event, TextMessage):  # wsproto gives a message in parts
                        text += event.data
                        if event.message_finished:
                            events.append(json.loads(text))
                            text = ""
                    elif isinstance(event, Ping):
                        pings += 1
                        writer.write(conn.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        closed_with = event.code
                        writer.write(conn.send(event.response()))
        writer.close()
    played_s = time.monotonic() - started
    audio_s = audio_bytes / (rate * width)
    print(f"\nplayer: {audio_s:.1f} s of audio over {played_s:.1f} s, {pings} pings answered")
    assert audio_s > 22, audio_s  # more than the socket buffers hold
    assert pings >= 1, pings  # the gateway did ping it, behind the audio
    assert closed_with == 1000, (closed_with, events[-3:])
    assert any("summary" in e for e in events), events[-3:]


@on_session_loop
async def test_a_client_that_answers_no_ping_is_let_go_and_one_that_does_stays(
    edge: Edge, edge_adapter
):
    async with _gateway(edge, edge_adapter.address) as server:
        url = f"ws://127.0.0.1:{server.port}/v1/stt/stream?model=stt_pocketsphinx"
        url += "&encoding=pcm_s16le&sample_rate=16000"
        headers = {"Authorization": f"Bearer {edge.key}"}
        async with aiohttp.ClientSession() as http:
            # autoping=False: this client sees the gateway's pings and answers none of them.
            mute = await http.ws_connect(url, headers=headers, autoping=False)
            # aiohttp's client answers pings by itself (autoping).
            alive = await http.ws_connect(url, headers=headers)
            started = time.monotonic()
            pings = 0
            async with asyncio.timeout(30):
                async for msg in mute:
                    if msg.type is aiohttp.WSMsgType.PING:
                        pings += 1
            gone_after = time.monotonic() - started
            still_open = not alive.closed
            await alive.close()
    # Its ping after 2 s of silence, its pong late 1 s after that (no audio ahead of it).
    assert pings == 1, pings
    assert 2.5 <= gone_after <= 6, gone_after
    assert mute.close_code in (None, 1006), mute.close_code  # a reset, no close frame
    assert still_open  # the one that answered, silent as long, is there

"""A TTS client that stops reading: the gateway's memory stays bounded and the session ends with
SLOW_CONSUMER (docs/design/edge.md, "Flow control").

The client is a raw WebSocket on wsproto over a small socket buffer, so "stops reading" really
reaches TCP (aiohttp's or websockets' clients read the socket in their own loop). The text is
long enough that its audio, at eSpeak's ~700x real time, would be tens of MB if the gateway
buffered it; the gateway runs in its own process so its RSS is its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import tomllib
from pathlib import Path
from typing import Any

import grpc
import pytest
import tomli_w
from wsproto.events import CloseConnection, TextMessage

from tests.helpers.edge import Edge
from tests.helpers.front import bearer
from tests.helpers.gateway_process import GatewayProcess, start_gateway, write_config
from tests.helpers.raw_ws import RCVBUF, connect
from tests.helpers.status import from_trailers
from voxwire.v1 import audio_pb2, synthesis_pb2, synthesis_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

SynthReq = synthesis_pb2.StreamingSynthesizeRequest

SENTENCE = "This sentence is spoken again and again so the audio is much longer than any buffer. "


_TCP_CLOSE = 7  # linux/tcp_states.h


def _tcp_state(sock: socket.socket) -> int:
    """The socket's TCP state (struct tcp_info's first byte, tcp(7))."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


async def _gateway(edge: Edge, adapter: str, tmp_path: Path, **top: object) -> GatewayProcess:
    """A gateway process of its own with ``runner`` limits (``write_timeout_s`` 1 s unless
    given) and top-level settings ``top``; its log in ``tmp_path / "gw.log"``."""
    config = write_config(tmp_path / "gw.toml", edge, adapter, drain_grace_s=1.0)
    data = tomllib.loads(config.read_text())
    data["runner"] = top.pop("runner", {"write_timeout_s": 1.0})
    data.update(top)
    config.write_text(tomli_w.dumps(data))
    return await start_gateway(config, tmp_path / "gw.log")


async def _speak_over_front(channel: grpc.aio.Channel, key: str, text: str) -> Any:
    """A ``StreamingSynthesize`` call of the front: one bench_tts context (16 kHz) speaking
    ``text``, closed, the call half-closed."""
    call = synthesis_pb2_grpc.SynthesisStub(channel).StreamingSynthesize(
        timeout=60, metadata=bearer(key)
    )
    fmt = audio_pb2.AudioFormat(
        encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000, channels=1
    )
    config = synthesis_pb2.SynthesisContextConfig(model="bench_tts", output_format=fmt)
    for request in (
        SynthReq(context_id="c", open=config),
        SynthReq(context_id="c", append=synthesis_pb2.AppendText(text=text)),
        SynthReq(context_id="c", close=synthesis_pb2.CloseContext()),
    ):
        await call.write(request)
    await call.done_writing()
    return call


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def test_a_client_that_stops_reading_costs_bounded_memory_and_is_reset(
    edge: Edge, edge_adapter, tmp_path: Path
):
    limits = {"write_timeout_s": 3.0, "max_unsent_bytes": 256 * 1024, "client_high_water": 65536}
    # Its ping, behind the unread audio, gets no pong in 3 s.
    gateway = await _gateway(
        edge, edge_adapter.address, tmp_path, runner=limits, ping_interval_seconds=6.0
    )
    try:
        reader, writer, conn = await connect(gateway.port, "/v1/tts/stream?lead_ms=0", edge.key)
        before = rss_kib(gateway.pid)
        open_msg = {
            "contextId": "c1",
            "open": {
                "model": "tts_espeak",
                "outputFormat": {"encoding": "AUDIO_ENCODING_PCM_F32LE", "sampleRateHz": 48000},
            },
        }
        text = SENTENCE * (15_000 // len(SENTENCE))  # ~15 KB: ~25 min of audio, ~280 MB
        for msg in (
            open_msg,
            {"contextId": "c1", "append": {"text": text}},
            {"contextId": "c1", "close": {}},
        ):
            writer.write(conn.send(TextMessage(data=json.dumps(msg))))
        await writer.drain()
        peak = before
        # Reading nothing until the gateway lets go: its keepalive ping gets no pong (it waits
        # behind the audio in the socket), or a write waits write_timeout after the audio it
        # was sent (the socket buffers' ~20 s of it) would have played; whichever comes first.
        sock = writer.get_extra_info("socket")
        waited = 0.0
        while _tcp_state(sock) != _TCP_CLOSE:  # the gateway's reset has arrived
            assert waited < 60, "the gateway kept the connection of a client that reads nothing"
            await asyncio.sleep(0.5)
            waited += 0.5
            peak = max(peak, rss_kib(gateway.pid))
        # Now read: what the gateway had sent, then a reset. The close frame could not get
        # through the full socket, and the gateway does not wait for the client to take it
        # (before: its end of the connection stayed open, with 3.5 MB unsent, for as long as
        # the client kept it, its session long ended).
        events, closed_with = [], None
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(30):
                while data := await reader.read(65536):
                    conn.receive_data(data)
                    for event in conn.events():
                        if isinstance(event, TextMessage):
                            events.append(json.loads(event.data))
                        elif isinstance(event, CloseConnection):
                            closed_with = event.code
        writer.close()
    finally:
        await gateway.stop()
    grown_kib = peak - before
    print(f"\nslow reader: grew {grown_kib} KiB, reset after {waited:.1f} s, {len(events)} events")
    assert grown_kib < 16 * 1024, f"the gateway grew {grown_kib} KiB for one unread session"
    # The gateway ended the session for its slow consumer: never a normal end, and neither
    # its error event nor its close frame got through the full socket.
    assert not any("done" in e or "error" in e for e in events), events
    assert closed_with is None, closed_with


async def test_an_http_speech_client_that_stops_reading_is_let_go_after_its_audio_plays(
    edge: Edge, edge_adapter, tmp_path: Path
):
    # POST /v1/tts has no pacing: its client may take the audio at playback pace (a player), so
    # a write is late only write_timeout after the audio sent before it has played. One that
    # reads nothing at all is let go then, its connection reset,
    # instead of holding its key's place for as long as it keeps the connection open (before:
    # for ever). 48 kHz float samples, so that the socket buffers hold little time of audio.
    gateway = await _gateway(edge, edge_adapter.address, tmp_path)
    loop = asyncio.get_running_loop()
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", gateway.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        text = (SENTENCE * (3_000 // len(SENTENCE))).encode()  # minutes of audio
        writer.write(
            b"POST /v1/tts?model=tts_espeak&container=raw&sample_rate=48000&encoding=pcm_f32le"
            b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
            + f"Authorization: Bearer {edge.key}\r\nContent-Length: {len(text)}\r\n\r\n".encode()
            + text
        )
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        started = loop.time()
        log = tmp_path / "gw.log"
        while "SLOW_CONSUMER" not in log.read_text():  # reading nothing meanwhile
            assert loop.time() - started < 60, "the gateway kept waiting for the client"
            await asyncio.sleep(0.2)
        let_go = loop.time() - started
        # Its connection is reset: the megabytes of audio it left unread in the socket buffers
        # are not held for it (before: the gateway's end stayed open, with them, until the
        # client read or closed; a client that did neither held them for ever).
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(5):
                while await reader.read(1 << 16):
                    pass
        writer.close()
    finally:
        await gateway.stop()
    logged = log.read_text()
    cut = re.search(r"cut after (\d+) bytes \(([\d.]+) s of audio\): SLOW_CONSUMER", logged)
    assert cut, logged[-2000:]
    assert "Error handling request" not in logged  # one line, not an ERROR's traceback
    audio_s = float(cut[2])
    print(f"\nhttp slow reader: sent {cut[1]} B, {audio_s:.1f} s of audio, let go {let_go:.1f} s")
    assert audio_s - 0.5 <= let_go <= audio_s + 10.0, (audio_s, let_go)


async def test_a_grpc_player_taking_audio_at_playback_pace_is_not_a_slow_consumer(
    edge: Edge, edge_adapter, tmp_path: Path
):
    # The gRPC front sends audio as fast as the model makes it (lead 0: a gRPC caller paces its
    # own playback), so a caller that writes each chunk to its audio device takes it at
    # playback pace, its flow-control window shut while it plays what it holds: here for
    # longer than write_timeout (1 s) at a time. A write is late only write_timeout after the
    # audio sent before it has played, as the adapter's and POST /v1/tts's are (before: the
    # gateway failed it SLOW_CONSUMER with the audio half played). The WebSocket has the same
    # rule, but there a player must ask for a lead: the connection's keepalive ping waits
    # behind the audio in the socket buffers, and its pong is late (docs/edge.md).
    gateway = await _gateway(edge, edge_adapter.address, tmp_path)
    words = 30  # 9 s of audio from bench_tts, made far faster than real time
    options = [("grpc.http2.bdp_probe", 0)]  # a 64 KiB window: it fills with 2 s of audio
    try:
        async with grpc.aio.insecure_channel(gateway.grpc_address, options=options) as channel:
            call = await _speak_over_front(channel, edge.key, "word " * words + ".")
            audio_ms, held_ms, pauses = 0, 0, 0
            kinds = []
            async for response in call:
                kinds.append(response.WhichOneof("response"))
                if kinds[-1] == "audio":
                    audio_ms += response.audio.duration_ms
                    held_ms += response.audio.duration_ms
                if held_ms >= 1500:  # plays what it holds, reading nothing meanwhile
                    await asyncio.sleep(held_ms / 1000)
                    held_ms, pauses = 0, pauses + 1
            code = await call.code()
    finally:
        await gateway.stop()
    print(f"\ngrpc player: {audio_ms} ms of audio, {pauses} pauses, {code}")
    assert code == grpc.StatusCode.OK, await call.details()
    assert audio_ms >= words * 300 and pauses >= 4  # all of it (bench_tts: 300 ms a word)
    # The end too: before, a caller still playing 2 s after the session's end (close_flush_s)
    # got OK over a cut stream, the rest of its audio, done and summary never sent.
    assert kinds[-2:] == ["done", "summary"], kinds[-3:]
    assert "SLOW_CONSUMER" not in (tmp_path / "gw.log").read_text()


async def test_a_grpc_caller_that_stops_reading_at_the_end_is_not_told_ok(
    edge: Edge, edge_adapter, tmp_path: Path
):
    # The session ends well (every context done, the summary decided) while the caller reads
    # nothing: what it did not take cannot go out, and its status says so. Before: OK, over a
    # stream cut after close_flush_s.
    gateway = await _gateway(edge, edge_adapter.address, tmp_path)
    options = [("grpc.http2.bdp_probe", 0)]  # a 64 KiB window: 2 s of the 3 s of audio
    try:
        async with grpc.aio.insecure_channel(gateway.grpc_address, options=options) as channel:
            call = await _speak_over_front(channel, edge.key, "word " * 9)
            await asyncio.sleep(10)  # reads nothing: the audio it holds has long played
            kinds = []
            with contextlib.suppress(grpc.aio.AioRpcError):  # the status, checked below
                async for response in call:
                    kinds.append(response.WhichOneof("response"))
            code = await call.code()
            err = from_trailers(dict(await call.trailing_metadata()))
    finally:
        await gateway.stop()
    print(f"\ngrpc caller that stopped reading: {code}, {kinds.count('audio')} chunks")
    assert (code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SLOW_CONSUMER"), kinds
    assert "summary" not in kinds

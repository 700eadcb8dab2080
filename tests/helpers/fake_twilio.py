"""FakeTwilio: a stand-in for Twilio Media Streams, which cannot run here (a fake, named as one).

It plays Twilio's side of a bidirectional ``<Connect><Stream>`` as its "WebSocket Messages" page
describes it: it connects to the application's WebSocket, sends ``connected`` and ``start``,
then the caller's audio as ``media`` messages of 20 ms of 8 kHz mu-law at real time, and
``stop`` at the end. What the application sends back goes into one playout FIFO played at real
time in 20 ms ticks; a ``mark`` is echoed when the audio before it has played (at once when
nothing is before it); ``clear`` empties the FIFO and echoes the marks that were in it, as
Twilio does. It records exactly what it played, so a test can hold the application's idea of
what the caller heard against the truth. With ``outbound`` it plays a forked call
(``<Start><Stream track="both_tracks">``): ``start`` names both tracks, and each 20 ms tick
carries a frame of each track, both stamped on the stream's clock.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.helpers.front import wait_until
from voxwire.client.backoff import Backoff
from voxwire.client.options import SessionOptions
from voxwire.client.twilio_fork import ForkEnded, ForkEvent, TwilioFork
from voxwire.client.twilio_stream import AiohttpSocket

FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
FRAME_S = 0.02
MULAW_SILENCE = b"\xff"


@dataclass
class Clear:
    at: float
    played_bytes: int  # all audio played before the clear, over the call
    dropped_bytes: int  # audio in the FIFO that the clear discarded


@dataclass
class FakeTwilio:
    url: str
    caller: bytes  # the caller's mu-law audio, silence included
    # A forked call (``<Start><Stream track="both_tracks">``): what the caller hears, sent as
    # the ``outbound`` track from ``outbound_from_s`` into the stream (a dialled leg that
    # answers later), its frames stamped on the stream's clock like the caller's.
    outbound: bytes = b""
    outbound_from_s: float = 0.0
    stream_sid: str = "MZ00000000000000000000000000000000"
    call_sid: str = "CA00000000000000000000000000000000"
    encoding: str = "audio/x-mulaw"
    tail_s: float = 1.0  # silence after the caller's audio, before ``stop``
    hang_up: bool = False  # close the socket after the tail instead of sending ``stop``
    # The network between Twilio and the application, each way: every message either side
    # sends is handled this much later (in order).
    one_way_s: float = 0.0
    # Spans of the stream's clock (from, to) in s whose media Twilio discards, every track (its
    # warning 31930: the socket did not keep up); the frames after carry their own timestamps.
    dropped: tuple[tuple[float, float], ...] = ()
    played: bytearray = field(default_factory=bytearray)
    clears: list[Clear] = field(default_factory=list)
    echoed: list[str] = field(default_factory=list)
    # (time, bytes played so far) at the first audio after each idle FIFO: where replies start
    starts: list[tuple[float, int]] = field(default_factory=list)
    received_bytes: int = 0
    _fifo: deque[bytes | str] = field(default_factory=deque)
    _out: asyncio.Queue[tuple[float, str]] = field(default_factory=asyncio.Queue)
    _in: asyncio.Queue[tuple[float, str]] = field(default_factory=asyncio.Queue)

    async def run(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s), aiohttp.ClientSession() as http:
            async with http.ws_connect(self.url, autoping=True) as ws:
                await ws.send_str(
                    json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
                )
                await ws.send_str(
                    json.dumps(
                        {
                            "event": "start",
                            "sequenceNumber": "1",
                            "start": {
                                "streamSid": self.stream_sid,
                                "callSid": self.call_sid,
                                "accountSid": "AC0",
                                "tracks": ["inbound", "outbound"] if self.outbound else ["inbound"],
                                "customParameters": {"tenant": "test"},
                                "mediaFormat": {
                                    "encoding": self.encoding,
                                    "sampleRate": 8000,
                                    "channels": 1,
                                },
                            },
                            "streamSid": self.stream_sid,
                        }
                    )
                )
                receiver = asyncio.create_task(self._receive(ws))
                player = asyncio.create_task(self._play(ws))
                lines = [
                    asyncio.create_task(self._line(self._out, ws.send_str)),
                    asyncio.create_task(self._line(self._in, lambda text: self._handle(ws, text))),
                ]
                try:
                    await self._send_caller(ws)
                    if self.hang_up:
                        return  # the socket closes on leaving: no ``stop``
                    if not ws.closed:
                        await self._send(
                            ws,
                            json.dumps(
                                {
                                    "event": "stop",
                                    "streamSid": self.stream_sid,
                                    "stop": {"callSid": self.call_sid},
                                }
                            ),
                        )
                    await receiver  # until the application closes the socket
                finally:
                    for task in (player, receiver, *lines):
                        task.cancel()
                    await asyncio.gather(player, receiver, *lines, return_exceptions=True)

    async def _send_caller(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        audio = self.caller + MULAW_SILENCE * int(8000 * self.tail_s)
        first_outbound = round(self.outbound_from_s / FRAME_S)
        sequence = 1
        due = time.monotonic()
        for index, offset in enumerate(range(0, len(audio), FRAME_BYTES)):
            if ws.closed:
                return  # the application ended the call: Twilio stops streaming
            frames = [("inbound", index, audio[offset : offset + FRAME_BYTES])]
            out_at = (index - first_outbound) * FRAME_BYTES
            if self.outbound and 0 <= out_at < len(self.outbound):
                frames.append(
                    (
                        "outbound",
                        index - first_outbound,
                        self.outbound[out_at : out_at + FRAME_BYTES],
                    )
                )
            at_s = index * FRAME_S
            if any(begin <= at_s < end for begin, end in self.dropped):
                frames = []
            for track, chunk, payload in frames:
                sequence += 1
                try:
                    await self._send(ws, self._media(sequence, track, chunk, index * 20, payload))
                except aiohttp.ClientConnectionResetError:
                    return  # closing under us
            due += FRAME_S
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    def _media(self, sequence: int, track: str, chunk: int, timestamp_ms: int, audio: bytes) -> str:
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": str(sequence),
                "streamSid": self.stream_sid,
                "media": {
                    "track": track,
                    "chunk": str(chunk + 1),
                    "timestamp": str(timestamp_ms),
                    "payload": base64.b64encode(audio).decode(),
                },
            }
        )

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            if self.one_way_s:
                self._in.put_nowait((time.monotonic() + self.one_way_s, msg.data))
            else:
                await self._handle(ws, msg.data)
        if self.one_way_s:
            await self._in.join()  # what is still on the way arrives before the end

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
        if self.one_way_s:
            self._out.put_nowait((time.monotonic() + self.one_way_s, text))
        else:
            await ws.send_str(text)

    @staticmethod
    async def _line(queue: asyncio.Queue[tuple[float, str]], deliver: Any) -> None:
        """A one-way delay: each message is delivered at its due time, in order."""
        while True:
            due, text = await queue.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await deliver(text)
            queue.task_done()

    async def _handle(self, ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
        message = json.loads(text)
        assert message.get("streamSid") == self.stream_sid, message
        if message["event"] == "media":
            audio = base64.b64decode(message["media"]["payload"])
            self.received_bytes += len(audio)
            if not any(isinstance(item, bytes) for item in self._fifo):
                self.starts.append((time.monotonic(), len(self.played)))
            self._fifo.append(audio)
        elif message["event"] == "mark":
            self._fifo.append(message["mark"]["name"])
            await self._echo_head(ws)
        elif message["event"] == "clear":
            dropped = sum(len(item) for item in self._fifo if isinstance(item, bytes))
            self.clears.append(Clear(time.monotonic(), len(self.played), dropped))
            marks = [item for item in self._fifo if isinstance(item, str)]
            self._fifo.clear()
            for name in marks:
                await self._send_echo(ws, name)

    async def _play(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        due = time.monotonic()
        while True:
            due += FRAME_S
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            budget = FRAME_BYTES
            while budget and self._fifo and isinstance(self._fifo[0], bytes):
                head = self._fifo.popleft()
                assert isinstance(head, bytes)
                take = head[:budget]
                self.played += take
                budget -= len(take)
                if len(head) > len(take):
                    self._fifo.appendleft(head[len(take) :])
            await self._echo_head(ws)

    async def _echo_head(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while self._fifo and isinstance(self._fifo[0], str):
            name = self._fifo.popleft()
            assert isinstance(name, str)
            await self._send_echo(ws, name)

    async def _send_echo(self, ws: aiohttp.ClientWebSocketResponse, name: str) -> None:
        self.echoed.append(name)
        await self._send(
            ws,
            json.dumps(
                {
                    "event": "mark",
                    "streamSid": self.stream_sid,
                    "sequenceNumber": "0",
                    "mark": {"name": name},
                }
            ),
        )


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """The application's server, as its user runs it, on a free loopback port: its runner (to
    clean up) and its base URL for FakeTwilio (``ws://127.0.0.1:<port>``)."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"ws://127.0.0.1:{runner.addresses[0][1]}"


async def run_fork(
    gateway_ws: str,
    key: str,
    caller: bytes,
    agent: bytes,
    *,
    outbound_from_s: float = 1.0,
    tail_s: float = 1.0,
    **accept: Any,
) -> tuple[list[ForkEvent], list[BaseException]]:
    """A forked call played to an application whose socket runs ``TwilioFork.accept`` on
    ``gateway_ws`` (one connection attempt, ``accept``'s other options given): the events it
    read, and what it failed with (at ``accept`` or from ``events()``)."""
    events: list[ForkEvent] = []
    failures: list[BaseException] = []

    async def fork_socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            fork = await TwilioFork.accept(
                AiohttpSocket(ws),
                gateway_ws,
                api_key=key,
                stt_model="stt_pocketsphinx",
                options=SessionOptions(backoff=Backoff(max_attempts=1)),
                **accept,
            )
            async for event in fork.events():
                events.append(event)
        except Exception as exc:  # what the application sees
            failures.append(exc)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/fork", fork_socket)
    runner, base = await serve(app)
    twilio = FakeTwilio(
        f"{base}/fork", caller, outbound=agent, outbound_from_s=outbound_from_s, tail_s=tail_s
    )
    try:
        await twilio.run(timeout_s=40)
        # The application reads the fork's end after the socket's.
        await wait_until(lambda: bool(failures or events and isinstance(events[-1], ForkEnded)), 15)
    finally:
        await runner.cleanup()
    return events, failures

"""Paced latency of one path at N streams, from the load client (this process).

Every stream sends FRAME (3200 bytes, 100 ms of 16 kHz PCM16) every 100 ms from a random offset
within the first 100 ms; latency is send -> the same bytes back, per message; the first second
of each stream is warm-up and not counted. CPU is read from /proc over the measured phase only.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import grpc

from benchmarks.echo_server import ECHO_METHOD
from benchmarks.edge_stack.common import FRAME, MAX_MESSAGE_BYTES
from benchmarks.stack import Pids, Stats, cpu_snapshot, usage

CHUNK_S = 0.1
WARMUP_S = 1.0
STEP_TIMEOUT_S = 10.0
OPEN_TIMEOUT_S = 30.0


class Link(Protocol):
    async def open(self) -> None: ...
    async def send(self) -> None: ...
    async def receive(self) -> None: ...
    async def close(self) -> None: ...


class WebSocketLink:
    """One client WebSocket (aiohttp's client) to a stack's /relay or /echo."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(self) -> None:
        self.ws = await self.session.ws_connect(self.url, max_msg_size=MAX_MESSAGE_BYTES)

    async def send(self) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(FRAME)

    async def receive(self) -> None:
        assert self.ws is not None
        message = await self.ws.receive()
        if message.type is not aiohttp.WSMsgType.BINARY or len(message.data) != len(FRAME):
            raise RuntimeError(f"expected the echoed frame, got {message.type!r}")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


class GrpcLink:
    """One grpc.aio bidi stream straight to the echo upstream: the floor."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.call = channel.stream_stream(ECHO_METHOD)()

    async def open(self) -> None:
        pass

    async def send(self) -> None:
        await self.call.write(FRAME)

    async def receive(self) -> None:
        message = await self.call.read()
        if message is grpc.aio.EOF or len(message) != len(FRAME):
            raise RuntimeError("expected the echoed frame")

    async def close(self) -> None:
        await self.call.done_writing()
        while await self.call.read() is not grpc.aio.EOF:
            pass


@dataclass
class Measured:
    stats: Stats
    ms: list[float]
    messages: int  # frames sent during the measured phase
    cpu_us: dict[str, float]  # CPU µs per message per process group; _busy etc. in %


async def _pace(link: Link, sent: list[float], got: list[float], start_at: float) -> None:
    async def writer() -> None:
        for i in range(len(sent)):
            await asyncio.sleep(max(0.0, start_at + i * CHUNK_S - time.monotonic()))
            sent[i] = time.monotonic()
            await asyncio.wait_for(link.send(), STEP_TIMEOUT_S)

    async def reader() -> None:
        for i in range(len(got)):
            await asyncio.wait_for(link.receive(), STEP_TIMEOUT_S)
            got[i] = time.monotonic()  # in order: the i-th echo answers the i-th frame

    tasks = [asyncio.create_task(writer()), asyncio.create_task(reader())]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_paced(
    make: Callable[[], Link], streams: int, seconds: float, procs: dict[str, Pids]
) -> Measured:
    """Open ``streams`` links, pace them for ``seconds``, close them."""
    n = round(seconds / CHUNK_S)
    links = [make() for _ in range(streams)]
    sent = [[math.nan] * n for _ in links]
    got = [[math.nan] * n for _ in links]
    await asyncio.wait_for(asyncio.gather(*(link.open() for link in links)), OPEN_TIMEOUT_S)
    start = time.monotonic() + 0.2
    measured_from = start + WARMUP_S + CHUNK_S  # every stream is past its warm-up
    snapshots: list[dict[str, float]] = []

    async def first_snapshot() -> None:
        await asyncio.sleep(measured_from - time.monotonic())
        snapshots.append(cpu_snapshot(procs, client=True))

    snapper = asyncio.create_task(first_snapshot())
    pacing = [
        _pace(link, s, g, start + random.uniform(0, CHUNK_S))
        for link, s, g in zip(links, sent, got, strict=True)
    ]
    results = await asyncio.wait_for(
        asyncio.gather(*pacing, return_exceptions=True), seconds + OPEN_TIMEOUT_S
    )
    after = cpu_snapshot(procs, client=True)
    await snapper
    errors = [f"stream: {r!r}" for r in results if isinstance(r, BaseException)]
    closed = await asyncio.wait_for(
        asyncio.gather(*(link.close() for link in links), return_exceptions=True), OPEN_TIMEOUT_S
    )
    errors += [f"close: {c!r}" for c in closed if isinstance(c, BaseException)]
    warm = round(WARMUP_S / CHUNK_S)
    pairs = [
        (s, g)
        for ss, gg in zip(sent, got, strict=True)
        for s, g in list(zip(ss, gg, strict=True))[warm:]
    ]
    ms = [(g - s) * 1000 for s, g in pairs if not math.isnan(g)]
    messages = sum(1 for ss in sent for s in ss if s >= measured_from)
    return Measured(
        Stats.of(ms, len(pairs) - len(ms), errors),
        ms,
        messages,
        usage(snapshots[0], after, messages),
    )

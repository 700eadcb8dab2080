"""Backpressure and HTTP streaming, per stack: short functional checks with figures.

- WebSocket out (``/flood``): the server sends FRAME as fast as its send() returns to a peer
  that reads nothing. Real backpressure: send() blocks once the buffers fill, so the bytes it
  accepted stop growing and the server's memory stays flat.
- WebSocket in (``/sink``): the handler does not read for SINK_HOLD_S while the peer writes
  as fast as TCP lets it. Real backpressure: the server stops reading the socket, so the
  peer's writes block.
- HTTP in (``/upload``): a chunked request body is read chunk by chunk while it arrives (the
  handler sees the first chunk before the rest is sent), and a handler that does not read
  pushes back on the uploader.
- HTTP out (``/events``): an SSE response to a peer that stops reading: the producer's writes
  block, and every event arrives once the peer reads again.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import h11

from benchmarks.edge_stack.common import FRAME, FRAME_BYTES, SINK_HOLD_S
from benchmarks.edge_stack.idle import memory_kib
from benchmarks.edge_stack.peers import RawHttp, RawWebSocket

RCVBUF = 65536  # the stalled peer's socket receive buffer
FLOOD_PHASE_S = 5.0  # the flood is sampled after one and two of these
PUSH_S = SINK_HOLD_S - 1.0  # the peer pushes this long while the handler is not reading
PUSH_CAP = 256 << 20
UPLOAD_CHUNKS = 100
STALL_S = 1.5  # /events: two samples this far apart while the peer is not reading


async def stats(http: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{port}/stats") as response:
        result: dict[str, Any] = await response.json()
        return result


async def check_flood(http: aiohttp.ClientSession, port: int, pid: int) -> dict[str, Any]:
    """Server -> a WebSocket peer that reads nothing, for 2 x FLOOD_PHASE_S."""
    rss0 = memory_kib(pid)["rss"]
    peer = await RawWebSocket.connect(port, "/flood", rcvbuf=RCVBUF)
    samples = []
    for _ in range(2):
        await asyncio.sleep(FLOOD_PHASE_S)
        samples.append(((await stats(http, port))["flood"], memory_kib(pid)["rss"] - rss0))
    peer.abort()
    ended = await _producer_end(http, port, "flood")
    (first, grew1), (second, grew2) = samples
    return {
        "accepted_1": first["bytes"],
        "accepted_2": second["bytes"],
        "longest_send_s": second["longest_s"],
        "pending_s": second["pending_s"],
        "rss_growth_kib_1": grew1,
        "rss_growth_kib_2": grew2,
        "ended": ended,
    }


async def _producer_end(http: aiohttp.ClientSession, port: int, name: str) -> str:
    """How the producer ended after its peer went away ('' if not within 10 s)."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if ended := (await stats(http, port))[name]["ended"]:
            return str(ended)
        await asyncio.sleep(0.2)
    return ""


async def check_sink(port: int, pid: int) -> dict[str, Any]:
    """A WebSocket peer writes as fast as it can while the server's handler is not reading."""
    rss0 = memory_kib(pid)["rss"]
    peer = await RawWebSocket.connect(port, "/sink")
    pushed = await _push(peer.writer, lambda: peer.write_frame(FRAME), FRAME_BYTES)
    grew = memory_kib(pid)["rss"] - rss0
    peer.abort()
    return {"pushed": pushed, "rss_growth_kib": grew}


async def _push(writer: asyncio.StreamWriter, write: Any, size: int) -> int:
    """Write for PUSH_S (or PUSH_CAP bytes); the bytes whose write drained."""
    pushed = 0
    deadline = time.monotonic() + PUSH_S
    while pushed < PUSH_CAP and (left := deadline - time.monotonic()) > 0:
        write()
        try:
            await asyncio.wait_for(writer.drain(), left)
        except TimeoutError:
            break
        pushed += size
    return pushed


async def check_upload(http: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    """Chunked upload: when the handler sees the first chunk, and what it read in all."""
    peer = await RawHttp.connect(port)
    peer.request("POST", "/upload", chunked=True)
    peer.write(h11.Data(data=FRAME))
    began, seen_ms = time.monotonic(), None
    while time.monotonic() - began < 2.0:
        if (await stats(http, port))["upload"]["bytes"] == FRAME_BYTES:
            seen_ms = (time.monotonic() - began) * 1000
            break
        await asyncio.sleep(0.01)
    for _ in range(UPLOAD_CHUNKS - 1):
        peer.write(h11.Data(data=FRAME))
        await peer.writer.drain()
    peer.write(h11.EndOfMessage())
    response, body = await _read_response(peer)
    peer.abort()
    read = json.loads(body)
    return {
        "status": response.status_code,
        "first_chunk_seen_ms": seen_ms,
        "bytes": read["bytes"],
        "expected": UPLOAD_CHUNKS * FRAME_BYTES,
        "reads": read["reads"],
        "largest_read": read["largest"],
    }


async def _read_response(peer: RawHttp) -> tuple[h11.Response, bytes]:
    response = await peer.next_event()
    body = b""
    while not isinstance(event := await peer.next_event(), h11.EndOfMessage):
        body += event.data
    return response, body


async def check_slow_upload(port: int, pid: int) -> dict[str, Any]:
    """A chunked upload to a handler that does not read for SINK_HOLD_S."""
    rss0 = memory_kib(pid)["rss"]
    peer = await RawHttp.connect(port)
    peer.request("POST", "/upload?hold=1", chunked=True)
    chunk = FRAME * 20  # 64000 bytes
    pushed = await _push(peer.writer, lambda: peer.write(h11.Data(data=chunk)), len(chunk))
    grew = memory_kib(pid)["rss"] - rss0
    peer.abort()
    return {"pushed": pushed, "rss_growth_kib": grew}


async def check_events(http: aiohttp.ClientSession, port: int, pid: int) -> dict[str, Any]:
    """SSE to a peer that stops reading after the first event, then reads it all."""
    rss0 = memory_kib(pid)["rss"]
    peer = await RawHttp.connect(port, rcvbuf=RCVBUF)
    peer.request("GET", "/events")
    response = await peer.next_event()
    first = await peer.next_event()
    samples = []
    for _ in range(2):
        await asyncio.sleep(STALL_S)
        samples.append((await stats(http, port))["events"])
    grew = memory_kib(pid)["rss"] - rss0
    body = bytearray(first.data)
    while not isinstance(event := await peer.next_event(), h11.EndOfMessage):
        body += event.data
    peer.abort()
    final = (await stats(http, port))["events"]
    return {
        "status": response.status_code,
        "content_type": dict(response.headers).get(b"content-type", b"").decode(),
        "accepted_1": samples[0]["bytes"],
        "accepted_2": samples[1]["bytes"],
        "pending_s": samples[1]["pending_s"],
        "rss_growth_kib": grew,
        "received": len(body),
        "produced": final["bytes"],
        "events": body.count(b"\n\n"),
        "events_produced": final["sends"],
    }

"""Idle WebSockets: the server's memory per connection and its heartbeat at 10,000.

The client opens authenticated WebSockets to /idle (each holds a ``GatewaySession`` on the
server) and answers every ping itself (``autoping=False``) so it can count them. The server
pings each connection every ``heartbeat`` seconds and closes one whose pong is ``heartbeat / 2``
late, so a connection that is still open after several pings had its pongs read in time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from benchmarks.edge_stack.common import TOKEN
from benchmarks.stack import cpu_snapshot

OPEN_CONCURRENCY = 100
OPEN_TIMEOUT_S = 600.0  # to open one step's connections (a loaded machine is slow)
SETTLE_S = 2.0


def memory_kib(pid: int) -> dict[str, int]:
    """RSS (/proc/<pid>/status) and USS (private pages, /proc/<pid>/smaps_rollup) in KiB."""
    out = {"rss": 0, "uss": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss"] = int(line.split()[1])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            out["uss"] += int(line.split()[1])
    return out


@dataclass
class IdleClient:
    """A WebSocket that waits, answering pings and noting when they came."""

    ws: aiohttp.ClientWebSocketResponse
    pings: list[float] = field(default_factory=list)
    closed_by_server: bool = False
    task: asyncio.Task[None] | None = None

    async def listen(self) -> None:
        while True:
            message = await self.ws.receive()
            if message.type is aiohttp.WSMsgType.PING:
                self.pings.append(time.monotonic())
                await self.ws.pong(message.data)
            elif message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.ERROR,
            ):
                self.closed_by_server = True
                return


async def open_idle(
    session: aiohttp.ClientSession, url: str, count: int, into: list[IdleClient]
) -> float:
    """Open ``count`` more idle WebSockets (at most OPEN_CONCURRENCY handshakes at a time);
    returns the seconds it took. Raises on the first that fails."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def one() -> None:
        async with gate:
            ws = await session.ws_connect(
                url, headers=headers, autoping=False, timeout=aiohttp.ClientWSTimeout(ws_close=2.0)
            )
        client = IdleClient(ws)
        client.task = asyncio.create_task(client.listen())
        into.append(client)

    began = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), OPEN_TIMEOUT_S)
    return time.monotonic() - began


async def measure_idle(
    port: int, pid: int, steps: list[int], hold_s: float, grpc_stream: bool = False
) -> dict[str, Any]:
    """Memory before and after each step of idle connections (cumulative counts), then hold
    the last count for ``hold_s`` seconds of heartbeats."""
    url = f"http://127.0.0.1:{port}/idle" + ("?grpc=1" if grpc_stream else "")
    connector = aiohttp.TCPConnector(limit=0)
    clients: list[IdleClient] = []
    out: dict[str, Any] = {"steps": []}
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            await asyncio.sleep(SETTLE_S)
            base = memory_kib(pid)
            out["base"] = base
            for total in steps:
                try:
                    took = await open_idle(session, url, total - len(clients), clients)
                except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                    out["error"] = f"{len(clients):,} of {total:,} opened: {exc!r}"
                    return out
                await asyncio.sleep(SETTLE_S)
                now = memory_kib(pid)
                per = {k: (now[k] - base[k]) / total for k in now}
                out["steps"].append(
                    {"connections": total, "open_s": took, **now, "per_conn_kib": per}
                )
            if hold_s > 0:
                out["heartbeat"] = await _hold(clients, pid, hold_s)
        finally:
            for client in clients:
                if client.task is not None:
                    client.task.cancel()
            await asyncio.gather(*(c.task for c in clients if c.task), return_exceptions=True)
            await asyncio.wait_for(
                asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True), 60
            )
    return out


async def _hold(clients: list[IdleClient], pid: int, hold_s: float) -> dict[str, Any]:
    procs = {"server": lambda: [pid]}
    for client in clients:
        client.pings.clear()
    before = cpu_snapshot(procs, client=True)
    began = time.monotonic()
    await asyncio.sleep(hold_s)
    after = cpu_snapshot(procs, client=True)
    pings = [len(c.pings) for c in clients]
    gaps = [b - a for c in clients for a, b in zip(c.pings, c.pings[1:], strict=False)]
    wall = time.monotonic() - began
    total = sum(pings)
    cpu_s = after["server"] - before["server"]
    p50, p99 = np.percentile(gaps, [50, 99]).tolist() if gaps else [float("nan")] * 2
    return {
        "connections": len(clients),
        "open_at_end": sum(1 for c in clients if not c.closed_by_server and not c.ws.closed),
        "closed_by_server": sum(1 for c in clients if c.closed_by_server),
        "held_s": wall,
        "pings": total,
        "pings_min": min(pings, default=0),
        "pings_median": float(np.median(pings)) if pings else 0.0,
        "gap_p50_s": p50,
        "gap_p99_s": p99,
        "gap_max_s": max(gaps, default=float("nan")),
        "server_cpu_pct": 100 * cpu_s / wall,
        "server_us_per_ping": 1e6 * cpu_s / max(total, 1),
        "client_cpu_pct": 100 * (after["client"] - before["client"]) / wall,
    }

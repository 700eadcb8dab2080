"""The gateway's memory per idle WebSocket session, and 10,000 idle sessions held by one process.

One gateway process (``python -m gateway``, RLIMIT_NOFILE raised to its hard limit, as is this
client's) in front of ``benchmarks.null_adapter`` (a named stand-in: the real adapter and
Triton cannot hold 10,000 streams here). This process opens authenticated WebSockets
(``Authorization: Bearer``, 100 handshakes at a time) to ``/v1/stt/stream`` in one of two
modes, each on a fresh gateway:

- ``connected``: authenticated, no config: the session exists in AWAITING_START (its runner,
  its tasks, its slot in the key's limits), no upstream stream;
- ``started``: the config in the query string: the session has started, holds its replay
  window and its upstream ``StreamingTranscribe`` stream (the client waits for ``started``).

Memory: the gateway's RSS (and USS) before and after each step (cumulative counts), per
session. Then the sessions are held for ``--hold`` seconds: the gateway pings each socket
every ``ping_interval_seconds`` (gateway/keepalive.py: the ping goes out that long after the
last frame *received*, and a pong later than half the interval resets the connection); this client
answers every ping itself (to count them) and sends each session a ``keepAlive`` every
``--keepalive`` seconds (the gateway ends a session silent for 30 s). Counted: pings per
session, sessions the gateway closed, the gateway's CPU. With the same keepalives, holds at
two ping intervals give the CPU a ping costs (the difference over the pings' difference).

    python -m benchmarks.gateway_idle [--steps 1000,10000] [--hold 60] [--keepalive 25]
        [--runs connected:15,started:15,started:30] [--json out/bench/gateway_idle.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from benchmarks.edge_stack.idle import memory_kib
from benchmarks.gateway_stack import GatewaySetup, gateway_process, gateway_setup
from benchmarks.stack import cpu_delta, cpu_snapshot, raise_nofile, server_process
from voxwire.edge.messages import encode
from voxwire.edge.v1 import stt_pb2
from voxwire.v1 import stream_pb2

OPEN_CONCURRENCY = 100
OPEN_TIMEOUT_S = 900.0  # one step's sessions, on a loaded machine
SETTLE_S = 3.0
STARTED_TIMEOUT_S = 300.0  # one session's started, while thousands open on a loaded machine
KEEPALIVE = encode(stt_pb2.SttClientMessage(keep_alive=stream_pb2.KeepAlive()))
STARTED_QUERY = "model=bench_stt&encoding=pcm_s16le&sample_rate=16000"


@dataclass(eq=False)
class IdleSession:
    """One WebSocket: answers pings itself and notes when they came."""

    ws: aiohttp.ClientWebSocketResponse
    started: asyncio.Event = field(default_factory=asyncio.Event)
    pings: list[float] = field(default_factory=list)
    closed: bool = False
    close_code: int | None = None
    errors: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def listen(self) -> None:
        while True:
            message = await self.ws.receive()
            if message.type is aiohttp.WSMsgType.PING:
                self.pings.append(time.monotonic())
                await self.ws.pong(message.data)
            elif message.type is aiohttp.WSMsgType.TEXT:
                data = json.loads(message.data)
                if "started" in data:
                    self.started.set()
                elif "error" in data:
                    self.errors.append(str(data["error"].get("reason")))
            elif message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                self.closed = True
                self.close_code = self.ws.close_code
                self.started.set()
                return


async def open_sessions(
    http: aiohttp.ClientSession, url: str, key: str, count: int, into: list[IdleSession]
) -> float:
    """Open ``count`` more sessions; returns the seconds it took. Raises on the first failure
    (a refused handshake, or a started session that did not start)."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    started = "?" in url

    async def one() -> None:
        async with gate:
            ws = await http.ws_connect(
                url,
                headers={"Authorization": f"Bearer {key}"},
                autoping=False,
                heartbeat=None,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            )
            session = IdleSession(ws)
            session.task = asyncio.create_task(session.listen())
            into.append(session)
            if started:
                async with asyncio.timeout(STARTED_TIMEOUT_S):
                    await session.started.wait()
                if session.closed:
                    raise RuntimeError(f"session closed at start: {session.errors}")

    began = time.monotonic()
    async with asyncio.timeout(OPEN_TIMEOUT_S):
        await asyncio.gather(*(one() for _ in range(count)))
    return time.monotonic() - began


async def _keepalives(sessions: list[IdleSession], every_s: float) -> None:
    """Each session sends keepAlive every ``every_s``, the sessions spread over the period."""
    tick = 0
    while True:
        await asyncio.sleep(1.0)
        slot = tick % round(every_s)
        for i in range(slot, len(sessions), round(every_s)):
            session = sessions[i]
            if not session.closed:
                with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                    await session.ws.send_str(KEEPALIVE)
        tick += 1


async def _sessions_seen(http: aiohttp.ClientSession, base: str) -> int:
    async with http.get(f"{base}/readyz") as response:
        return int((await response.json()).get("sessions", -1))


async def one_run(
    setup: GatewaySetup, workdir: Path, mode: str, interval: float, args: argparse.Namespace
) -> dict[str, Any]:
    """A fresh gateway with ``ping_interval_seconds = interval``: steps of sessions in
    ``mode``, then the hold."""
    out: dict[str, Any] = {"mode": mode, "ping_interval_s": interval, "steps": []}
    log = workdir / f"gateway-{mode}-{interval:g}.log"
    async with gateway_process(setup, log) as (proc, port):
        base = f"http://127.0.0.1:{port}"
        url = f"ws://127.0.0.1:{port}/v1/stt/stream" + (
            f"?{STARTED_QUERY}" if mode == "started" else ""
        )
        sessions: list[IdleSession] = []
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            keepalive = asyncio.create_task(_keepalives(sessions, args.keepalive))
            try:
                await asyncio.sleep(SETTLE_S)
                before = memory_kib(proc.pid)
                out["base_kib"] = before
                for total in args.steps:
                    more = total - len(sessions)
                    took = await open_sessions(http, url, setup.key, more, sessions)
                    await asyncio.sleep(SETTLE_S)
                    now = memory_kib(proc.pid)
                    out["steps"].append(
                        {
                            "sessions": total,
                            "open_s": took,
                            "gateway_sessions": await _sessions_seen(http, base),
                            "rss_kib": now["rss"],
                            "per_session_kib": {k: (now[k] - before[k]) / total for k in now},
                        }
                    )
                    print(f"  {mode} {interval:g} s: {out['steps'][-1]}", file=sys.stderr)
                out["hold"] = await _hold(sessions, proc.pid, args.hold)
                out["hold"]["gateway_sessions"] = await _sessions_seen(http, base)
            finally:
                keepalive.cancel()
                for session in sessions:
                    if session.task is not None:
                        session.task.cancel()
                await asyncio.gather(*(s.task for s in sessions if s.task), return_exceptions=True)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(120):
                        await asyncio.gather(
                            *(s.ws.close() for s in sessions), return_exceptions=True
                        )
    return out


async def _hold(sessions: list[IdleSession], pid: int, hold_s: float) -> dict[str, Any]:
    procs = {"gateway": lambda: [pid]}
    for session in sessions:
        session.pings.clear()
    before = cpu_snapshot(procs, client=True)
    began = time.monotonic()
    await asyncio.sleep(hold_s)
    after = cpu_snapshot(procs, client=True)
    wall = time.monotonic() - began
    used = cpu_delta(before, after)
    pings = [len(s.pings) for s in sessions]
    gaps = [b - a for s in sessions for a, b in zip(s.pings, s.pings[1:], strict=False)]
    p50, p99 = np.percentile(gaps, [50, 99]).tolist() if gaps else [float("nan")] * 2
    codes: dict[str, int] = {}
    for s in sessions:
        if s.closed:
            codes[str(s.close_code)] = codes.get(str(s.close_code), 0) + 1
    return {
        "sessions": len(sessions),
        "held_s": wall,
        "pings": sum(pings),
        "pings_per_session_min": min(pings, default=0),
        "pings_per_session_median": float(np.median(pings)) if pings else 0.0,
        "ping_gap_p50_s": p50,
        "ping_gap_p99_s": p99,
        "closed_by_gateway": sum(1 for s in sessions if s.closed),
        "close_codes": codes,
        "gateway_cpu_pct": 100 * used["gateway"] / wall,
        "client_cpu_pct": 100 * used["client"] / wall,
        "machine_busy_pct": used["_busy"],
    }


def _runs(text: str) -> list[tuple[str, float]]:
    runs = []
    for part in text.split(","):
        mode, _, interval = part.partition(":")
        if mode not in ("connected", "started"):
            raise argparse.ArgumentTypeError(f"mode {mode!r}: connected or started")
        runs.append((mode, float(interval or 15)))
    return runs


async def main(args: argparse.Namespace) -> dict[str, Any]:
    nofile = raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="voxwire-gateway-idle-"))
    print(f"logs under {workdir}; RLIMIT_NOFILE {nofile}", file=sys.stderr)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "nproc": os.cpu_count(),
        "rlimit_nofile": nofile,
        "load_average_before": os.getloadavg(),
        "keepalive_s": args.keepalive,
        "hold_s": args.hold,
        "command": "python -m benchmarks.gateway_idle " + " ".join(sys.argv[1:]),
        "runs": [],
    }
    async with server_process(["benchmarks.null_adapter"], workdir / "adapter.log", True) as (
        _,
        port,
    ):
        for mode, interval in args.runs:
            setup = gateway_setup(
                workdir / "gateway",
                [f"127.0.0.1:{port}"],
                name=f"gateway-{interval:g}",
                ping_interval_seconds=interval,
            )
            print(f"{mode}, ping interval {interval:g} s", file=sys.stderr)
            result["runs"].append(await one_run(setup, workdir, mode, interval, args))
    result["load_average_after"] = os.getloadavg()
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway_idle", description=__doc__)
    parser.add_argument(
        "--steps", type=lambda t: [int(x) for x in t.split(",")], default=[1000, 10_000]
    )
    parser.add_argument("--hold", type=float, default=60.0, help="seconds held at the last step")
    parser.add_argument("--keepalive", type=float, default=25.0, help="keepAlive period, s")
    parser.add_argument(
        "--runs",
        type=_runs,
        default=_runs("connected:15,started:15,started:30"),
        help="mode:ping interval, comma separated",
    )
    parser.add_argument("--json", type=Path, default=Path("out/bench/gateway_idle.json"))
    return parser.parse_args(argv)


def cli() -> None:
    args = parse_args()
    result = asyncio.run(main(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    cli()

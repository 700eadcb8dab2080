"""``python -m benchmarks.edge_stack``: measure the candidate edge stacks side by side.

Parts (``--parts``, all by default):
- ``latency``: every stack's /relay and /echo and the gRPC floor (the client straight to
  ``benchmarks.echo_server``), at each ``--streams`` level, in ``--rounds`` short rounds
  interleaved across paths (round r starts at path r: ABAB..., never one long run per path);
  server, gRPC echo and client CPU per message from /proc over each measured phase.
- ``idle``: per stack, a fresh server; RSS/USS before and after ``--idle`` idle authenticated
  WebSockets (cumulative), then those held ``--hold`` s with server pings every
  ``--heartbeat`` s; then a fresh server with ``--grpc-idle`` idle sessions that each also
  hold an open gRPC stream.
- ``checks``: per stack, a fresh server; backpressure and HTTP streaming (``checks.py``).

The load client is this process (aiohttp's client on uvloop); every server is its own process.
All of them share the machine's cores with whatever else runs there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import random
import shlex
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import uvicorn
import uvloop

from benchmarks.edge_stack import checks, report
from benchmarks.edge_stack.idle import measure_idle
from benchmarks.edge_stack.latency import GrpcLink, Link, Measured, WebSocketLink, run_paced
from benchmarks.edge_stack.launch import stack_server
from benchmarks.edge_stack.server import STACKS, raise_nofile
from benchmarks.stack import Pids, server_process

LATENCY_HEARTBEAT_S = 20.0  # uvicorn's default ping interval; the same for aiohttp


async def run_latency(
    args: argparse.Namespace, upstream: str, echo_pid: int, logdir: Path
) -> dict[int, dict[str, list[Measured]]]:
    levels: dict[int, dict[str, list[Measured]]] = {n: {} for n in args.streams}
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        contextlib.AsyncExitStack() as stack,
        aiohttp.ClientSession(connector=connector) as http,
    ):
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(upstream))
        echo: Pids = lambda: [echo_pid]  # noqa: E731
        paths: list[tuple[str, Callable[[], Link], dict[str, Pids]]] = [
            (report.DIRECT, lambda: GrpcLink(channel), {"gRPC echo": echo})
        ]
        for name in args.stacks:
            port, pid = await stack.enter_async_context(
                stack_server(name, upstream, LATENCY_HEARTBEAT_S, logdir)
            )
            server: Pids = lambda pid=pid: [pid]  # type: ignore[misc]  # noqa: E731
            for route in ("relay", "echo"):
                url = f"http://127.0.0.1:{port}/{route}"
                procs = {"stack": server} | ({"gRPC echo": echo} if route == "relay" else {})
                paths.append((f"{name} {route}", lambda url=url: WebSocketLink(http, url), procs))  # type: ignore[misc]
        for r in range(args.rounds):
            order = paths[r % len(paths) :] + paths[: r % len(paths)]
            for n in args.streams:
                for label, make, procs in order:
                    print(
                        f"round {r + 1}/{args.rounds}: {label}, {n} streams",
                        file=sys.stderr,
                        flush=True,
                    )
                    measured = await run_paced(make, n, args.seconds, procs)
                    levels[n].setdefault(label, []).append(measured)
    # The table lists paths in one fixed order whatever the order they ran in.
    return {n: {label: rows[label] for label, _, _ in paths} for n, rows in levels.items()}


async def run_idle(
    args: argparse.Namespace, upstream: str, logdir: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    idle: dict[str, Any] = {}
    with_grpc: dict[str, Any] = {}
    for name in args.stacks:
        print(f"idle: {name}, {args.idle}", file=sys.stderr, flush=True)
        async with stack_server(name, upstream, args.heartbeat, logdir) as (port, pid):
            try:
                idle[name] = await measure_idle(port, pid, args.idle, args.hold)
            except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                idle[name] = {"error": repr(exc)}  # e.g. could not open them in time
        if args.grpc_idle:
            print(f"idle with gRPC streams: {name}", file=sys.stderr, flush=True)
            async with stack_server(name, upstream, args.heartbeat, logdir) as (port, pid):
                with_grpc[name] = await measure_idle(port, pid, [args.grpc_idle], 0, True)
    return idle, with_grpc


async def run_checks(args: argparse.Namespace, upstream: str, logdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        for name in args.stacks:
            print(f"checks: {name}", file=sys.stderr, flush=True)
            async with stack_server(name, upstream, LATENCY_HEARTBEAT_S, logdir) as (port, pid):
                results[name] = {
                    "upload": await checks.check_upload(http, port),
                    "events": await checks.check_events(http, port, pid),
                    "slow_upload": await checks.check_slow_upload(port, pid),
                    "sink": await checks.check_sink(port, pid),
                    "flood": await checks.check_flood(http, port, pid),
                }
    return results


def _header(args: argparse.Namespace, nofile: int) -> list[str]:
    import aiohttp as aio
    import starlette
    import websockets
    import wsproto

    cmd = shlex.join(["python", "-m", "benchmarks.edge_stack", *sys.argv[1:]])
    versions = (
        f"aiohttp {aio.__version__}, uvicorn {uvicorn.__version__}, starlette "
        f"{starlette.__version__}, websockets {websockets.__version__}, wsproto "
        f"{_version('wsproto', wsproto)}, uvloop {uvloop.__version__}, grpcio {grpc.__version__}"
    )
    return [
        f"- command: `{cmd}`",
        f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
        f"- {versions}; Python {platform.python_version()}, {platform.machine()}, "
        f"nproc {os.cpu_count()}, RLIMIT_NOFILE {nofile}",
        f"- latency: {args.rounds} rounds x {args.seconds:g} s per path and level, 3200-byte "
        "binary frames paced every 100 ms per stream from a random offset, the first 1 s of "
        "each stream not counted",
        "",
    ]


def _version(name: str, module: Any) -> str:
    from importlib.metadata import version

    return getattr(module, "__version__", None) or version(name)


async def main(args: argparse.Namespace) -> None:
    random.seed(args.seed)
    nofile = raise_nofile()
    logdir = Path(tempfile.mkdtemp(prefix="voxwire-edge-"))
    print(f"logs under {logdir}", file=sys.stderr, flush=True)
    header = _header(args, nofile)
    raw: dict[str, Any] = {"header": header}
    # Each part's tables are printed (and the JSON rewritten) as soon as it ends, so a part
    # that fails later on a loaded machine does not lose the ones before it.
    print("\n".join(["### Edge stack benchmark", "", *header]), flush=True)

    async def emit(tables: list[str], **figures: Any) -> None:
        print("\n".join(tables), flush=True)
        raw.update(figures)
        if args.json:
            await asyncio.to_thread(Path(args.json).write_text, json.dumps(raw, indent=1))

    async with server_process(["benchmarks.echo_server"], logdir / "echo.log", True) as (
        echo_proc,
        echo_port,
    ):
        upstream = f"127.0.0.1:{echo_port}"
        if "latency" in args.parts:
            levels = await run_latency(args, upstream, echo_proc.pid, logdir)
            tables = [report.latency_table(n, rows, args.stacks) for n, rows in levels.items()]
            latency = {
                str(n): {k: [asdict(m) for m in v] for k, v in rows.items()}
                for n, rows in levels.items()
            }
            await emit([*tables, report.cpu_table(levels)], latency=latency)
        if "idle" in args.parts:
            idle, with_grpc = await run_idle(args, upstream, logdir)
            tables = [
                report.idle_table(idle, with_grpc),
                report.heartbeat_table(idle, args.heartbeat),
            ]
            await emit(tables, idle=idle, idle_with_grpc=with_grpc, heartbeat=args.heartbeat)
        if "checks" in args.parts:
            results = await run_checks(args, upstream, logdir)
            tables = [report.backpressure_table(results), report.http_table(results)]
            await emit(tables, checks=results)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.edge_stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--parts", default="latency,idle,checks", help="comma-separated parts")
    parser.add_argument("--stacks", default=",".join(STACKS), help="comma-separated stacks")
    parser.add_argument("--rounds", type=int, default=4, help="latency rounds per path and level")
    parser.add_argument("--seconds", type=float, default=10.0, help="paced time per round")
    parser.add_argument("--streams", type=_ints, default=[1, 100], help="e.g. 1,100")
    parser.add_argument(
        "--idle", type=_ints, default=[1000, 10000], help="idle WebSockets, cumulative"
    )
    parser.add_argument(
        "--grpc-idle", type=int, default=1000, help="idle sessions holding a gRPC stream (0: skip)"
    )
    parser.add_argument(
        "--heartbeat", type=float, default=10.0, help="ping interval (s) in the idle part"
    )
    parser.add_argument(
        "--hold", type=float, default=30.0, help="seconds the idle connections are held"
    )
    parser.add_argument("--json", help="also write the raw figures (every latency) here")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--render", metavar="JSON", help="only print the tables of a saved run")
    args = parser.parse_args(argv)
    args.parts = set(args.parts.split(","))
    args.stacks = [s for s in args.stacks.split(",") if s]
    unknown = set(args.stacks) - set(STACKS)
    if unknown:
        parser.error(f"unknown stacks {sorted(unknown)}; known: {list(STACKS)}")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.render:
        print(report.render(arguments.render))
    else:
        uvloop.run(main(arguments))

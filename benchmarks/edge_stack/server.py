"""One candidate stack as a server process: ``python -m benchmarks.edge_stack.server STACK
UPSTREAM [--heartbeat S]``. It binds a free loopback port, prints it on stdout, and serves the
routes (``benchmarks.edge_stack``) on uvloop until SIGTERM, relaying to the gRPC echo at
UPSTREAM over one long-lived grpc.aio channel (many streams per channel)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import socket

import grpc
import uvloop

# stack -> uvicorn's ws backend (None: aiohttp)
STACKS: dict[str, str | None] = {
    "aiohttp": None,
    "uvicorn-websockets": "websockets",
    "uvicorn-websockets-sansio": "websockets-sansio",
    "uvicorn-wsproto": "wsproto",
}


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def serve(stack: str, upstream: str, heartbeat: float | None) -> None:
    from benchmarks.edge_stack import aiohttp_app, starlette_app  # both: the same startup cost

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)  # connections made before the server runs wait in the backlog
    sock.setblocking(False)
    channel = grpc.aio.insecure_channel(upstream)
    print(sock.getsockname()[1], flush=True)
    try:
        ws = STACKS[stack]
        if ws is None:
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await aiohttp_app.serve(sock, channel, heartbeat, stop)
        else:
            await starlette_app.serve(sock, channel, heartbeat, ws)
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edge_stack.server")
    parser.add_argument("stack", choices=list(STACKS))
    parser.add_argument("upstream", help="HOST:PORT of benchmarks.echo_server")
    parser.add_argument("--heartbeat", type=float, default=None, help="WebSocket ping interval")
    args = parser.parse_args()
    raise_nofile()
    uvloop.run(serve(args.stack, args.upstream, args.heartbeat))


if __name__ == "__main__":
    main()

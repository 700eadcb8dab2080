"""The echo floor of the performance record: a raw grpc.aio bidi echo, bytes in, same bytes out.

Run by ``benchmarks.record`` in its own process (``python -m benchmarks.echo_server``): it
binds a free loopback port, prints it on stdout, and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from benchmarks.raw_server import serve_until_sigterm

ECHO_SERVICE = "voxwire.bench.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"


async def echo(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
    async for message in requests:
        await context.write(message)


async def serve() -> None:
    await serve_until_sigterm(ECHO_SERVICE, "Echo", echo)


if __name__ == "__main__":
    asyncio.run(serve())

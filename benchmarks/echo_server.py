"""The echo floor of the overhead benchmark: a raw grpc.aio bidi echo, bytes in, same bytes out.

Run by ``benchmarks.overhead`` in its own process (``python -m benchmarks.echo_server``): it
binds a free loopback port, prints it on stdout, and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import grpc

ECHO_SERVICE = "voxwire.bench.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"


async def echo(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
    async for message in requests:
        await context.write(message)


async def serve() -> None:
    server = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(echo)  # no (de)serializers: raw bytes
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(ECHO_SERVICE, {"Echo": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1.0)


if __name__ == "__main__":
    asyncio.run(serve())

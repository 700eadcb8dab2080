"""What the benchmark's helper servers share: a raw-bytes grpc.aio server run as a process.

It binds a free loopback port, prints the port on stdout for ``benchmarks.record``, and
serves one bidi method without (de)serializers until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

Handler = Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext], Awaitable[None]]


async def serve_until_sigterm(service: str, method: str, handler: Handler) -> None:
    server = grpc.aio.server()
    rpc = grpc.stream_stream_rpc_method_handler(handler)  # no (de)serializers: raw bytes
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: rpc}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1.0)

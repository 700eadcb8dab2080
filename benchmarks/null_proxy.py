"""The adapter floor of the performance record: the least a Python gRPC adapter can do.

A grpc.aio server on uvloop (as the adapter) that serves Triton's own
``inference.GRPCInferenceService/ModelStreamInfer`` and, per call, opens the same call to
Triton and passes raw bytes both ways: no protobuf parsing, no audio work, no session, no
timings. It pays exactly the four gRPC message operations per chunk that any adapter in front of
Triton pays (client in, Triton out, Triton in, client out), so *null proxy − Triton direct* is
what one Python hop pair costs on the machine, and *adapter − null proxy* is the adapter's own
share. The benchmark client drives it with the same requests it sends to Triton directly.

Run by ``benchmarks.record`` in its own process (``python -m benchmarks.null_proxy
HOST:PORT``): it binds a free loopback port, prints it on stdout, and serves until SIGTERM.
A benchmark instrument, not a component: it has none of the adapter's deadlines or errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

import grpc
import uvloop

from benchmarks.raw_server import serve_until_sigterm

SERVICE = "inference.GRPCInferenceService"
METHOD = f"/{SERVICE}/ModelStreamInfer"


async def serve(upstream: str) -> None:
    channel = grpc.aio.insecure_channel(upstream)

    async def proxy(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        call = channel.stream_stream(METHOD)()  # no (de)serializers: raw bytes

        async def forward() -> None:
            async for message in requests:
                await call.write(message)
            await call.done_writing()

        upward = asyncio.create_task(forward())
        try:
            async for message in call:
                await context.write(message)
            await upward
        finally:
            upward.cancel()
            call.cancel()

    try:
        await serve_until_sigterm(SERVICE, "ModelStreamInfer", proxy)
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1]))

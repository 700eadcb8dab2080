"""grpc.aio's own C-memory leak per call, with no voxwire code: grpc/grpc#43360.

grpc.aio frees a batch's ``grpc_op`` array, and releases what its operations hold (a sent
message's buffer, a status's trailers), only when the awaiting coroutine consumes the batch's
event. A batch that fails (a read or a status on a call the peer cancelled) or whose awaiter is
cancelled (a read under ``asyncio.timeout``) skips that, and what it held stays allocated for
the life of the process. The adapter and the gateway meet both patterns whenever a client
cancels, disconnects or is refused while it still sends, so their glibc heap in use grows with
such streams (docs/fuzzing.md, "make fuzz, 2026-12-06").

One process, a raw grpc.aio bidi server and client on loopback, calls of one kind in batches of
32; glibc's heap in use (``mallinfo2``, after a collection) is read after a warm-up and after
each of two rounds of ``--calls`` calls, and the growth per call printed:

    python -m tools.grpc_aio_leak [--calls 2000] [--kinds clean,cancel,read_timeout,refused]

- ``clean``: write, read the echo, half-close, read to the end (the control: no growth);
- ``cancel``: write, read the echo, cancel (the server's read in flight fails);
- ``read_timeout``: the same, with a read cancelled by ``asyncio.timeout`` before the cancel;
- ``refused``: the server aborts on the first message while the client writes 1 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc

import grpc

from tools import glibc_heap

METHOD = "/voxwire.leak.Echo/Bidi"
BATCH = 32


def heap_in_use() -> int:
    """glibc's heap in use, every arena (bytes), after a full collection."""
    gc.collect()
    return glibc_heap.heap()["in_use"]


async def _echo(_requests: object, context: grpc.aio.ServicerContext) -> None:
    first = await context.read()
    if first == b"refuse":
        context.set_trailing_metadata((("x-timings-bin", b"t" * 200),))
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused: " + "r" * 100)
    await context.write(first[:10])
    while (message := await context.read()) is not grpc.aio.EOF:
        await context.write(message[:10])


async def _one(bidi: grpc.aio.StreamStreamMultiCallable, kind: str) -> None:
    call = bidi()
    if kind == "refused":
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await call.write(b"refuse")
            await call.write(b"z" * 1_000_000)
            await call.done_writing()
        await call.code()
        return
    await call.write(b"a" * 100)
    await call.read()
    if kind == "clean":
        await call.done_writing()
        while (await call.read()) is not grpc.aio.EOF:
            pass
        return
    if kind == "read_timeout":
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.001):
                await call.read()
    call.cancel()


async def measure(kind: str, calls: int) -> tuple[float, float]:
    """Bytes of heap left per call in two rounds of ``calls`` calls of ``kind``."""
    server = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("voxwire.leak.Echo", {"Bidi": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    bidi = channel.stream_stream(METHOD)

    async def run(n: int) -> int:
        for start in range(0, n, BATCH):
            await asyncio.gather(*(_one(bidi, kind) for _ in range(min(BATCH, n - start))))
        await asyncio.sleep(0.5)  # the calls' last callbacks
        return heap_in_use()

    try:
        base = await run(200)
        first = await run(calls)
        second = await run(calls)
    finally:
        await channel.close()
        await server.stop(None)
    return (first - base) / calls, (second - first) / calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--kinds", default="clean,cancel,read_timeout,refused")
    args = parser.parse_args(argv)
    print(f"grpcio {grpc.__version__}: glibc heap left in use per call, two rounds")
    for kind in args.kinds.split(","):
        first, second = asyncio.run(measure(kind, args.calls))
        print(f"  {kind:12} {first:7.0f} B, {second:7.0f} B", flush=True)


if __name__ == "__main__":
    main()

"""Outbox on a real grpc.aio stream: the order the producers decide is the order on the wire.

Two producers share one Outbox, as a stream's client pump (``put``, handed to the writer task)
and model pump (``write_through``, written from its own task when the wire is free) do. A
small high-water mark and a slow reader make both paths and the backpressure meet often.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from inference_adapter.outbox import Outbox, WriteInterrupted

SERVICE, METHOD = "voxwire.test.Outbox", "Stream"
PER_PRODUCER = 300


async def _serve(handler, channel_options=()) -> tuple[grpc.aio.Server, grpc.aio.Channel]:
    server = grpc.aio.server()
    rpc = grpc.stream_stream_rpc_method_handler(handler)  # raw bytes
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {METHOD: rpc}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options)


async def test_put_and_write_through_keep_the_decided_order_exactly_once():
    decided: list[bytes] = []
    sent_seconds: list[float] = []

    async def handler(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        outbox = Outbox(context, sent_seconds.append, high_water=4)
        writer = asyncio.create_task(outbox.run())

        async def client_pump() -> None:  # acks: queued, never written from this task
            for i in range(PER_PRODUCER):
                message = b"ack %d" % i
                decided.append(message)
                outbox.put(message)
                await asyncio.sleep(0 if i % 3 else 0.0005)

        async def model_pump() -> None:  # results: written through when the wire is free
            for i in range(0, PER_PRODUCER, 2):
                await outbox.wait_room()
                pair = [b"result %d" % i, b"result %d" % (i + 1)]
                decided.extend(pair)
                await outbox.write_through(pair)

        await asyncio.wait_for(asyncio.gather(client_pump(), model_pump()), 30)
        await outbox.flush(30, strict=True)
        assert writer.done() and writer.exception() is None

    server, channel = await _serve(handler)
    try:
        call = channel.stream_stream(f"/{SERVICE}/{METHOD}")()
        await call.done_writing()
        received = []
        async with asyncio.timeout(60):
            async for message in call:
                received.append(message)
                if len(received) % 50 == 0:
                    await asyncio.sleep(0.01)  # a slow reader: flow control pushes back
            assert await call.code() == grpc.StatusCode.OK
    finally:
        await channel.close()
        await server.stop(None)
    assert len(received) == 2 * PER_PRODUCER
    assert received == decided
    assert len(sent_seconds) == len(received)


async def test_an_interrupted_write_breaks_the_outbox_and_nothing_hangs():
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    outboxes: list[tuple[Outbox, asyncio.Task[None]]] = []

    async def handler(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        outbox = Outbox(context, lambda _: None)
        outboxes.append((outbox, asyncio.create_task(outbox.run())))
        try:
            async with asyncio.timeout(20):
                for i in range(100_000):  # far more than flow control lets through
                    await outbox.write_through([b"x" * 1000 + b"%d" % i])
        except BaseException as exc:
            outcome.set_result(exc)
            raise
        outcome.set_result(None)

    server, channel = await _serve(handler)
    try:
        call = channel.stream_stream(f"/{SERVICE}/{METHOD}")()
        for _ in range(5):
            await asyncio.wait_for(call.read(), 10)
        call.cancel()  # the client goes away while the handler is writing through
        error = await asyncio.wait_for(outcome, 10)
        outbox, writer = outboxes[0]
        # The writer task must not write after the interrupted write: it ends and says why.
        with pytest.raises(WriteInterrupted):
            await asyncio.wait_for(writer, 10)
        with pytest.raises(WriteInterrupted):
            await outbox.write_through([b"late"])
        with pytest.raises(WriteInterrupted):
            await outbox.flush(5, strict=True)
    finally:
        await channel.close()
        await server.stop(None)
    # The handler was cancelled or its write failed; either way it ended, not by its timeout.
    assert error is not None and not isinstance(error, TimeoutError)


@pytest.mark.parametrize("high_water", [1, 32])
async def test_flush_ends_the_writer_after_a_write_through_in_flight(high_water):
    done_writing: list[int] = []

    async def handler(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        outbox = Outbox(context, lambda _: None, high_water=high_water)
        writer = asyncio.create_task(outbox.run())
        through = asyncio.create_task(outbox.write_through([b"a", b"b", b"c"]))
        await asyncio.sleep(0)  # the write-through holds the wire now
        outbox.put(b"d")  # queued behind it; the writer task must not write concurrently
        await outbox.flush(10, strict=True)
        await through
        done_writing.append(int(writer.done()))

    server, channel = await _serve(handler)
    try:
        call = channel.stream_stream(f"/{SERVICE}/{METHOD}")()
        await call.done_writing()
        async with asyncio.timeout(20):
            received = [m async for m in call]
        assert await call.code() == grpc.StatusCode.OK
    finally:
        await channel.close()
        await server.stop(None)
    assert received == [b"a", b"b", b"c", b"d"]
    assert done_writing == [1]


async def _never_reading_client(
    server_address_channel: grpc.aio.Channel,
) -> grpc.aio.StreamStreamCall:
    call = server_address_channel.stream_stream(f"/{SERVICE}/{METHOD}")()
    await call.done_writing()
    return call


async def test_what_the_client_leaves_unread_is_capped_in_bytes():
    # The client reads nothing: once its window is full, what the stream provokes queues at the
    # server, up to max_unread_bytes; the next response fails the stream (SlowConsumer through
    # on_failure) instead of growing the queue, and a producer never waits on a dead wire.
    failures: list[BaseException] = []
    outcome: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handler(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        outbox = Outbox(
            context, lambda _: None, on_failure=failures.append, max_unread_bytes=16_384
        )
        writer = asyncio.create_task(outbox.run())
        puts = 0
        while puts < 2000 and not failures:  # up to 2 MB of 1 kB acks, never blocking
            outbox.put(b"a" * 1000)
            puts += 1
            await asyncio.sleep(0)
        outcome.set_result(puts)
        await outbox.wait_room()  # released at once: the outbox is broken
        assert outbox.queued_bytes == 0
        writer.cancel()

    # The client's window stays at 64 KiB (BDP probing would grow it to megabytes).
    server, channel = await _serve(handler, [("grpc.http2.bdp_probe", 0)])
    try:
        call = await _never_reading_client(channel)
        puts = await asyncio.wait_for(outcome, 10)
        call.cancel()
    finally:
        await channel.close()
        await server.stop(None)
    assert [type(f).__name__ for f in failures] == ["SlowConsumer"]
    assert "max_unread_response_bytes" in str(failures[0])
    assert puts < 200  # the 64 KiB window and the 16 kB cap, not the whole 2 MB


async def test_a_write_that_waits_past_its_deadline_fails_with_slow_consumer():
    outcome: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def handler(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        outbox = Outbox(context, lambda _: None, write_timeout=0.3)
        try:
            for _ in range(10_000):  # far more than a 64 KiB window takes
                await outbox.write_through([b"x" * 10_000])
        except BaseException as exc:
            outcome.set_result(exc)
            raise

    # The client's window stays at 64 KiB (BDP probing would grow it to megabytes).
    server, channel = await _serve(handler, [("grpc.http2.bdp_probe", 0)])
    try:
        call = await _never_reading_client(channel)
        started = time.monotonic()
        error = await asyncio.wait_for(outcome, 10)
        call.cancel()
    finally:
        await channel.close()
        await server.stop(None)
    assert type(error).__name__ == "SlowConsumer" and "write_timeout" in str(error)
    assert time.monotonic() - started < 5

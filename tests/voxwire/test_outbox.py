"""voxwire.outbox: order, bounds and the write deadline (one watchdog timer per outbox)."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from voxwire.errors import SlowConsumer
from voxwire.outbox import Outbox, OutboxBroken

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _outbox(write, *, timeout: float = 0.3) -> Outbox[bytes]:
    return Outbox(write, len, max_bytes=100, high_water=50, write_timeout=timeout)


async def test_messages_leave_in_order_and_room_follows_the_high_water_mark() -> None:
    sent: list[bytes] = []
    gate = asyncio.Event()

    async def write(item: bytes) -> None:
        await gate.wait()
        sent.append(item)

    box = _outbox(write)
    writer = asyncio.create_task(box.run())
    for i in range(5):
        box.put(bytes([i]) * 10)
    assert not box.has_room and box.queued_bytes == 50
    with pytest.raises(SlowConsumer):
        box.put(b"x" * 51)  # 101 bytes queued would pass max_bytes
    gate.set()
    async with asyncio.timeout(5):
        await box.wait_room()
    box.close()
    async with asyncio.timeout(5):
        await writer
    assert sent == [bytes([i]) * 10 for i in range(5)] and box.has_room


async def test_a_write_past_its_deadline_fails_with_slow_consumer() -> None:
    async def write(item: bytes) -> None:
        if item == b"stuck":
            await asyncio.sleep(60)

    box = _outbox(write, timeout=0.3)
    writer = asyncio.create_task(box.run())
    box.put(b"quick")
    await asyncio.sleep(0.2)  # the watchdog is armed by the first write and is still pending
    t0 = time.monotonic()
    box.put(b"stuck")
    with pytest.raises(SlowConsumer):
        async with asyncio.timeout(5):
            await writer
    # Measured from the stuck write's own start, not from when the watchdog was armed.
    assert 0.25 <= time.monotonic() - t0 < 1.5
    with pytest.raises(OutboxBroken):
        box.put(b"after")


async def test_writes_within_the_deadline_never_time_out_however_many() -> None:
    async def write(item: bytes) -> None:
        await asyncio.sleep(0.01)

    box = _outbox(write, timeout=0.1)
    writer = asyncio.create_task(box.run())
    for _ in range(40):  # 0.4 s of writes, four deadlines long, each write well within one
        async with asyncio.timeout(5):
            await box.wait_room()
        box.put(b"x")
        await asyncio.sleep(0.01)
    box.close()
    async with asyncio.timeout(5):
        await writer
    assert box.broken is None


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    async def write(item: bytes) -> None:
        await asyncio.sleep(60)

    box = _outbox(write, timeout=10.0)
    writer = asyncio.create_task(box.run())
    box.put(b"x")
    await asyncio.sleep(0.05)
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert box.broken == "CancelledError"  # described, not kept (no cycle through it)


async def test_a_failed_write_breaks_the_outbox() -> None:
    async def write(item: bytes) -> None:
        raise ConnectionError("peer gone")

    box = _outbox(write)
    writer = asyncio.create_task(box.run())
    box.put(b"x")
    with pytest.raises(ConnectionError):
        async with asyncio.timeout(5):
            await writer
    with pytest.raises(OutboxBroken):
        box.put(b"y")


async def test_an_idle_outbox_holds_no_queue_not_even_in_its_parked_writer() -> None:
    """Memory per idle stream (BENCHMARKS.md, "Memory per idle WebSocket"): once drained, the
    queue is dropped by the outbox and by the writer's frame, which parks on a future."""
    sent: list[bytes] = []

    async def write(item: bytes) -> None:
        sent.append(item)

    box = _outbox(write)
    writer = asyncio.create_task(box.run())
    box.put(b"hello")
    queue = box._queue
    assert queue is not None
    for _ in range(10):
        await asyncio.sleep(0)  # the writer drains and parks
    assert sent == [b"hello"] and box._queue is None
    # Only this test's name and getrefcount's argument refer to it now.
    assert sys.getrefcount(queue) == 2
    box.close()
    async with asyncio.timeout(5):
        await writer


async def test_a_write_after_audio_is_late_only_once_that_audio_has_played() -> None:
    # A client taking audio at playback pace leaves a write waiting while it plays what it
    # holds: the write's deadline counts from when the audio written before it has played.
    written = 0

    async def write(item: bytes) -> None:
        nonlocal written
        written += 1
        if written > 4:
            await asyncio.sleep(60)  # the client plays (or stopped reading)

    box = _outbox(write, timeout=0.3)
    for _ in range(6):
        box.put(b"a", audio_ms=200)  # 4 written at once: 0.8 s of audio ahead
    assert box.queued_audio_ms == 1200
    started = time.monotonic()
    with pytest.raises(SlowConsumer, match="after the audio it was sent had played"):
        async with asyncio.timeout(5):
            await box.run()
    waited = time.monotonic() - started
    assert 0.8 + 0.3 <= waited < 0.8 + 0.3 + 0.5, waited  # not at 0.3 s, as without audio
    assert box.queued_audio_ms == 400  # the two not written
    assert 0.35 <= box.audio_left_s() <= 0.45  # those, and none of the played ones


async def test_a_plain_write_keeps_its_own_deadline_whatever_audio_went_before_elsewhere() -> None:
    async def write(item: bytes) -> None:
        await asyncio.sleep(60)

    box = _outbox(write, timeout=0.3)
    box.put(b"x")  # no audio: the plain deadline
    started = time.monotonic()
    with pytest.raises(SlowConsumer):
        async with asyncio.timeout(5):
            await box.run()
    assert time.monotonic() - started < 0.3 + 0.5
    assert box.audio_left_s() == 0.0


async def test_an_abandoned_outbox_drops_its_queue_frees_its_waiters_and_takes_no_more() -> None:
    gate = asyncio.Event()

    async def write(item: bytes) -> None:
        await gate.wait()

    box = _outbox(write)
    writer = asyncio.create_task(box.run())
    for i in range(5):
        box.put(bytes([i]) * 10)
    waiter = asyncio.create_task(box.wait_room())
    await asyncio.sleep(0)
    box.abandon("the peer left")
    async with asyncio.timeout(5):
        await waiter  # a producer parked on the full outbox is not left waiting
    assert box.queued_bytes == 0 and box.broken == "the peer left"
    with pytest.raises(OutboxBroken, match="the peer left"):
        box.put(b"x")
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)

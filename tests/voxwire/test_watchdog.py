"""voxwire.watchdog: one timer for many awaits, with asyncio.timeout's outcome for each."""

from __future__ import annotations

import asyncio
import time

import pytest

from voxwire.watchdog import Watchdog

TIMEOUT = 0.2


async def guarded(dog: Watchdog, seconds: float, after: float = 0.0) -> float:
    """Sleep ``seconds`` under ``dog`` (its deadline ``after`` s later); returns how long the
    await lasted."""
    t0 = time.monotonic()
    try:
        with dog.after(after):
            await asyncio.sleep(seconds)
    finally:
        elapsed = time.monotonic() - t0
    return elapsed


async def test_an_overdue_await_raises_timeout_and_leaves_its_task_uncancelled():
    dog = Watchdog(TIMEOUT)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await guarded(dog, 5)
    assert TIMEOUT <= time.monotonic() - t0 < 1.0
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.01)  # the task is usable: no cancel is pending


async def test_quick_awaits_pass_and_a_slow_one_after_them_gets_its_whole_deadline():
    dog = Watchdog(TIMEOUT)
    for _ in range(20):  # 20 x 15 ms: the timer armed by the first one fires among them
        await guarded(dog, 0.015)
    # This one starts late in the timer's period: it must still get TIMEOUT, not what is left.
    assert await guarded(dog, TIMEOUT * 0.8) >= TIMEOUT * 0.8
    with pytest.raises(TimeoutError):
        await guarded(dog, 5)


async def test_only_the_overdue_task_of_two_is_cancelled():
    dog = Watchdog(TIMEOUT)
    slow = asyncio.create_task(guarded(dog, 5))
    fast = asyncio.create_task(guarded(dog, TIMEOUT / 2))
    assert await fast < TIMEOUT
    with pytest.raises(TimeoutError):
        await slow


async def test_a_cancel_from_outside_stays_a_cancel():
    dog = Watchdog(TIMEOUT)
    task = asyncio.create_task(guarded(dog, 5))
    await asyncio.sleep(TIMEOUT / 4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The watchdog keeps no trace of it: the next await has its deadline again.
    with pytest.raises(TimeoutError):
        await guarded(dog, 5)


async def test_a_cancel_from_outside_after_the_deadline_fired_stays_a_cancel():
    dog = Watchdog(TIMEOUT)
    started = asyncio.Event()

    async def stubborn() -> None:
        with dog:
            started.set()
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                await asyncio.sleep(TIMEOUT)  # still busy when the outside cancel comes
                raise

    task = asyncio.create_task(stubborn())
    await started.wait()
    await asyncio.sleep(TIMEOUT * 1.5)  # the watchdog has cancelled it
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_idle_watchdog_stops_its_timer():
    dog = Watchdog(TIMEOUT)
    await guarded(dog, 0)
    await asyncio.sleep(TIMEOUT * 1.5)  # the timer fired with nothing in flight
    assert dog._timer is None
    dog.close()


async def test_an_await_after_a_delay_gets_its_deadline_that_much_later():
    dog = Watchdog(TIMEOUT)
    # Past TIMEOUT but within the delay plus TIMEOUT: not late.
    assert await guarded(dog, 0.4, after=0.3) >= 0.4
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await guarded(dog, 5, after=0.3)
    assert 0.3 + TIMEOUT <= time.monotonic() - t0 < 1.2
    # The delay is for one await: the next has the plain deadline.
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await guarded(dog, 5)
    assert time.monotonic() - t0 < 0.5


async def test_a_plain_await_beside_a_delayed_one_keeps_its_own_deadline():
    # The timer armed for the delayed await's far deadline is brought forward for the plain one.
    dog = Watchdog(TIMEOUT)
    far = asyncio.create_task(guarded(dog, 1.0, after=2.0))
    await asyncio.sleep(0.01)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await guarded(dog, 5)
    assert time.monotonic() - t0 < TIMEOUT + 0.3
    assert await far >= 1.0  # and the delayed one was not cut short

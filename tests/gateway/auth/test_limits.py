"""Per-key limits: permits released once on every path; the token bucket and its Retry-After;
the capabilities requests' bucket."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from gateway.auth.limits import CatalogLimiter, KeyLimits, SessionLimiter, retry_after_header
from tests.gateway.auth.helpers import ManualClock
from voxwire.errors import RateLimited


def limiter(clock: ManualClock, hint: float = 2.0) -> SessionLimiter:
    return SessionLimiter(concurrency_retry_delay=hint, clock=clock)


def test_concurrent_sessions_up_to_the_limit_then_rate_limited():
    clock = ManualClock()
    lim = limiter(clock)
    limits = KeyLimits(max_concurrent_sessions=2, max_new_sessions_per_minute=100)
    first, second = lim.admit("a", limits), lim.admit("a", limits)
    with pytest.raises(RateLimited, match="2 open sessions") as refused:
        lim.admit("a", limits)
    assert refused.value.retry_delay == datetime.timedelta(seconds=2)
    assert refused.value.http_status == 429 and refused.value.ws_close_code == 1013
    assert lim.admit("b", limits)  # another key has its own count
    first.release()
    third = lim.admit("a", limits)
    for permit in (second, third):
        permit.release()
    assert lim.active_sessions("a") == 0


def test_a_permit_released_twice_frees_one_slot():
    lim = limiter(ManualClock())
    limits = KeyLimits(max_concurrent_sessions=2, max_new_sessions_per_minute=100)
    first, second = lim.admit("a", limits), lim.admit("a", limits)
    first.release()
    first.release()
    with first:  # leaving the block releases again: still nothing
        pass
    assert lim.active_sessions("a") == 1 and not second.released
    lim.admit("a", limits)
    with pytest.raises(RateLimited):
        lim.admit("a", limits)


async def test_permits_are_released_on_every_ending_path():
    lim = limiter(ManualClock())
    limits = KeyLimits(max_concurrent_sessions=4, max_new_sessions_per_minute=100)

    with lim.admit("a", limits):  # normal end
        assert lim.active_sessions("a") == 1
    with pytest.raises(ValueError), lim.admit("a", limits):  # an error in the session
        raise ValueError("session failed")

    entered = asyncio.Event()

    async def session() -> None:
        with lim.admit("a", limits):
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(session())  # the client vanishes: the task is cancelled
    await asyncio.wait_for(entered.wait(), 5)
    assert lim.active_sessions("a") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)

    permit = lim.admit("a", limits)  # released by a close callback and by a finally
    permit.release()
    permit.release()
    assert lim.active_sessions("a") == 0


def test_per_minute_burst_then_the_exact_retry_delay():
    clock = ManualClock()
    lim = limiter(clock)
    limits = KeyLimits(max_concurrent_sessions=100, max_new_sessions_per_minute=4)
    for _ in range(4):  # a full bucket: L at once
        lim.admit("a", limits).release()
    with pytest.raises(RateLimited, match="4 sessions") as refused:
        lim.admit("a", limits)
    delay = refused.value.retry_delay
    assert delay == datetime.timedelta(seconds=15)  # one refill: 60 / 4
    assert retry_after_header(delay) == "15"
    clock.advance(14.999)
    with pytest.raises(RateLimited) as again:
        lim.admit("a", limits)
    assert again.value.retry_delay == datetime.timedelta(milliseconds=1)
    clock.advance(0.001)
    lim.admit("a", limits).release()  # admitted exactly when announced
    with pytest.raises(RateLimited) as next_one:
        lim.admit("a", limits)
    assert next_one.value.retry_delay == datetime.timedelta(seconds=15)


def test_a_fractional_retry_delay_rounds_up_and_admits():
    clock = ManualClock()
    lim = limiter(clock)
    limits = KeyLimits(max_concurrent_sessions=100, max_new_sessions_per_minute=7)
    for _ in range(7):
        lim.admit("a", limits).release()
    with pytest.raises(RateLimited) as refused:
        lim.admit("a", limits)
    assert refused.value.retry_delay is not None
    seconds = refused.value.retry_delay.total_seconds()
    assert seconds == pytest.approx(60 / 7, abs=1e-6)
    assert retry_after_header(refused.value.retry_delay) == "9"
    clock.advance(seconds)  # the RetryInfo delay (microseconds, rounded up) is enough
    lim.admit("a", limits).release()


def test_over_any_minute_at_most_two_buckets_and_the_long_run_rate():
    clock = ManualClock(0.0)
    lim = limiter(clock)
    limits = KeyLimits(max_concurrent_sessions=1000, max_new_sessions_per_minute=10)
    admitted: list[float] = []
    for _ in range(4800):  # a client retrying every 1/8 s (exact in binary) for 10 minutes
        try:
            lim.admit("a", limits).release()
            admitted.append(clock.now)
        except RateLimited:
            pass
        clock.advance(0.125)
    for i, start in enumerate(admitted):
        in_window = sum(1 for t in admitted[i:] if t < start + 60)
        assert in_window <= 2 * limits.max_new_sessions_per_minute
    # A full bucket at once, then one refill every 6 s: at 6, 12, ..., 594.
    assert len(admitted) == 10 + 99
    assert admitted[10:13] == [6.0, 12.0, 18.0]


def test_refusals_consume_nothing():
    clock = ManualClock()
    lim = limiter(clock)
    limits = KeyLimits(max_concurrent_sessions=1, max_new_sessions_per_minute=2)
    held = lim.admit("a", limits)
    for _ in range(5):  # at the concurrency limit: the bucket is not drawn
        with pytest.raises(RateLimited, match="open sessions"):
            lim.admit("a", limits)
    held.release()
    lim.admit("a", limits).release()  # the second of the bucket of 2
    for _ in range(3):  # out of the bucket: no concurrent slot is taken
        with pytest.raises(RateLimited, match="within the last minute"):
            lim.admit("a", limits)
    assert lim.active_sessions("a") == 0


def test_check_refuses_as_admit_would_and_takes_nothing():
    # The check before an HTTP body is sent (Expect: 100-continue): the same refusals, the
    # same delays, and nothing consumed, however often it is asked.
    clock = ManualClock()
    lim = limiter(clock)
    limits = KeyLimits(max_concurrent_sessions=1, max_new_sessions_per_minute=2)
    for _ in range(5):
        lim.check("a", limits)
    assert lim.tracked_keys() == 0  # a key never admitted is not tracked by a check
    held = lim.admit("a", limits)
    with pytest.raises(RateLimited, match="1 open sessions") as refused:
        lim.check("a", limits)
    assert refused.value.retry_delay == datetime.timedelta(seconds=2)
    held.release()
    for _ in range(5):
        lim.check("a", limits)
    lim.admit("a", limits).release()  # the second of the bucket of 2, after the checks
    with pytest.raises(RateLimited, match="within the last minute") as out:
        lim.check("a", limits)
    assert out.value.retry_delay == datetime.timedelta(seconds=30)
    clock.advance(30)
    lim.check("a", limits)
    lim.admit("a", limits).release()
    assert lim.active_sessions("a") == 0


def test_a_resume_takes_a_concurrent_slot_but_no_new_session():
    lim = limiter(ManualClock())
    limits = KeyLimits(max_concurrent_sessions=3, max_new_sessions_per_minute=1)
    lim.admit("a", limits)
    lim.admit("a", limits, new_session=False)
    lim.admit("a", limits, new_session=False)
    with pytest.raises(RateLimited, match="open sessions"):
        lim.admit("a", limits, new_session=False)


def test_changed_limits_apply_at_once():
    lim = limiter(ManualClock())
    lim.admit("a", KeyLimits(1, 100))
    with pytest.raises(RateLimited):
        lim.admit("a", KeyLimits(1, 100))
    lim.admit("a", KeyLimits(2, 100))  # the keys file raised the limit


def test_memory_stays_bounded_over_many_keys():
    clock = ManualClock()
    lim = limiter(clock)
    limits = KeyLimits(max_concurrent_sessions=1, max_new_sessions_per_minute=60)
    for i in range(5000):
        lim.admit(f"key{i}", limits).release()
        clock.advance(0.5)  # each key's bucket is full again 1 s after its session
    assert lim.tracked_keys() <= 128
    held = lim.admit("busy", limits)
    clock.advance(3600)
    for i in range(200):
        lim.admit(f"other{i}", limits).release()
    assert lim.active_sessions("busy") == 1  # an open session's state is never swept
    held.release()


def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        KeyLimits(0, 10)
    with pytest.raises(ValueError):
        KeyLimits(1, True)  # type: ignore[arg-type]
    assert retry_after_header(datetime.timedelta(milliseconds=1)) == "1"


def test_a_session_admitted_before_its_kind_is_known_counts_as_new_later():
    clock = ManualClock()
    limiter = SessionLimiter(clock=clock)
    limits = KeyLimits(max_concurrent_sessions=10, max_new_sessions_per_minute=2)
    permits = [limiter.admit("k", limits, new_session=False) for _ in range(3)]
    limiter.count_new(permits[0], limits)
    limiter.count_new(permits[1], limits)
    with pytest.raises(RateLimited) as caught:
        limiter.count_new(permits[2], limits)
    assert caught.value.retry_delay is not None and caught.value.retry_delay.total_seconds() > 0
    assert limiter.active_sessions("k") == 3  # still held until released


# -- capabilities requests (CatalogLimiter) ------------------------------------------------------


def test_capabilities_requests_burst_then_the_exact_retry_delay_per_key():
    clock = ManualClock()
    catalog = CatalogLimiter(floor_per_minute=3, clock=clock)
    limits = KeyLimits(max_concurrent_sessions=1, max_new_sessions_per_minute=1)
    for _ in range(3):  # the floor: a key whose session rate is lower gets it
        catalog.admit("a", limits)
    with pytest.raises(RateLimited, match="capabilities 3 times") as refused:
        catalog.admit("a", limits)
    assert refused.value.retry_delay == datetime.timedelta(seconds=20)  # one refill: 60 / 3
    catalog.admit("b", limits)  # another key has a bucket of its own
    clock.advance(19.999)
    with pytest.raises(RateLimited):  # refusals take nothing: still 1 ms to wait
        catalog.admit("a", limits)
    clock.advance(0.001)
    catalog.admit("a", limits)


def test_a_key_may_ask_at_least_as_often_as_it_may_start_sessions():
    # A client that asks once per session meets its session limit first, whatever its key.
    clock = ManualClock()
    catalog = CatalogLimiter(floor_per_minute=3, clock=clock)
    sessions = SessionLimiter(clock=clock)
    limits = KeyLimits(max_concurrent_sessions=100, max_new_sessions_per_minute=50)
    assert catalog.per_minute(limits) == 50
    for _ in range(600):  # ten minutes of a client starting sessions as fast as it may
        try:
            sessions.admit("a", limits).release()
        except RateLimited:
            pass
        else:
            catalog.admit("a", limits)
        clock.advance(1.0)
    assert CatalogLimiter().per_minute(KeyLimits(10, 60)) == 600  # the default floor


def test_the_capabilities_buckets_memory_stays_bounded_over_many_keys():
    clock = ManualClock()
    catalog = CatalogLimiter(floor_per_minute=60, clock=clock)
    limits = KeyLimits(max_concurrent_sessions=1, max_new_sessions_per_minute=1)
    for i in range(5000):
        catalog.admit(f"key{i}", limits)
        clock.advance(0.5)  # each key's bucket is full again 1 s after its request
    assert catalog.tracked_keys() <= 128
    with pytest.raises(ValueError):
        CatalogLimiter(floor_per_minute=0)

"""Pacing on an absolute schedule, and coordinated-omission correction on an injected stall.

The stall test drives a real echo server (its own process) through the STT session driver and
blocks this process's event loop for 300 ms mid-stream, as a GC pause or an overloaded client
would. Chunks due during the stall go out late; measured from their intended (scheduled) time,
each carries the stall, as a real-time caller would have seen it; measured from when they were
actually written, the stall disappears. The tool measures from the intended time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time

import pytest
from hdrh.histogram import HdrHistogram

from loadtest.arrivals import SessionDraw
from loadtest.pacing import Schedule, sleep_until
from loadtest.recorder import Recorder
from loadtest.scenario import LengthSpec, Scenario
from loadtest.sessions import SessionContext, run_session
from loadtest.speech import load_speech
from loadtest.targets.echo import EchoTarget


def test_schedule_is_absolute() -> None:
    s = Schedule(start=100.0, period_s=0.02)
    assert s.due(0) == 100.0 and s.due(50) == pytest.approx(101.0)
    assert s.index_at(99.0) == -1 and s.index_at(100.039) == 1


async def test_pacing_does_not_drift_and_catches_up_after_a_stall() -> None:
    schedule = Schedule(time.monotonic() + 0.05, 0.02)
    sent = []
    for i in range(60):
        await sleep_until(schedule.due(i))
        sent.append(time.monotonic())
        if i == 20:
            time.sleep(0.1)  # noqa: ASYNC251 - the sender stalls: 21-25 fall due meanwhile
    errors = [t - schedule.due(i) for i, t in enumerate(sent)]
    # After the stall the overdue messages go at once, then the schedule is held again:
    # the last message is on time (no accumulated drift, as sleeping a period would give).
    assert max(errors[21:25]) > 0.05
    assert abs(errors[-1]) < 0.015
    assert sorted(errors[30:])[len(errors[30:]) // 2] < 0.005  # median lateness


def _scenario(address: str) -> Scenario:
    s = Scenario()
    stt = dataclasses.replace(
        s.stt, chunk_ms=20, length=LengthSpec(distribution="fixed", seconds=1.5, files=0)
    )
    return dataclasses.replace(
        s, target=dataclasses.replace(s.target, kind="echo", address=address), stt=stt
    )


async def test_latency_is_measured_from_the_intended_time_across_a_stall(
    echo_address: str,
) -> None:
    s = _scenario(echo_address)
    target = EchoTarget(echo_address)
    await target.start()
    rec = Recorder()
    speech = await asyncio.to_thread(load_speech, s.stt.speech)
    now = time.monotonic()
    ctx = SessionContext(s, target, rec, speech, warm_until=-math.inf, hard_stop=now + 30)
    loop = asyncio.get_running_loop()
    stall_s = 0.3
    # About 1 s into the stream (after set-up): block the loop, as a GC pause would.
    loop.call_later(1.0, time.sleep, stall_s)
    try:
        await run_session(ctx, SessionDraw(0, "stt", 1.5, 0), now)
    finally:
        await target.close()
    assert rec.counters["sessions.ok"] == 1
    h = rec.total["stt.message"]
    chunks = rec.counters["stt.chunks"]
    assert h.get_total_count() == chunks  # every chunk echoed and measured
    # Chunks due during the stall (300 ms / 20 ms = 15) carry what is left of it: 300, 280,
    # ... 20 ms. Those due in its first 200 ms carry at least 100 ms each: about 10 samples.
    # (A busy machine can add late samples of its own, so no upper bound.)
    corrected = _count_at_least(h, 100_000)
    assert corrected >= 8
    assert h.get_max_value() >= 0.8 * stall_s * 1e6
    # Measured from the actual write, the injected stall all but disappears: at most the one
    # chunk whose echo was in flight when the loop blocked carries it.
    uncorrected = rec.total["stt.message_from_send"]
    assert uncorrected.get_total_count() == chunks
    assert corrected - _count_at_least(uncorrected, 100_000) >= 7


def _count_at_least(h: HdrHistogram, micros: int) -> int:
    return sum(
        i.count_at_value_iterated_to
        for i in h.get_recorded_iterator()
        if i.value_iterated_to >= micros
    )

"""One worker's share of a run (loadtest/worker.py), with sessions stubbed: no target."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from loadtest import worker
from loadtest.arrivals import SessionDraw
from loadtest.recorder import Recorder
from loadtest.scenario import ArrivalSpec, Limits, Scenario
from loadtest.sessions import SessionContext, cancel_all


def _context(s: Scenario) -> SessionContext:
    return SessionContext(s, None, Recorder(), [], -math.inf, math.inf)  # type: ignore[arg-type]


@pytest.mark.parametrize(("max_streams", "max_sessions"), [(3, 1000), (1000, 3)])
async def test_workers_together_keep_the_runs_limits(
    monkeypatch: pytest.MonkeyPatch, max_streams: int, max_sessions: int
) -> None:
    # Each of N workers took ceil(limit / N): two workers let 4 sessions run at once under
    # max_streams = 3 (and 4 start under max_sessions = 3), past a limit a user sets to stay
    # within what a key or a deployment allows.
    async def held(ctx: SessionContext, draw: SessionDraw, due: float) -> None:
        ctx.active += 1
        await asyncio.sleep(3600)  # never ends within the run: every session is concurrent

    monkeypatch.setattr(worker, "run_session", held)
    s = Scenario(
        limits=Limits(duration_s=0.05, max_streams=max_streams, max_sessions=max_sessions),
        arrivals=ArrivalSpec(process="constant", rate=400.0),  # 20 arrivals
    )
    started = 0
    for index in range(2):
        ctx = _context(s)
        spec = worker.WorkerSpec(s.to_dict(), index, 2, "unused")
        tasks: set[asyncio.Task[None]] = set()
        await worker._open_loop(ctx, spec, time.monotonic(), tasks)
        started += len(tasks)  # the sessions it admitted, every one still open
        await cancel_all(tasks)
    assert started == 3


async def test_arrivals_at_one_instant_are_refused_beyond_max_streams(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Arrivals already due (a trace's simultaneous starts, a loop running late) were admitted
    # without the loop yielding, so no admitted session had counted itself active yet: ten
    # arrivals at second 0 all ran under max_streams = 3.
    async def held(ctx: SessionContext, draw: SessionDraw, due: float) -> None:
        ctx.active += 1
        await asyncio.sleep(3600)

    monkeypatch.setattr(worker, "run_session", held)
    trace = tmp_path / "trace.csv"
    trace.write_text("0\n" * 10)
    s = Scenario(
        limits=Limits(duration_s=1.0, max_streams=3),
        arrivals=ArrivalSpec(process="trace", trace=trace),
    )
    ctx = _context(s)
    tasks: set[asyncio.Task[None]] = set()
    await worker._open_loop(ctx, worker.WorkerSpec(s.to_dict(), 0, 1, "-"), time.monotonic(), tasks)
    admitted = len(tasks)
    await cancel_all(tasks)
    assert admitted == 3 and ctx.recorder.counters["sessions.refused"] == 7

"""One load-generating process: one event loop (uvloop), its share of the sessions, its own
interval log, progress lines and summary (docs/design/loadtest.md, "Workers and merge").

Worker ``index`` of ``count`` takes every count-th arrival of the shared, seeded plan (or every
count-th slot of a fixed concurrency) and 1/count of the stream and session limits. All workers
start at one agreed epoch, so their interval logs line up; a Kubernetes Indexed Job runs the
same code with ``JOB_COMPLETION_INDEX`` as the index.

Files in ``<out>/worker-<index>/``: ``intervals.hlog`` (tagged HDR interval histograms),
``progress.jsonl`` (one line per interval), ``summary.json`` (counters, errors, CPU), and
``error.txt`` if the worker failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import resource
import signal
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.arrivals import arrival_offsets, draw_sessions, session_draws, shard
from loadtest.hdrlog import IntervalLogWriter
from loadtest.pacing import sleep_until
from loadtest.recorder import Recorder
from loadtest.scenario import Scenario
from loadtest.sessions import SessionContext, cancel_all, mixed_kind, run_session
from loadtest.speech import wire_speech
from loadtest.targets import make_target
from loadtest.targets.base import TargetError

GO_FILE = "go.json"
READY_FILE = "ready"
_GO_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    scenario: dict[str, Any]
    index: int
    count: int
    out_dir: str
    start_epoch: float | None = None  # None: wait for <out_dir>/go.json

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        return cls(**json.loads(text))


def worker_dir(out_dir: Path, index: int) -> Path:
    return out_dir / f"worker-{index:03d}"


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _wait_go(path: Path) -> float:
    deadline = time.monotonic() + _GO_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            text = await asyncio.to_thread(path.read_text)
            return float(json.loads(text)["start_epoch"])
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no {path} within {_GO_TIMEOUT_S:g} s")


class _Output:
    """The worker's files; everything is formatted on the loop and written off it."""

    def __init__(self, folder: Path, start_epoch: float, spec: WorkerSpec) -> None:
        self.folder = folder
        self.log = IntervalLogWriter(
            start_epoch, f"voxwire loadtest worker {spec.index} of {spec.count}"
        )
        self.progress: list[str] = []
        self._writing: asyncio.Future[None] | None = None

    async def flush(self) -> None:
        """Write what was taken since the last flush, after every earlier write.

        The write runs in a task of its own and the caller waits on it shielded: the ticker is
        cancelled at the run's end, and a cancelled ``to_thread`` also cancels its executor job
        if no thread has picked it up yet, which lost an interval already taken from the log.
        Chained, the final flush's lines also never land before the ticker's."""
        text = self.log.take()
        lines, self.progress = "".join(self.progress), []
        self._writing = asyncio.ensure_future(self._write(self._writing, text, lines))
        await asyncio.shield(self._writing)

    async def _write(self, previous: asyncio.Future[None] | None, text: str, lines: str) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):  # its own flush raised it already
                await previous
        await asyncio.to_thread(_append, self.folder, text, lines)


def _append(folder: Path, text: str, lines: str) -> None:
    for name, chunk in (("intervals.hlog", text), ("progress.jsonl", lines)):
        with (folder / name).open("a") as out:
            out.write(chunk)


async def _ticker(ctx: SessionContext, out: _Output, epoch: float, t0: float, every: float):
    """Each interval: flush histograms, write a progress line."""
    tick = 1
    last_cpu, last_wall = _cpu_s(), time.monotonic()
    while True:
        await sleep_until(t0 + tick * every)
        # The next interval's CPU is counted from where this one's ends, before the flush: the
        # flush's own work belongs to an interval too (measured from after it, a stall in
        # it went unseen in the worker's CPU share).
        last_cpu, last_wall = _tick(ctx, out, epoch, tick, every, last_cpu, last_wall)
        await out.flush()
        tick += 1


def _tick(
    ctx: SessionContext,
    out: _Output,
    epoch: float,
    tick: int,
    every: float,
    last_cpu: float,
    last_wall: float,
) -> tuple[float, float]:
    """Flush the interval and write its progress line; returns the CPU and wall time its
    CPU share was measured to."""
    rec = ctx.recorder
    start, end = epoch + (tick - 1) * every, epoch + tick * every
    lag_p99 = rec.interval_percentile_ms("generator.lag", 99) or 0.0  # before the flush
    now_cpu, now_wall = _cpu_s(), time.monotonic()
    cpu = (now_cpu - last_cpu) / max(1e-6, now_wall - last_wall)
    rec.flush_interval(out.log, start, end)
    line = {
        "t": round(end - epoch, 3),
        "active": ctx.active,
        "cpu": round(cpu, 3),
        "lag_p99_ms": round(lag_p99, 3),
        **rec.counters,
    }
    out.progress.append(json.dumps(line) + "\n")
    return now_cpu, now_wall


def share(limit: int, spec: WorkerSpec) -> int:
    """This worker's part of a run-wide limit: the parts add up to the limit exactly. (Each
    worker took ceil(limit / N), so N workers together ran up to N - 1 sessions past it.)"""
    return limit // spec.count + (1 if spec.index < limit % spec.count else 0)


async def _open_loop(
    ctx: SessionContext, spec: WorkerSpec, t0: float, tasks: set[asyncio.Task[None]]
) -> None:
    """Start this worker's arrivals as tasks in ``tasks`` (the caller's: a worker stopped
    while arrivals still come cancels the sessions already started too)."""
    s = ctx.scenario
    offsets = arrival_offsets(s.arrivals, s.limits.duration_s, s.limits.seed, s.limits.max_sessions)
    draws = draw_sessions(s, len(offsets))
    mine = shard(offsets, spec.index, spec.count)[: share(s.limits.max_sessions, spec)]
    max_active = share(s.limits.max_streams, spec)
    for i, offset in mine:
        due = t0 + offset
        await sleep_until(due)
        # The sessions admitted and not ended, not ctx.active: a session counts itself active
        # only once it runs, and arrivals already due (simultaneous in a trace, or a late
        # loop) are admitted without a yield, so all of them passed a check of ctx.active.
        if len(tasks) >= max_active:
            # Refused, not queued: a queue here would hide the load the scenario asked for.
            ctx.recorder.count("sessions.refused")
            ctx.recorder.error("REFUSED", "MAX_STREAMS", mixed_kind(ctx, draws[i].kind))
            continue
        task = asyncio.create_task(run_session(ctx, draws[i], due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def _slot(ctx: SessionContext, slot: int, t0: float, budget: list[int]) -> None:
    s = ctx.scenario
    rng = np.random.default_rng([s.limits.seed, slot, 1])
    due = t0 + float(rng.uniform(0.0, s.arrivals.stagger_s))
    failures, first = 0, True
    for draw in session_draws(s, slot):
        if due >= t0 + s.limits.duration_s or budget[0] <= 0:
            return
        if not first and due + draw.length_s > t0 + s.limits.duration_s:
            # A slot's next session that would run past the run's duration would run alone,
            # after the others, outside the window the run measures: the README's 20 s run of
            # 20 s sessions took 45 s, its last session by itself. (A slot's first session
            # always starts; a length of 0, files or TTS turns, is not known ahead.)
            return
        budget[0] -= 1
        first = False
        await sleep_until(due)
        ok_before = ctx.recorder.counters.get("sessions.ok", 0)
        await run_session(ctx, draw, due)
        # Closed loop at the session level: the slot's next session starts when this one ends,
        # unless it failed. Then the slot waits, 0.1 s doubling to 2 s (reset by a success):
        # a target that refuses every session (nothing listening, a wrong key) was hit
        # thousands of times a second, with the generator's core spent on it.
        failures = 0 if ctx.recorder.counters.get("sessions.ok", 0) > ok_before else failures + 1
        due = time.monotonic() + (min(2.0, 0.1 * 2 ** (failures - 1)) if failures else 0.0)


async def _closed_loop(ctx: SessionContext, spec: WorkerSpec, t0: float) -> None:
    s = ctx.scenario
    slots = [i for i in range(s.arrivals.sessions) if i % spec.count == spec.index]
    slots = slots[: share(s.limits.max_streams, spec)]
    budget = [share(s.limits.max_sessions, spec)]
    await asyncio.gather(*(_slot(ctx, i, t0, budget) for i in slots))


async def run_worker(spec: WorkerSpec) -> None:
    """Run one worker to its end; raises on set-up failures (the caller writes error.txt)."""
    s = Scenario.from_dict(spec.scenario)
    folder = worker_dir(Path(spec.out_dir), spec.index)
    folder.mkdir(parents=True, exist_ok=True)
    speech = await asyncio.to_thread(wire_speech, s) if s.kind != "tts" else []
    target = make_target(s.target, stt_model=s.stt.model, tts_model=s.tts.model)
    await target.start()
    try:
        (folder / READY_FILE).touch()
        epoch = spec.start_epoch or await _wait_go(Path(spec.out_dir) / GO_FILE)
        t0 = time.monotonic() + (epoch - time.time())
        ctx = SessionContext(
            s, target, Recorder(), speech, t0 + s.limits.warmup_s, t0 + s.limits.max_duration_s
        )
        out = _Output(folder, epoch, spec)
        cpu0 = _cpu_s()
        ticker = asyncio.create_task(_ticker(ctx, out, epoch, t0, s.limits.interval_s))
        tasks: set[asyncio.Task[None]] = set()
        try:
            await sleep_until(t0)
            async with asyncio.timeout(max(0.0, ctx.hard_stop - time.monotonic()) + 5.0):
                if s.arrivals.process == "concurrency":
                    await _closed_loop(ctx, spec, t0)
                else:
                    await _open_loop(ctx, spec, t0, tasks)
                    if tasks:
                        await asyncio.wait(tasks)
        finally:
            await cancel_all(tasks)
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            elapsed = time.monotonic() - t0
            tick = max(1, math.ceil(elapsed / s.limits.interval_s))
            _tick(ctx, out, epoch, tick, s.limits.interval_s, cpu0, t0)
            await out.flush()
            summary = {
                "worker": spec.index,
                "count": spec.count,
                "start_epoch": epoch,
                "interval_s": s.limits.interval_s,
                "elapsed_s": elapsed,
                "cpu_s": _cpu_s() - cpu0,
                "counters": dict(ctx.recorder.counters),
                "errors": dict(ctx.recorder.errors),
                "error_examples": ctx.recorder.examples,
                "scenario": s.name,
                "target": s.target.kind,
            }
            await asyncio.to_thread((folder / "summary.json").write_text, json.dumps(summary))
    finally:
        await target.close()


async def _run_until_stopped(spec: WorkerSpec) -> None:
    """``run_worker``, ended early but cleanly by SIGINT (Ctrl-C) or SIGTERM (the parent's
    stop, a pod's deletion): the sessions still open are cut and the summary is written, so
    what was measured until then merges. A Ctrl-C left a traceback in every worker's error.txt,
    and merge refuses a folder with one."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    stopping: list[int] = []

    def stop(signum: int) -> None:
        if not stopping:  # Ctrl-C reaches the parent and its workers, then the parent's stop
            stopping.append(signum)
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        await run_worker(spec)
    except asyncio.CancelledError:
        if not stopping:
            raise


def worker_entry(spec_json: str) -> None:
    """A worker process's main: uvloop, run, and on failure leave the traceback in error.txt."""
    import uvloop

    spec = WorkerSpec.from_json(spec_json)
    try:
        uvloop.run(_run_until_stopped(spec))
    except BaseException as exc:
        folder = worker_dir(Path(spec.out_dir), spec.index)
        folder.mkdir(parents=True, exist_ok=True)
        # The target's own refusal (a model it lacks, no key, nothing answering) is the user's
        # to read: its words, one line; anything else is the tool's fault, with its traceback.
        said = str(exc) if isinstance(exc, TargetError) else traceback.format_exc()
        (folder / "error.txt").write_text(said)
        raise SystemExit(1) from None

"""Run a scenario on this machine: N worker processes (spawned, one uvloop loop each), live
progress in the terminal (rich), then the merged result.

The parent does no load itself: it starts the workers, waits until every one is ready (target
connected, speech loaded), gives them one start epoch (go.json), follows their progress lines,
and stops any that outlive the scenario's hard limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from loadtest.merge import Merged, MergeError, merge
from loadtest.scenario import Scenario
from loadtest.worker import (
    GO_FILE,
    READY_FILE,
    WorkerSpec,
    run_worker,
    worker_dir,
    worker_entry,
)

_READY_TIMEOUT_S = 90.0
_START_DELAY_S = 0.5  # from go.json to the start epoch: every worker reads it in time
_EXIT_GRACE_S = 30.0


class RunError(RuntimeError):
    """A worker failed to start or crashed (its traceback is in the message)."""


class RunInterrupted(Exception):
    """Ctrl-C: the workers were stopped; ``merged`` is what they measured until then (None if
    none had started its load)."""

    def __init__(self, merged: Merged | None) -> None:
        super().__init__("interrupted")
        self.merged = merged


@dataclass(slots=True)
class _Progress:
    offsets: dict[int, int] = field(default_factory=dict)
    latest: dict[int, dict[str, Any]] = field(default_factory=dict)

    def poll(self, out_dir: Path, workers: int) -> None:
        for i in range(workers):
            path = worker_dir(out_dir, i) / "progress.jsonl"
            if not path.is_file():
                continue
            with path.open() as f:
                f.seek(self.offsets.get(i, 0))
                text = f.read()
                complete = text[: text.rfind("\n") + 1]
                self.offsets[i] = self.offsets.get(i, 0) + len(complete)
            for line in complete.splitlines():
                self.latest[i] = json.loads(line)

    def table(self, scenario: Scenario, elapsed: float) -> Table:
        rows = list(self.latest.values())
        total = {
            k: sum(r.get(k, 0) for r in rows)
            for k in (
                "active",
                "sessions.started",
                "sessions.ok",
                "sessions.failed",
                "stt.chunks",
                "tts.chunks",
            )
        }
        table = Table(
            title=escape(f"{scenario.name}: {scenario.target.kind} {scenario.target.address}")
            + f"  {elapsed:5.1f} / {scenario.limits.duration_s:g} s"
        )
        for column in ("active", "started", "ok", "failed", "messages", "worker CPU", "lag p99"):
            table.add_column(column, justify="right")
        cpu = ", ".join(f"{r.get('cpu', 0):.0%}" for r in rows)
        lag = max((r.get("lag_p99_ms", 0.0) for r in rows), default=0.0)
        table.add_row(
            str(total["active"]),
            str(total["sessions.started"]),
            str(total["sessions.ok"]),
            str(total["sessions.failed"]),
            str(total["stt.chunks"] + total["tts.chunks"]),  # results.MESSAGE_COUNTERS
            cpu,
            f"{lag:.1f} ms",
        )
        return table


def _clean(out_dir: Path) -> None:
    """The folder is the run's own: output of an earlier run there would be merged into it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob("worker-*"), out_dir / GO_FILE]:
        shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)


def _start(scenario: Scenario, out_dir: Path) -> list[multiprocessing.process.BaseProcess]:
    ctx = multiprocessing.get_context("spawn")
    procs: list[multiprocessing.process.BaseProcess] = []
    for i in range(scenario.limits.workers):
        spec = WorkerSpec(scenario.to_dict(), i, scenario.limits.workers, str(out_dir))
        proc = ctx.Process(target=worker_entry, args=(spec.to_json(),), name=f"loadtest-{i}")
        proc.start()
        procs.append(proc)
    return procs


def _failure(out_dir: Path) -> str | None:
    for path in sorted(out_dir.glob("worker-*/error.txt")):
        return f"{path.parent.name}: {path.read_text()[-3000:]}"
    return None


def _wait_ready(procs: list[Any], out_dir: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while not all((worker_dir(out_dir, i) / READY_FILE).exists() for i in range(len(procs))):
        failure = _failure(out_dir)
        if failure or any(p.exitcode is not None for p in procs):
            raise RunError(f"a worker failed to start: {failure or 'exited'}")
        if time.monotonic() > deadline:
            raise RunError(f"workers not ready within {_READY_TIMEOUT_S:g} s")
        time.sleep(0.05)


def run(
    scenario: Scenario,
    out_dir: Path,
    *,
    live: bool = True,
    on_tick: Callable[[dict[int, dict[str, Any]]], None] | None = None,
) -> Merged:
    """Run ``scenario`` with its workers writing under ``out_dir``; return the merged output.
    Raises RunError when a worker fails, RunInterrupted (with what was measured) on Ctrl-C."""
    _clean(out_dir)
    procs = _start(scenario, out_dir)
    interrupted = False
    try:
        _wait_ready(procs, out_dir)
        start = time.time() + _START_DELAY_S
        (out_dir / GO_FILE).write_text(json.dumps({"start_epoch": start}))
        progress = _Progress()
        hard = time.monotonic() + _START_DELAY_S + scenario.limits.max_duration_s + _EXIT_GRACE_S
        view = Live(console=Console(stderr=True), auto_refresh=False) if live else None
        with view or contextlib.nullcontext():
            while any(p.is_alive() for p in procs) and time.monotonic() < hard:
                time.sleep(0.5)
                progress.poll(out_dir, len(procs))
                if view is not None:
                    view.update(progress.table(scenario, time.time() - start), refresh=True)
                if on_tick is not None:
                    on_tick(progress.latest)
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reaches the workers too, `kill -INT` this process alone does not:
        # SIGTERM stops each the same way (sessions cut, summary written; a repeat is ignored).
        interrupted = True
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
    finally:
        for proc in procs:
            proc.join(timeout=0.1 if proc.exitcode is not None else 5.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5.0)
    if interrupted:
        try:
            merged: Merged | None = merge([out_dir])
        except MergeError:
            merged = None  # stopped before any worker ran its load
        raise RunInterrupted(merged)
    failure = _failure(out_dir)
    if failure:
        raise RunError(failure)
    return merge([out_dir])


async def run_inline(scenario: Scenario, out_dir: Path) -> Merged:
    """One worker in the running event loop, no process, no live view: for embedding the tool
    (and its tests). The output and the merge are those of ``run``. Raises RunError."""
    await asyncio.to_thread(_clean, out_dir)
    single = dataclasses.replace(scenario, limits=dataclasses.replace(scenario.limits, workers=1))
    spec = WorkerSpec(single.to_dict(), 0, 1, str(out_dir), time.time() + 0.2)
    try:
        await run_worker(spec)
    except Exception as exc:
        raise RunError(f"the worker failed: {exc!r}") from exc
    return await asyncio.to_thread(merge, [out_dir])

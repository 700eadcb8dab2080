"""Combine the output of many workers (processes, pods, machines) into one run.

Histograms add exactly (HDR histograms of the same range and precision sum bucket by bucket),
so merged percentiles are those of all samples together, never an average of percentiles.
Intervals are aligned on the shared start epoch: an interval is the bucket
``round((start - epoch) / interval_s)``. Counters and errors sum; progress lines sum per
interval, except ``cpu`` and ``lag_p99_ms``, which stay per worker (the generator's own health).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from loadtest.hdrlog import new_histogram, read_log


class MergeError(RuntimeError):
    """No worker output, a worker that failed, or workers of different runs."""


@dataclass(slots=True)
class Merged:
    start_epoch: float = 0.0
    interval_s: float = 1.0
    workers: int = 0
    totals: dict[str, HdrHistogram] = field(default_factory=dict)
    # metric -> interval bucket -> histogram
    intervals: dict[str, dict[int, HdrHistogram]] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # error key -> its first message
    # interval bucket -> summed progress counters (active, sessions.started, ...)
    timeline: dict[int, Counter[str]] = field(default_factory=dict)
    worker_cpu: dict[int, list[float]] = field(default_factory=dict)  # worker -> per interval
    worker_lag_ms: dict[int, list[float]] = field(default_factory=dict)
    cpu_s: float = 0.0
    elapsed_s: float = 0.0

    def add_histogram(self, metric: str, bucket: int, h: HdrHistogram) -> None:
        self.totals.setdefault(metric, new_histogram()).add(h)
        per = self.intervals.setdefault(metric, {})
        per.setdefault(bucket, new_histogram()).add(h)


def worker_dirs(roots: list[Path]) -> list[Path]:
    """Every folder holding a worker's summary.json under ``roots``, sorted."""
    found: set[Path] = set()
    for root in roots:
        found.update(p.parent for p in root.rglob("summary.json"))
    return sorted(found)


def merge(roots: list[Path], *, pool_runs: bool = False) -> Merged:
    """Merge every worker under ``roots``. Raises MergeError (failed workers, mixed runs).

    ``pool_runs``: the roots are repeats of one trial (the SLO search's), run one after
    another: their totals are pooled, and their intervals overlaid by time since each run's
    own start (a run's intervals never line up with another's epoch)."""
    failed = [p for root in roots for p in root.rglob("error.txt")]
    if failed:
        raise MergeError(f"worker failed: {failed[0]}:\n{failed[0].read_text()[-2000:]}")
    dirs = worker_dirs(roots)
    if not dirs:
        raise MergeError(f"no worker output (summary.json) under {', '.join(map(str, roots))}")
    out = Merged()
    epochs = set()
    for folder in dirs:
        summary = json.loads((folder / "summary.json").read_text())
        epochs.add(round(float(summary["start_epoch"]), 3))
        out.start_epoch, out.interval_s = float(summary["start_epoch"]), summary["interval_s"]
        _add_worker(out, folder, summary)
    if pool_runs:
        out.start_epoch = min(epochs)
    elif len(epochs) > 1:
        raise MergeError(f"workers of different runs (start epochs {sorted(epochs)})")
    return out


def _add_worker(out: Merged, folder: Path, summary: dict[str, Any]) -> None:
    out.workers += 1
    out.counters.update(summary["counters"])
    out.errors.update(summary["errors"])
    for key, message in summary.get("error_examples", {}).items():
        out.examples.setdefault(key, message)
    out.cpu_s += summary["cpu_s"]
    out.elapsed_s = max(out.elapsed_s, summary["elapsed_s"])
    for interval in read_log(folder / "intervals.hlog"):
        bucket = round((interval.end_epoch_s - out.start_epoch) / out.interval_s)
        out.add_histogram(interval.tag, bucket, interval.histogram)
    index = len(out.worker_cpu)  # worker indexes repeat across pods; order is enough
    cpu, lag = out.worker_cpu.setdefault(index, []), out.worker_lag_ms.setdefault(index, [])
    progress = folder / "progress.jsonl"
    for line in progress.read_text().splitlines() if progress.is_file() else []:
        row = json.loads(line)
        bucket = round(row.pop("t") / out.interval_s)
        cpu.append(row.pop("cpu"))
        lag.append(row.pop("lag_p99_ms"))
        out.timeline.setdefault(bucket, Counter()).update(row)


def timeline_rows(merged: Merged) -> list[dict[str, Any]]:
    """Per interval: time (s), summed progress counters (cumulative ones stay cumulative)."""
    rows = []
    for bucket in sorted(merged.timeline):
        rows.append({"t": bucket * merged.interval_s, **merged.timeline[bucket]})
    return rows


def per_interval(merged: Merged, metric: str) -> dict[int, HdrHistogram]:
    return dict(sorted(merged.intervals.get(metric, {}).items()))

"""Histograms recorded in several processes, written as HDR interval logs, merged exactly."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loadtest.hdrlog import IntervalLogWriter, new_histogram, read_log
from loadtest.merge import MergeError, merge
from loadtest.recorder import Recorder

EPOCH = 1_790_000_000.0


def _values(worker: int) -> list[list[int]]:
    """Worker ``worker``'s samples (µs) for each of 3 one-second intervals."""
    rng = np.random.default_rng(worker)
    return [[int(v) + 1 for v in rng.lognormal(8 + worker, 1.0, 500)] for _ in range(3)]


def write_worker(out: str, worker: int) -> None:
    """In a spawned process: record, flush per interval, write the worker's files."""
    folder = Path(out) / f"worker-{worker:03d}"
    folder.mkdir(parents=True)
    rec, log = Recorder(), IntervalLogWriter(EPOCH, f"worker {worker}")
    for second, values in enumerate(_values(worker)):
        for v in values:
            rec.record_us("stt.message", v)
        rec.count("stt.chunks", len(values))
        rec.flush_interval(log, EPOCH + second, EPOCH + second + 1)
    (folder / "intervals.hlog").write_text(log.take())
    summary = {
        "worker": worker,
        "count": 2,
        "start_epoch": EPOCH,
        "interval_s": 1.0,
        "elapsed_s": 3.0,
        "cpu_s": 0.5,
        "counters": dict(rec.counters),
        "errors": {},
    }
    (folder / "summary.json").write_text(json.dumps(summary))


def test_interval_logs_merge_across_processes_exactly(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=write_worker, args=(str(tmp_path), w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    merged = merge([tmp_path])

    expected = new_histogram()
    for worker in range(2):
        for values in _values(worker):
            for v in values:
                expected.record_value(v)
    got = merged.totals["stt.message"]
    assert got.get_total_count() == 3000 == expected.get_total_count()
    for p in (50, 90, 99, 99.9, 100):
        assert got.get_value_at_percentile(p) == expected.get_value_at_percentile(p)
    # Intervals line up on the shared epoch: buckets 1, 2, 3 (by their end), 1000 samples each.
    per = merged.intervals["stt.message"]
    assert sorted(per) == [1, 2, 3]
    assert all(h.get_total_count() == 1000 for h in per.values())
    assert merged.counters["stt.chunks"] == 3000 and merged.workers == 2


def test_log_lines_carry_tags_and_times(tmp_path: Path) -> None:
    rec, log = Recorder(), IntervalLogWriter(EPOCH)
    rec.record("a.b", 0.002)
    rec.record("c", 0.5)
    rec.flush_interval(log, EPOCH, EPOCH + 1)
    rec.flush_interval(log, EPOCH + 1, EPOCH + 2)  # empty interval: nothing written
    path = tmp_path / "x.hlog"
    path.write_text(log.take())
    intervals = read_log(path)
    assert [(i.tag, i.start_epoch_s, i.end_epoch_s) for i in intervals] == [
        ("a.b", EPOCH, EPOCH + 1),
        ("c", EPOCH, EPOCH + 1),
    ]
    # 3 significant digits: values come back within 0.1 %.
    assert abs(intervals[0].histogram.get_max_value() - 2000) <= 2
    assert abs(intervals[1].histogram.get_value_at_percentile(50) - 500_000) <= 500


def test_each_interval_holds_only_its_own_samples_and_the_total_all(
    tmp_path: Path, monkeypatch
) -> None:
    """A flush starts the next interval without hdrh's ``reset``, whose Python loop over 23,552
    counts stalled the worker's loop 50-100 ms per interval (BENCHMARKS.md, "The generator's
    own stall"): fresh histograms, the totals untouched."""
    from hdrh.histogram import HdrHistogram

    def no_reset(self):  # the stall this test keeps out of the interval flush
        raise AssertionError("flush_interval must not reset a histogram in place")

    monkeypatch.setattr(HdrHistogram, "reset", no_reset)
    rec, log = Recorder(), IntervalLogWriter(EPOCH)
    for second, values in enumerate(([0.001] * 3, [0.2, 0.3], [0.05])):
        for value in values:
            rec.record("m", value)
        rec.flush_interval(log, EPOCH + second, EPOCH + second + 1)
    path = tmp_path / "x.hlog"
    path.write_text(log.take())
    counts = [
        (i.start_epoch_s - EPOCH, i.histogram.get_total_count(), i.histogram.get_max_value())
        for i in read_log(path)
    ]
    assert [(start, n) for start, n, _ in counts] == [(0, 3), (1, 2), (2, 1)]
    assert abs(counts[1][2] - 300_000) <= 300 and abs(counts[2][2] - 50_000) <= 50
    assert rec.total["m"].get_total_count() == 6
    assert rec.interval_percentile_ms("m", 50) is None  # the new interval has no sample yet


def test_merge_command_combines_worker_folders(tmp_path: Path) -> None:
    """`loadtest merge` over two "machines'" folders writes the result and the report."""
    for machine, worker in (("a", 0), ("b", 1)):
        write_worker(str(tmp_path / machine), worker)
    out = tmp_path / "merged"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest",
            "merge",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--out",
            str(out),
        ],
        check=True,
        timeout=60,
        capture_output=True,
    )
    result = json.loads((out / "result.json").read_text())
    assert result["metrics"]["stt.message"]["count"] == 3000
    assert result["run"]["workers"] == 2
    assert (out / "report.html").stat().st_size > 1000
    assert (out / "result.csv").read_text().splitlines()[0].startswith("metric,count,p50")


def test_repeats_of_a_trial_pool_only_when_asked(tmp_path: Path) -> None:
    # The SLO search runs each level's repeats one after another: runs of their own, whose
    # epochs differ. Mixing runs by mistake is refused; pooling the repeats is asked for.
    for repeat, epoch in enumerate((EPOCH, EPOCH + 30.0)):
        folder = tmp_path / f"repeat-{repeat}" / "worker-000"
        folder.mkdir(parents=True)
        rec, log = Recorder(), IntervalLogWriter(epoch)
        for v in range(1, 101):
            rec.record_us("stt.message", v * (repeat + 1))
        rec.count("stt.chunks", 100)
        rec.flush_interval(log, epoch, epoch + 1)
        (folder / "intervals.hlog").write_text(log.take())
        summary = {
            "worker": 0,
            "count": 1,
            "start_epoch": epoch,
            "interval_s": 1.0,
            "elapsed_s": 1.0,
            "cpu_s": 0.1,
            "counters": dict(rec.counters),
            "errors": {},
        }
        (folder / "summary.json").write_text(json.dumps(summary))
    roots = [tmp_path / "repeat-0", tmp_path / "repeat-1"]
    with pytest.raises(MergeError, match="different runs"):
        merge(roots)
    pooled = merge(roots, pool_runs=True)
    assert pooled.totals["stt.message"].get_total_count() == 200
    assert pooled.counters["stt.chunks"] == 200 and pooled.workers == 2
    assert sorted(pooled.intervals["stt.message"]) == [1]  # overlaid: 1 s after each start


async def test_a_flush_cancelled_before_its_write_starts_loses_nothing(tmp_path: Path) -> None:
    """The worker's ticker is cancelled at the run's end, possibly mid-flush. With the only
    executor thread busy, its write is still queued when the cancel lands; the interval it took
    must still reach the log, and before the final flush's."""
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from loadtest.worker import WorkerSpec, _Output

    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(executor)
    out = _Output(tmp_path, EPOCH, WorkerSpec(index=0, count=1, scenario={}, out_dir=""))
    rec, gate = Recorder(), threading.Event()
    busy = loop.run_in_executor(None, gate.wait, 10.0)
    for second in range(2):
        rec.record_us("stt.message", 1000 + second)
        rec.flush_interval(out.log, EPOCH + second, EPOCH + second + 1)
        out.progress.append(json.dumps({"t": second + 1}) + "\n")
        if second == 0:
            ticker = asyncio.ensure_future(out.flush())
            await asyncio.sleep(0.05)  # queued behind the busy thread
            ticker.cancel()
            with pytest.raises(asyncio.CancelledError):
                await ticker
            gate.set()
    await asyncio.wait_for(out.flush(), 10)
    await busy
    intervals = read_log(tmp_path / "intervals.hlog")
    assert [i.histogram.get_max_value() for i in intervals] == [1000, 1001]
    lines = (tmp_path / "progress.jsonl").read_text().splitlines()
    assert [json.loads(x)["t"] for x in lines] == [1, 2]


async def test_the_interval_flush_counts_in_the_workers_cpu_share(tmp_path: Path, monkeypatch):
    """Work done in the interval flush is in some interval's CPU share: the share was measured
    from after the flush, so a stall in it (hdrh's reset, above) never showed."""
    import asyncio
    import json
    import time

    from loadtest import worker
    from loadtest.scenario import Scenario
    from loadtest.sessions import SessionContext

    def busy_flush(self, log, start, end) -> None:  # 40 ms of this process's CPU per flush
        until = time.process_time() + 0.04
        while time.process_time() < until:
            pass

    monkeypatch.setattr(Recorder, "flush_interval", busy_flush)
    now = time.monotonic()
    ctx = SessionContext(Scenario(), None, Recorder(), [], now, now + 60)  # type: ignore[arg-type]
    spec = worker.WorkerSpec(scenario={}, out_dir=str(tmp_path), index=0, count=1)
    out = worker._Output(tmp_path, EPOCH, spec)
    ticker = asyncio.create_task(worker._ticker(ctx, out, EPOCH, now, 0.1))
    await asyncio.sleep(0.85)
    ticker.cancel()
    await asyncio.gather(ticker, return_exceptions=True)
    await out.flush()
    shares = [json.loads(line)["cpu"] for line in (tmp_path / "progress.jsonl").open()]
    assert len(shares) >= 4, shares
    # 40 ms of CPU per interval of at least 100 ms: each share after the first carries one
    # flush's CPU (at most 0.4; above 0.1 even if a loaded machine doubles the intervals).
    assert min(shares[1:]) > 0.1, shares

"""The fuzz adapter's memory report (tools/fuzz_adapter.py): what docs/fuzzing.md reads a
leak from."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from tools.fuzz_adapter import memory_report


def test_report_separates_the_python_heap_from_glibc_s(tmp_path: Path) -> None:
    report = memory_report(tmp_path / "m.snapshot")
    assert report["rss"] > 0 and report["python_blocks"] > 0
    assert report["gc_objects"] >= sum(report["gc_objects_by_type"].values()) > 0
    heap = report["glibc"]
    assert heap["in_use"] > 0 and set(heap) == {"in_use", "free_kept", "mmapped"}
    assert report["glibc_after_trim"]["free_kept"] <= heap["free_kept"] + (1 << 20)
    assert "traced" not in report  # tracemalloc off: no snapshot
    assert not (tmp_path / "m.snapshot").exists()


def test_with_tracemalloc_the_snapshot_is_kept(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        kept = [bytes(1000) for _ in range(100)]
        report = memory_report(tmp_path / "m.snapshot")
    finally:
        tracemalloc.stop()
    assert kept and report["traced"] >= 100_000
    assert any("test_memory_report.py" in line for line in report["traced_top"])
    assert tracemalloc.Snapshot.load(str(tmp_path / "m.snapshot")).traces

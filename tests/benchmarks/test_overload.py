"""The overload benchmark keeps working: one short level at twice a small capacity through the
load tester (in this process) against a real adapter and Triton, summarized and rendered.
Seconds, not a measurement: the curve itself is ``make bench-overload``."""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from benchmarks.overload import pool, rss_mib, scenario, summarize
from benchmarks.overload_md import BEGIN, END, render, verdict, write_section
from inference_adapter.config import AdapterConfig
from inference_adapter.server import AdapterServer
from loadtest import runner
from localstack.triton import TritonServer

pytestmark = pytest.mark.timeout(240)
CAPACITY = 2


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def adapter_of_two(triton: TritonServer) -> AsyncIterator[AdapterServer]:
    server = AdapterServer(
        AdapterConfig(
            listen="127.0.0.1:0",
            triton_urls=(triton.grpc_url,),
            max_streams_per_replica=CAPACITY,
            health_timeout_seconds=1.0,
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)


async def test_a_level_at_twice_capacity_counts_refusals_with_retry_info(
    adapter_of_two: AdapterServer, tmp_path: Path
) -> None:
    args = argparse.Namespace(session_s=1.5, measure_s=3.0, process="constant", seed=1)
    s = scenario(adapter_of_two.address, CAPACITY, 2.0, args)
    assert s.arrivals.rate == pytest.approx(2 * CAPACITY / 1.5)
    merged = await runner.run_inline(s, tmp_path / "run")
    row, hists = summarize(merged, 2.0, CAPACITY, [rss_mib(os.getpid())])

    # Twice the capacity offered: some admitted and served, some refused, nothing else.
    assert row["ok"] >= CAPACITY and row["refused"] >= 1, row
    assert row["ok"] + row["refused"] == row["sessions"], row
    assert row["other_errors"] == {}, row
    assert row["retry_info"] == row["refused"]  # every refusal carried RetryInfo
    rejected = row["session.rejected"]
    assert 1 <= rejected["count"] <= row["refused"]  # ramp refusals are not timed
    assert row["stt.message"]["count"] > 0 and row["session.setup"]["count"] > 0

    levels = pool([row], [hists])
    result = {
        "header": {
            "date": "today",
            "commit": "abc1234",
            "grpcio": "x",
            "python": "3.11",
            "machine": "x86_64",
            "nproc": 2,
            "load_average_before": [1.0, 1.0, 1.0],
            "load_average_after": [1.0, 1.0, 1.0],
            "command": "python -m benchmarks.overload",
            "process": "constant",
            "session_s": 1.5,
            "measure_s": 3.0,
            "repeats": 1,
            "slo_message_p99_ms": 100.0,
            "slo_refusal_p99_ms": 100.0,
        },
        "capacity": CAPACITY,
        "idle_rss_mib": 50.0,
        "levels": [levels],
    }
    text = render(result)
    assert text.startswith(BEGIN) and text.endswith(END)
    assert f"| 2x | {2 * CAPACITY:g} | {row['sessions']} | {row['ok']} |" in text
    page = tmp_path / "BENCHMARKS.md"
    page.write_text(f"# Benchmarks\n\n{BEGIN}\nstale section\n{END}\n\n## After\n")
    write_section(result, page)
    written = page.read_text()
    assert "stale section" not in written and written.endswith("## After\n") and text in written


def test_the_verdict_names_each_objective_a_level_misses() -> None:
    header = {"slo_message_p99_ms": 100.0, "slo_refusal_p99_ms": 50.0}

    def row(message_p99: float, refusal_p99: float, retry_info: int, other: dict[str, int]):
        return {
            "pooled": {
                "stt.message": {"count": 100, "p99": message_p99},
                "session.rejected": {"count": 10, "p99": refusal_p99},
            },
            "refused": 10,
            "retry_info": retry_info,
            "other_errors": other,
        }

    assert verdict(row(100.0, 50.0, 10, {}), header) == "holds"
    assert verdict(row(100.1, 50.0, 10, {}), header) == "fails: admitted p99"
    assert verdict(row(90.0, 51.0, 9, {"UNAVAILABLE/": 1}), header) == (
        "fails: refusal p99, RetryInfo missing, other errors"
    )

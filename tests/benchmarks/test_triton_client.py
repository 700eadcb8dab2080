"""The Triton-client benchmark keeps working: each client kind drives a few paced sequences on
the session's real Triton for a second, every request answered, and the summary reads the
ratios the goal asks for. Seconds, not a measurement: the figures are in BENCHMARKS.md."""

from __future__ import annotations

import pytest

from benchmarks.triton_client import summary, worker
from localstack.triton import TritonServer

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("kind", ["adapter", "tritonclient"])
async def test_each_client_kind_drives_paced_sequences_every_request_answered(
    triton: TritonServer, kind: str
) -> None:
    result = await worker(kind, triton.grpc_url, 3, 1.0)
    # 3 streams at 10 chunks a second for the measured second (the pacing's own bounds).
    assert 25 <= result["messages"] <= 35, result
    assert result["unanswered"] == 0 and result["errors"] == 0, result
    assert result["samples"] >= result["messages"] - 3, result
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"], result
    assert result["cpu_us_per_message"] > 0, result


def test_the_summary_reads_each_repeats_ratio_and_the_ratio_net_of_the_floor() -> None:
    def run(kind: str, repeat: int, cpu: float) -> dict[str, object]:
        return {"kind": kind, "repeat": repeat, "cpu_us_per_message": cpu, "p50_ms": 1.0,
                "p99_ms": 2.0, "samples": 10}  # fmt: skip

    lines = summary(
        [run("echo", 1, 300), run("adapter", 1, 400), run("tritonclient", 1, 900),
         run("echo", 2, 300), run("adapter", 2, 500), run("tritonclient", 2, 1000)]
    )  # fmt: skip
    assert "per repeat: 2.25×, 2.00×" in lines[-2]
    assert lines[-1].endswith("6.00×, 3.50×")

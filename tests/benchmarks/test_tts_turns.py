"""The TTS-turns benchmark keeps working: a few turns on each path against the session's real
adapter and gateway, every turn acknowledged before its first audio, and the summary reads each
path. Seconds, not a measurement: the figures are in BENCHMARKS.md."""

from __future__ import annotations

import pytest

from benchmarks.tts_turns import measure, summary
from inference_adapter.server import AdapterServer
from tests.helpers.edge import Edge

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]


async def test_each_path_times_its_turns_opened_before_first_audio(
    edge_adapter: AdapterServer, edge: Edge
) -> None:
    results = await measure(edge_adapter.address, {"gateway": (edge.ws, edge.key)}, turns=3)
    paths = ["gateway", "adapter, call per turn", "adapter, one call"]
    assert list(results) == paths
    for path, turns in results.items():
        assert len(turns) == 3, path
        for opened, first in turns:
            assert 0 < opened < first < 10, (path, opened, first)
    lines = summary(results)
    assert [line.split("  turns")[0].strip() for line in lines] == paths
    assert all("turns    3" in line for line in lines)

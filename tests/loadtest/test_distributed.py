"""Beyond one machine: independent `worker` processes (as Indexed Job pods run them) with one
start epoch, each writing its own folder, combined by `merge`; and the manifest's command."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path

import pytest

from loadtest.cli import parser
from loadtest.scenario import REPO

MANIFEST = REPO / "loadtest" / "k8s" / "indexed-job.yaml"


async def test_workers_of_two_machines_merge(echo_address: str, tmp_path: Path) -> None:
    start_at = time.time() + 6.0  # both processes import and connect before it
    common = [
        "-m",
        "loadtest",
        "worker",
        "--target",
        "echo",
        "--address",
        echo_address,
        "--concurrency",
        "4",
        "--duration",
        "2",
        "--count",
        "2",
        "--start-at",
        f"{start_at:.3f}",
    ]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            *common,
            "--index",
            str(i),
            "--out",
            str(tmp_path / f"pod-{i}"),
            stdin=asyncio.subprocess.DEVNULL,
        )
        for i in range(2)
    ]
    codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 90)
    assert codes == [0, 0]
    merge = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest",
        "merge",
        str(tmp_path / "pod-0"),
        str(tmp_path / "pod-1"),
        "--out",
        str(tmp_path / "merged"),
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(merge.wait(), 60) == 0
    result = json.loads((tmp_path / "merged" / "result.json").read_text())
    assert result["run"]["workers"] == 2
    assert result["run"]["start_epoch"] == pytest.approx(start_at, abs=1e-3)
    # 4 slots over 2 workers: slots 0, 2 in one pod and 1, 3 in the other.
    summaries = _summaries(tmp_path)
    assert sorted(s["worker"] for s in summaries) == [0, 1]
    assert all(s["counters"]["sessions.started"] >= 2 for s in summaries)
    # Every chunk sent has its echo latency recorded, or is counted as unanswered (a session
    # that ended or was cut before its echo); those come with the session's error.
    counters = result["counters"]
    unanswered = counters.get("stt.unanswered", 0)
    assert result["metrics"]["stt.message"]["count"] + unanswered == counters["stt.chunks"]
    assert unanswered == 0 or counters.get("sessions.ok", 0) < counters["sessions.started"], (
        counters,
        result.get("errors"),
    )


def _summaries(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in folder.glob("pod-*/worker-*/summary.json")]


def test_the_manifest_command_is_one_the_tool_takes() -> None:
    text = MANIFEST.read_text()
    block = text.split("command:", 1)[1].split("resources:", 1)[0]
    argv = [m.group(1) for m in re.finditer(r"^\s*- (\S+)\s*$", block, re.MULTILINE)]
    assert argv[0] == "voxwire-loadtest"
    args = parser().parse_args([a.replace("__START_AT__", "1790000000") for a in argv[1:]])
    assert args.command == "worker" and args.count == 4 and args.index is None
    assert re.search(r"completions: 4\b", text) and re.search(r"parallelism: 4\b", text)
    assert "completionMode: Indexed" in text

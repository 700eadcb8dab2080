"""signal_child: a child that died just before it is signalled keeps its exit status, and
asyncio's child watcher reaps it (no "Unknown child process pid" warning)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest

from voxwire.child_signal import signal_child


def _spin(seconds: float) -> None:
    # Holds the GIL, as a busy event loop does: the child dies meanwhile, before the
    # watcher's thread reaps it.
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


async def test_a_child_killed_as_it_dies_keeps_its_exit_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncio")
    codes = []
    for _ in range(40):
        process = await asyncio.create_subprocess_exec("sleep", "100")
        os.kill(process.pid, signal.SIGTERM)  # the process group's signal
        _spin(0.0002)
        signal_child(process, signal.SIGKILL)  # the gateway's own clean-up, just after
        codes.append(await asyncio.wait_for(process.wait(), 10))
    assert codes == [-signal.SIGTERM] * 40
    assert not [r for r in caplog.records if "Unknown child process" in r.getMessage()]


async def test_a_child_that_exited_is_not_signalled() -> None:
    process = await asyncio.create_subprocess_exec("true")
    assert await asyncio.wait_for(process.wait(), 10) == 0
    assert signal_child(process, signal.SIGKILL) is False
    process = await asyncio.create_subprocess_exec("sleep", "100")
    assert signal_child(process, signal.SIGKILL) is True
    assert await asyncio.wait_for(process.wait(), 10) == -signal.SIGKILL

"""The adapter as `make fuzz` runs it: its own process, measured from outside.

``python -m tools.fuzz_adapter --triton-url HOST:PORT --port-file F --metrics-port P``
serves the adapter on a free loopback port (written to ``--port-file`` once it listens) with
Prometheus telemetry on ``--metrics-port``, plus one gauge the fuzzer reads for leaks:
``voxwire_asyncio_tasks`` (the tasks alive on the adapter's event loop, sampled every 0.5 s on
the loop itself). Logs go to stderr (the fuzzer counts asyncio warnings and tracebacks in them).
SIGTERM drains and exits.

``--memory-report FILE``: on SIGUSR1 the adapter writes where its memory is to FILE (JSON): its
RSS, the Python heap (``sys.getallocatedblocks``, tracemalloc's traced bytes and top lines when
``PYTHONTRACEMALLOC`` is set), the collector's tracked objects by type, and glibc's heap
(``mallinfo2``: in use, free but kept, mmapped) before and after ``malloc_trim(0)``; with
tracemalloc, its snapshot beside FILE (``.snapshot``). A run that leaves RSS high says with it
whether Python objects, freed C memory the allocator keeps, or C memory still in use holds it
(docs/fuzzing.md).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import uvloop
from prometheus_client import Gauge

from inference_adapter.config import AdapterConfig
from inference_adapter.server import AdapterServer
from tools import glibc_heap
from voxwire.fuzz.probes import rss_bytes

TASKS = Gauge("voxwire_asyncio_tasks", "Tasks alive on the adapter's event loop")
TASKS_BY_KIND = Gauge(
    "voxwire_asyncio_tasks_by_kind",
    "Tasks alive on the adapter's event loop by what they run (a leak names itself)",
    ["kind"],
)


def _kind(task: asyncio.Task[object]) -> str:
    """A task's name, or for an unnamed one ("Task-123") the coroutine it runs."""
    name = task.get_name()
    if name.startswith("Task-"):
        return getattr(task.get_coro(), "__qualname__", "?")
    return name


async def _sample_tasks() -> None:
    me = asyncio.current_task()
    seen: set[str] = set()
    while True:
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        TASKS.set(len(tasks))
        kinds = collections.Counter(_kind(t) for t in tasks)
        for kind in seen - kinds.keys():
            TASKS_BY_KIND.labels(kind=kind).set(0)
        for kind, n in kinds.items():
            TASKS_BY_KIND.labels(kind=kind).set(n)
        seen |= kinds.keys()
        await asyncio.sleep(0.5)


def memory_report(snapshot_file: Path) -> dict[str, Any]:
    """Where the process's memory is (see the module's docstring). With tracemalloc on, its
    snapshot goes to ``snapshot_file`` too: two reports' snapshots compare with
    ``tracemalloc.Snapshot.load(b).compare_to(tracemalloc.Snapshot.load(a), "traceback")``."""
    gc.collect()
    by_type = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    report: dict[str, Any] = {
        "rss": rss_bytes(os.getpid()),
        "python_blocks": sys.getallocatedblocks(),
        "gc_objects": sum(by_type.values()),
        "gc_objects_by_type": dict(by_type.most_common(25)),
    }
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot()
        snapshot.dump(str(snapshot_file))
        report["traced"] = tracemalloc.get_traced_memory()[0]
        report["traced_top"] = [
            f"{stat.size} B in {stat.count}: {stat.traceback}"
            for stat in snapshot.statistics("lineno")[:25]
        ]
    try:
        report["glibc"] = glibc_heap.heap()
    except (OSError, AttributeError):
        return report  # not glibc
    glibc_heap.trim()
    report["glibc_after_trim"] = glibc_heap.heap()
    report["rss_after_trim"] = rss_bytes(os.getpid())
    return report


async def serve(config: AdapterConfig, port_file: Path, memory_file: Path | None) -> None:
    server = AdapterServer(config)
    await server.start()
    await asyncio.to_thread(port_file.write_text, str(server.port))
    sampler = asyncio.create_task(_sample_tasks())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if memory_file is not None:
        # A diagnostic, run on the loop on purpose: the report must see a quiet heap.
        loop.add_signal_handler(
            signal.SIGUSR1,
            lambda: memory_file.write_text(
                json.dumps(memory_report(memory_file.with_suffix(".snapshot")), indent=1)
            ),
        )
    try:
        await stop.wait()
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await server.stop(grace=2.0)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tools.fuzz_adapter")
    p.add_argument("--triton-url", required=True)
    p.add_argument("--port-file", type=Path, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--memory-report", type=Path, help="on SIGUSR1, where memory is (JSON)")
    a = p.parse_args()
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = AdapterConfig(
        listen="127.0.0.1:0",
        triton_urls=(a.triton_url,),
        telemetry="prometheus",
        prometheus_port=a.metrics_port,
    )
    uvloop.run(serve(config, a.port_file, a.memory_report))


if __name__ == "__main__":
    main()

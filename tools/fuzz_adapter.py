"""The adapter as `make fuzz` runs it: its own process, measured from outside.

``python -m tools.fuzz_adapter --triton-url HOST:PORT --port-file F --metrics-port P``
serves the adapter on a free loopback port (written to ``--port-file`` once it listens) with
Prometheus telemetry on ``--metrics-port``, plus one gauge the fuzzer reads for leaks:
``voxwire_asyncio_tasks`` (the tasks alive on the adapter's event loop, sampled every 0.5 s on
the loop itself). Logs go to stderr (the fuzzer counts asyncio warnings and tracebacks in them).
SIGTERM drains and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import signal
from pathlib import Path

import uvloop
from prometheus_client import Gauge

from inference_adapter.config import AdapterConfig
from inference_adapter.server import AdapterServer

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


async def serve(config: AdapterConfig, port_file: Path) -> None:
    server = AdapterServer(config)
    await server.start()
    await asyncio.to_thread(port_file.write_text, str(server.port))
    sampler = asyncio.create_task(_sample_tasks())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
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
    a = p.parse_args()
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = AdapterConfig(
        listen="127.0.0.1:0",
        triton_urls=(a.triton_url,),
        telemetry="prometheus",
        prometheus_port=a.metrics_port,
    )
    uvloop.run(serve(config, a.port_file))


if __name__ == "__main__":
    main()

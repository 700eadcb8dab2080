"""The servers of the performance record, each its own process, and their CPU accounting.

Triton (``localstack.triton``, bench models), the echo floor (``benchmarks.echo_server``), the
null proxy (``benchmarks.null_proxy``) and the adapter (``python -m inference_adapter``) run on
127.0.0.1. CPU per process group is utime + stime from ``/proc/<pid>/stat`` (Triton with its
Python-backend stub processes), which is less noisy than latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

OPEN_TIMEOUT_S = 30.0
LOOPBACK = "127.0.0.1"
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
Pids = Callable[[], list[int]]


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (servers and clients holding
    thousands of sockets); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def server_process(
    args: list[str], logfile: Path, port_on_stdout: bool = False, cwd: Path | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``python -m <args>`` with its output in ``logfile`` and RLIMIT_NOFILE at its hard
    limit, run in ``cwd`` (modules there come first: another checkout's code); yields
    (process, stdout's first line when ``port_on_stdout``). SIGTERM (then SIGKILL) on exit."""
    raise_nofile()  # inherited; not a preexec_fn, unsafe once gRPC's threads exist
    with logfile.open("ab") as out:
        stdout = asyncio.subprocess.PIPE if port_on_stdout else out
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *args,
            stdout=stdout,
            stderr=out,
            stdin=asyncio.subprocess.DEVNULL,
            cwd=cwd,
        )
    try:
        line = b""
        if proc.stdout is not None:
            line = await asyncio.wait_for(proc.stdout.readline(), OPEN_TIMEOUT_S)
        yield proc, line.decode().strip()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 5)


@contextlib.asynccontextmanager
async def adapter_process(
    triton_url: str,
    logfile: Path,
    *extra: str,
    services: tuple[str, ...] = ("voxwire.v1.Transcription",),
    cwd: Path | None = None,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """The adapter (``python -m inference_adapter`` with ``extra`` options) on a free loopback
    port in front of ``triton_url``, once it serves ``services``; yields (process, address)."""
    listen = f"{LOOPBACK}:{free_port()}"
    argv = ["inference_adapter", "--listen", listen, "--triton-url", triton_url, *extra]
    async with server_process(argv, logfile, cwd=cwd) as (proc, _):
        await wait_serving(listen, proc, list(services))
        yield proc, listen


async def wait_serving(address: str, proc: asyncio.subprocess.Process, services: list[str]) -> None:
    """Poll grpc.health.v1 Check until every service is SERVING. Raises RuntimeError."""
    deadline = time.monotonic() + OPEN_TIMEOUT_S
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while services:
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the adapter did not serve {services} in time")
            with contextlib.suppress(grpc.aio.AioRpcError):
                request = health_pb2.HealthCheckRequest(service=services[0])
                reply = await health.Check(request, timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    services = services[1:]
                    continue
            await asyncio.sleep(0.2)


def _stat(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()  # fields 3 (state) onwards; comm may hold spaces


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Triton runs a stub process per model instance)."""
    kids: list[str] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += (task / "children").read_text().split()
    return [pid, *(p for kid in kids for p in process_tree(int(kid)))]


def cpu_snapshot(procs: dict[str, Pids], *, client: bool = False) -> dict[str, float]:
    """CPU seconds (utime + stime) per named process group (and this process as "client" with
    ``client``); "_busy" and "_steal": the machine's (/proc/stat: user+nice+system+irq+softirq,
    and steal); "_wall": monotonic."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) * _TICK_S
    out = {"_busy": busy, "_steal": ticks[7] * _TICK_S, "_wall": time.monotonic()}
    for name, pids in procs.items():
        out[name] = 0.0
        for pid in pids():
            with contextlib.suppress(OSError):
                fields = _stat(pid)
                out[name] += (int(fields[11]) + int(fields[12])) * _TICK_S
    if client:
        own = resource.getrusage(resource.RUSAGE_SELF)
        out["client"] = own.ru_utime + own.ru_stime
    return out


def usage(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """CPU µs per message per process group; in % of the machine: its busy and steal time,
    and "_other", busy time not spent by the processes measured (other load: noise)."""
    ours = {k: after[k] - before[k] for k in before if k[0] != "_"}
    out = {k: seconds * 1e6 / max(n, 1) for k, seconds in ours.items()}
    cores = (after["_wall"] - before["_wall"]) * (os.cpu_count() or 1) / 100
    out |= {k: (after[k] - before[k]) / cores for k in ("_busy", "_steal")}
    out["_other"] = out["_busy"] - sum(ours.values()) / cores
    return out


@dataclass
class Stats:
    """Percentiles of one latency sample (ms), with what was lost and the errors seen."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    lost: int
    errors: list[str]

    @classmethod
    def of(cls, ms: list[float], lost: int, errors: list[str]) -> Stats:
        if not ms:
            return cls(0, math.nan, math.nan, math.nan, math.nan, lost, errors)
        p50, p90, p99 = np.percentile(ms, [50, 90, 99]).tolist()
        return cls(len(ms), p50, p90, p99, max(ms), lost, errors)


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per process group between two snapshots; ``_busy``/``_steal`` as % of all
    cores over the wall time."""
    out = {k: after[k] - before[k] for k in before if not k.startswith("_")}
    cores = (after["_wall"] - before["_wall"]) * (os.cpu_count() or 1) / 100
    out["_busy"] = (after["_busy"] - before["_busy"]) / cores
    out["_steal"] = (after["_steal"] - before["_steal"]) / cores
    return out

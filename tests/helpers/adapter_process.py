"""Adapter processes for fault tests: ``python -m inference_adapter`` as a child on a free
loopback port, in front of the given Tritons.

Only the processes started here are signalled, by their PID; every wait has a deadline. Ready
means the adapter's health service says SERVING (some replica has a ready model).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.stack import free_port


@dataclass(eq=False)
class AdapterProcess:
    process: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL, by PID (a crash: nothing is drained or closed)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def stop(self) -> None:
        """SIGTERM (a drain of at most 1 s), then SIGKILL if it has not exited within 5 s."""
        if self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(5.0):
                await self.process.wait()
        except TimeoutError:
            self.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self.process.wait()


async def start_adapter(
    triton_urls: Sequence[str], log_path: Path, *, timeout_s: float = 30.0
) -> AdapterProcess:
    """Start one adapter process and wait until it serves. Raises RuntimeError (with its log)
    if it exits or does not serve within ``timeout_s``."""
    port = free_port()
    urls = [arg for url in triton_urls for arg in ("--triton-url", url)]
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "inference_adapter",
            "--listen",
            f"127.0.0.1:{port}",
            *urls,
            "--drain-grace-seconds",
            "1",
            "--log-level",
            "WARNING",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
    adapter = AdapterProcess(process, port, log_path)
    try:
        async with asyncio.timeout(timeout_s):
            await _wait_serving(adapter)
    except (TimeoutError, RuntimeError) as exc:
        adapter.kill()
        await process.wait()
        log_text = await asyncio.to_thread(adapter.log)
        raise RuntimeError(f"adapter process not ready ({exc!r}): {log_text}") from exc
    return adapter


async def _wait_serving(adapter: AdapterProcess) -> None:
    async with grpc.aio.insecure_channel(adapter.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if adapter.process.returncode is not None:
                raise RuntimeError(f"exited with {adapter.process.returncode}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass  # not listening yet
            await asyncio.sleep(0.1)

"""`make fuzz`: a real Triton, the adapter in its own process, and the wire fuzzer against both.

Starts Triton (every model of model_repository/) via localstack.triton.TritonServer, the adapter
(tools.fuzz_adapter) as a child process with its log in ``out/fuzz-adapter.log``, then runs
``python -m voxwire.fuzz`` with every leak reading wired up: the adapter's Prometheus gauges,
its PID (RSS), its log, Triton's gRPC port (sequence slot probe) and metrics port. Arguments
after ``--`` go to the fuzzer. Exits with the fuzzer's code; everything started is stopped.

``--through-gateway`` (before ``--``) puts a gateway process in front of the adapter and fuzzes
its gRPC front instead (with a key in ``authorization``): the front parses every stream into the
WebSocket's sessions, so it is the gateway that meets the hostile input first. The adapter's and
Triton's leak readings stay wired up (what the gateway passes on must leave nothing behind
there either); RSS is the gateway's.

``--edge`` (before ``--``) puts a gateway in front of the adapter and runs the edge fuzzer
(``python -m voxwire.fuzz.edge``) against its WebSocket and HTTP endpoints instead, with the
gateway's PID and log (``out/fuzz-edge-gateway.log``); the arguments after ``--`` are the edge
fuzzer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.stack import LOOPBACK, free_port, server_process
from localstack.triton import TritonServer, default_model_repository

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out"


def _read_if_there(path: Path) -> str:
    return path.read_text().strip() if path.is_file() else ""


async def _wait_file(path: Path, process: asyncio.subprocess.Process, within_s: float) -> str:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"the adapter exited with {process.returncode}")
        text = await asyncio.to_thread(_read_if_there, path)
        if text:
            return text
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the adapter did not start within {within_s:g} s")


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class FuzzAdapter:
    process: asyncio.subprocess.Process
    address: str
    metrics_port: int


@contextlib.asynccontextmanager
async def fuzz_adapter(
    triton_url: str, log: Path, workdir: Path, *extra: str
) -> AsyncIterator[FuzzAdapter]:
    """``tools.fuzz_adapter`` (``extra``: its further options) in its own process in front of
    ``triton_url``, once it listens; its log starts empty (the fuzzer counts the tracebacks in
    it), its port file lives in ``workdir``. SIGTERM, then SIGKILL, on exit."""
    port_file = workdir / "fuzz-adapter.port"
    await asyncio.to_thread(_remove, port_file, log)
    metrics_port = free_port()
    argv = [
        "tools.fuzz_adapter", "--triton-url", triton_url, "--port-file", str(port_file),
        "--metrics-port", str(metrics_port), *extra,
    ]  # fmt: skip
    async with server_process(argv, log, cwd=ROOT) as (process, _):
        port = await _wait_file(port_file, process, 60.0)
        yield FuzzAdapter(process, f"{LOOPBACK}:{port}", metrics_port)


@contextlib.asynccontextmanager
async def _gateway(adapter: str) -> AsyncIterator[tuple[int, str, int]]:
    """A gateway process in front of ``adapter`` with its gRPC front on a free port:
    (front port, API key, pid). Idle deadlines under the fuzzer's status timeout."""
    from benchmarks.gateway_stack import gateway_process, gateway_setup

    front = free_port()
    idle = {"idle_timeout_s": 10.0, "idle_warning_s": 2.0}
    setup = gateway_setup(
        OUT / "fuzz-gateway", [adapter], grpc_listen=f"127.0.0.1:{front}", stt=idle, tts=idle
    )
    async with gateway_process(setup, OUT / "fuzz-gateway.log") as (proc, _port):
        yield front, setup.key, proc.pid


@contextlib.asynccontextmanager
async def _edge_gateway(adapter: str) -> AsyncIterator[tuple[int, str, int, Path]]:
    """A gateway process in front of ``adapter``: (HTTP port, API key, pid, log file)."""
    from benchmarks.gateway_stack import gateway_process, gateway_setup

    idle = {"idle_timeout_s": 10.0, "idle_warning_s": 2.0}
    setup = gateway_setup(OUT / "fuzz-edge", [adapter], stt=idle, tts=idle)
    log = OUT / "fuzz-edge-gateway.log"
    async with gateway_process(setup, log) as (proc, port):
        yield port, setup.key, proc.pid, log


async def run(fuzz_args: list[str], through_gateway: bool = False, edge: bool = False) -> int:
    OUT.mkdir(exist_ok=True)
    triton = TritonServer(default_model_repository(), log_path=OUT / "fuzz-triton.log")
    await triton.start(timeout=180.0)
    try:
        async with contextlib.AsyncExitStack() as stack:
            adapter = await stack.enter_async_context(
                fuzz_adapter(triton.grpc_url, OUT / "fuzz-adapter.log", OUT)
            )
            readings = [
                "--adapter-metrics", f"{LOOPBACK}:{adapter.metrics_port}",
                "--adapter-log", str(OUT / "fuzz-adapter.log"),
                "--triton", triton.grpc_url,
                "--triton-metrics", f"{LOOPBACK}:{triton.ports.metrics}",
            ]  # fmt: skip
            target, pid, extra = adapter.address, adapter.process.pid, []
            if edge:
                http_port, key, pid, log = await stack.enter_async_context(_edge_gateway(target))
                fuzzer = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "voxwire.fuzz.edge",
                    "--target", f"http://{LOOPBACK}:{http_port}", "--key", key,
                    "--pid", str(pid), "--log", str(log), *fuzz_args,
                    cwd=ROOT,
                )  # fmt: skip
                return await fuzzer.wait()
            if through_gateway:
                front, key, pid = await stack.enter_async_context(_gateway(target))
                target, extra = f"{LOOPBACK}:{front}", ["--header", f"authorization: Bearer {key}"]
            fuzzer = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "voxwire.fuzz",
                "--target", target, "--pid", str(pid), *readings, *extra, *fuzz_args,
                cwd=ROOT,
            )  # fmt: skip
            return await fuzzer.wait()
    finally:
        await triton.stop()


def main() -> None:
    args = sys.argv[1:]
    through_gateway = args[:1] == ["--through-gateway"]
    edge = args[:1] == ["--edge"]
    if through_gateway or edge:
        args = args[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    os.chdir(ROOT)
    sys.exit(asyncio.run(run(args, through_gateway, edge)))


if __name__ == "__main__":
    main()

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
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from localstack.triton import TritonServer, default_model_repository

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@contextlib.asynccontextmanager
async def _gateway(adapter: str) -> AsyncIterator[tuple[int, str, int]]:
    """A gateway process in front of ``adapter`` with its gRPC front on a free port:
    (front port, API key, pid). Idle deadlines under the fuzzer's status timeout."""
    from benchmarks.gateway_stack import gateway_process, gateway_setup

    front = _free_port()
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
    adapter_log = OUT / "fuzz-adapter.log"
    port_file = OUT / "fuzz-adapter.port"
    port_file.unlink(missing_ok=True)
    metrics_port = _free_port()
    adapter = None
    try:
        with adapter_log.open("wb") as log:
            adapter = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tools.fuzz_adapter",
                "--triton-url", triton.grpc_url,
                "--port-file", str(port_file),
                "--metrics-port", str(metrics_port),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, cwd=ROOT,
            )  # fmt: skip
        port = await _wait_file(port_file, adapter, 60.0)
        readings = [
            "--adapter-metrics", f"127.0.0.1:{metrics_port}",
            "--adapter-log", str(adapter_log),
            "--triton", triton.grpc_url,
            "--triton-metrics", f"127.0.0.1:{triton.ports.metrics}",
        ]  # fmt: skip
        async with contextlib.AsyncExitStack() as stack:
            target, pid, extra = f"127.0.0.1:{port}", adapter.pid, []
            if edge:
                http_port, key, pid, log = await stack.enter_async_context(_edge_gateway(target))
                fuzzer = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "voxwire.fuzz.edge",
                    "--target", f"http://127.0.0.1:{http_port}", "--key", key,
                    "--pid", str(pid), "--log", str(log), *fuzz_args,
                    cwd=ROOT,
                )  # fmt: skip
                return await fuzzer.wait()
            if through_gateway:
                front, key, pid = await stack.enter_async_context(_gateway(target))
                target, extra = f"127.0.0.1:{front}", ["--header", f"authorization: Bearer {key}"]
            fuzzer = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "voxwire.fuzz",
                "--target", target, "--pid", str(pid), *readings, *extra, *fuzz_args,
                cwd=ROOT,
            )  # fmt: skip
            return await fuzzer.wait()
    finally:
        if adapter is not None and adapter.returncode is None:
            adapter.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(adapter.wait(), 15.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    adapter.kill()
                await adapter.wait()
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

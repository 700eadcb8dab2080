"""The most real-time STT streams the full path holds within its SLO (issue 9).

Starts Triton (bench_stt, bench_tts), the adapter and the gateway, each its own process on
loopback (the gateway with a key made for the run), and runs the load tester's SLO search
(``loadtest/scenarios/slo_stt_bench.toml``: 100 ms chunks of bench_stt at real time; p99 final
latency <= 300 ms, p99 per-message latency <= 100 ms, at most 0.1 % errors, bisection over
concurrency) through the gateway's WebSocket, and with ``--also-adapter`` the same search
against the adapter direct, so the two numbers sit side by side.

    python -m benchmarks.full_path_slo [--out out/bench/slo] [--also-adapter]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from pathlib import Path

from benchmarks.gateway_stack import gateway_process, gateway_setup
from benchmarks.stack import LOOPBACK, adapter_process
from loadtest import cli
from localstack.triton import TritonServer, default_model_repository

SCENARIO = Path(__file__).resolve().parents[1] / "loadtest" / "scenarios" / "slo_stt_bench.toml"


def _search(target: str, address: str, out: Path, key: str) -> int:
    argv = ["slo", str(SCENARIO), "--target", target, "--address", address, "--quiet"]
    argv += ["--out", str(out / target)]
    if key:
        argv += ["--api-key", key]
    return cli.cmd_slo(cli.parser().parse_args(argv))


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="voxwire-slo-"))
    triton = TritonServer(default_model_repository(), models=["bench_stt", "bench_tts"])
    await triton.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            adapter, listen = await stack.enter_async_context(
                adapter_process(triton.grpc_url, workdir / "adapter.log")
            )
            setup = gateway_setup(workdir / "gateway", [listen])
            _, port = await stack.enter_async_context(
                gateway_process(setup, workdir / "gateway.log")
            )
            searches = [("gateway", f"{LOOPBACK}:{port}", setup.key)]
            if args.also_adapter:
                searches.append(("grpc", listen, ""))
            for target, address, key in searches:
                await asyncio.to_thread(_search, target, address, args.out, key)
    finally:
        await triton.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/bench/slo"))
    p.add_argument("--also-adapter", action="store_true", help="search the adapter direct too")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))

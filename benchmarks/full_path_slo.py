"""The most real-time streams the full path holds within its SLO (issue 9): STT on the benchmark
model by default, or the real models with ``--scenario``.

Starts Triton (bench_stt, bench_tts), the adapter and the gateway, each its own process on
loopback (the gateway with a key made for the run), and runs the load tester's SLO search
(``loadtest/scenarios/slo_stt_bench.toml``: 100 ms chunks of bench_stt at real time; p99 final
latency <= 300 ms, p99 per-message latency <= 100 ms, at most 0.1 % errors, bisection over
concurrency) through the gateway's WebSocket, and with ``--also-adapter`` the same search
against the adapter direct, so the two numbers sit side by side.

    python -m benchmarks.full_path_slo [--out out/bench/slo] [--also-adapter]

``--scenario`` runs another search, its Triton models the ones it names:
``loadtest/scenarios/slo_stt_real.toml`` (pocketsphinx on the speech fixtures, with WER) and
``slo_tts_real.toml`` (eSpeak NG: p99 time to first audio, playback underruns) measure the
real models through the same path (BENCHMARKS.md, "The real models"). ``--adapter-config
FILE`` starts the adapter with those AdapterConfig keys (its admission, for one), and
``--gateway-config FILE`` the gateway with those GatewayConfig keys and tables (``[tts]
read_ahead_bytes``, for one).

``--cpus 0`` runs the stack (Triton, the adapter, the gateway) on the listed CPUs only: every
process started inherits the affinity (sched_setaffinity(2)); the load generator's workers run
there too unless ``--generator-cpus`` gives them CPUs of their own (``--cpus 0
--generator-cpus 1``: the whole path on one core, measured by a generator that does not take
its CPU; BENCHMARKS.md, "Scaling with cores"). ``--low/--high/--tolerance/--repeats/--trial``
narrow the scenario's search.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from benchmarks.gateway_stack import gateway_process, gateway_setup
from benchmarks.stack import LOOPBACK, adapter_process
from loadtest import cli
from loadtest.scenario import Scenario, load
from localstack.triton import TritonServer, default_model_repository

SCENARIO = Path(__file__).resolve().parents[1] / "loadtest" / "scenarios" / "slo_stt_bench.toml"
# Loaded beside the scenario's model: the gateway's capabilities list both kinds.
BENCH_MODELS = ("bench_stt", "bench_tts")


def triton_models(scenario: Scenario) -> list[str]:
    """The models a search needs: those its scenario names, and the benchmark pair."""
    named = [m for m in (scenario.stt.model, scenario.tts.model) if m]
    return sorted(set(named) | set(BENCH_MODELS))


_SEARCH_FLAGS = {
    "low": "--search-low",
    "high": "--search-high",
    "tolerance": "--search-tolerance",
    "repeats": "--search-repeats",
    "trial": "--trial",
}


def gateway_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The gateway's configuration keys and tables from ``--gateway-config`` (none: {})."""
    return tomllib.loads(args.gateway_config.read_text()) if args.gateway_config else {}


def _search(target: str, address: str, out: Path, key: str, args: argparse.Namespace) -> int:
    argv = ["slo", str(args.scenario), "--target", target, "--address", address, "--quiet"]
    argv += ["--out", str(out / target)]
    if key:
        argv += ["--api-key", key]
    for name, flag in _SEARCH_FLAGS.items():
        if getattr(args, name) is not None:
            argv += [flag, str(getattr(args, name))]
    return cli.cmd_slo(cli.parser().parse_args(argv))


def _pin_process(cpus: set[int]) -> None:
    """Pin every thread of this process (sched_setaffinity(2) sets one thread's, and the
    search runs in an executor thread that may exist already)."""
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), cpus)


async def main(args: argparse.Namespace) -> None:
    if args.cpus is not None:
        _pin_process(args.cpus)  # before any process starts: they all inherit it
    cpus = sorted(os.sched_getaffinity(0))
    generator = sorted(args.generator_cpus) if args.generator_cpus is not None else cpus
    print(f"full path SLO search: the stack on CPUs {cpus}, the generator on {generator}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpus.json").write_text(json.dumps({"stack": cpus, "generator": generator}))
    workdir = Path(tempfile.mkdtemp(prefix="voxwire-slo-"))
    adapter_args = ["--config", str(args.adapter_config)] if args.adapter_config else []
    models = triton_models(load(args.scenario))
    print(f"scenario {args.scenario.name}, Triton models {models}")
    triton = TritonServer(default_model_repository(), models=models)
    await triton.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            adapter, listen = await stack.enter_async_context(
                adapter_process(triton.grpc_url, workdir / "adapter.log", *adapter_args)
            )
            setup = gateway_setup(workdir / "gateway", [listen], **gateway_overrides(args))
            _, port = await stack.enter_async_context(
                gateway_process(setup, workdir / "gateway.log")
            )
            searches = [("gateway", f"{LOOPBACK}:{port}", setup.key)]
            if args.also_adapter:
                searches.append(("grpc", listen, ""))
            if args.generator_cpus is not None:
                # The servers are up (and keep the CPUs they started with); the generator's
                # worker processes, spawned by the search, inherit this one.
                _pin_process(args.generator_cpus)
            for target, address, key in searches:
                await asyncio.to_thread(_search, target, address, args.out, key, args)
    finally:
        await triton.stop()


def _cpu_list(text: str) -> set[int]:
    return {int(c) for c in text.split(",")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/bench/slo"))
    p.add_argument(
        "--scenario",
        type=Path,
        default=SCENARIO,
        help="the SLO scenario to search (default: slo_stt_bench.toml)",
    )
    p.add_argument(
        "--adapter-config",
        type=Path,
        default=None,
        help="a TOML file of AdapterConfig keys for the adapter (e.g. tts_oversubscription)",
    )
    p.add_argument(
        "--gateway-config",
        type=Path,
        default=None,
        help="a TOML file of GatewayConfig keys and tables for the gateway (e.g. [tts])",
    )
    p.add_argument("--also-adapter", action="store_true", help="search the adapter direct too")
    p.add_argument(
        "--cpus",
        type=_cpu_list,
        default=None,
        help="run everything on these CPUs only, e.g. 0 or 0,1 (default: all)",
    )
    p.add_argument(
        "--generator-cpus",
        type=_cpu_list,
        default=None,
        help="run the load generator on these CPUs (default: the stack's)",
    )
    p.add_argument("--low", type=float, default=None, help="the search's lowest level")
    p.add_argument("--high", type=float, default=None, help="the search's highest level")
    p.add_argument("--tolerance", type=float, default=None, help="the search's resolution")
    p.add_argument("--repeats", type=int, default=None, help="runs pooled per level")
    p.add_argument("--trial", type=float, default=None, help="seconds per run of a level")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))

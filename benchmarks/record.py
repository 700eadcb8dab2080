"""The performance record: the load tester's overhead scenarios over every path, side by side.

Paths, each its own server process(es) on 127.0.0.1 and one client process (a ``loadtest``
worker) per run:
- echo (floor): a raw grpc.aio bidi echo, the least one Python gRPC hop costs;
- Triton direct: KServe v2 ModelStreamInfer on raw stubs over grpc.aio (the ``triton`` target,
  the way the adapter's own Triton client works);
- tritonclient: the same requests through tritonclient's thread-per-stream client;
- null proxy (floor): Triton direct through benchmarks/null_proxy.py, the least any Python
  adapter in front of Triton adds;
- adapter: voxwire.v1 through ``python -m inference_adapter`` to the same Triton;
- gateway null relay (floor): WebSocket in, the same bytes to the adapter over gRPC and back,
  no parsing (benchmarks/null_relay.py; STT only), the least a gateway in front of the adapter
  adds;
- gateway: ``python -m gateway`` in front of the same adapter (the ``gateway`` target: JSON
  results, the session, auth, acks; TTS with ``lead_ms=0``, as fast as the model, like the
  adapter direct).

Scenarios: STT at 1 and 100 streams (100 ms chunks of 16 kHz PCM16 paced at real time,
``bench_stt``; latency per message) and TTS at 1 and 20 concurrent (``bench_tts``; time to first
audio). Runs are interleaved: every repeat runs every path once per level, in an order rotated
each repeat (A B C, then B C A, ...), so drift of the machine spreads over all paths. Each row
reports percentiles of all repeats' samples pooled (and how many samples), and the spread
(min to max) of each repeat's own p50, p99 and CPU per message.

    python -m benchmarks.record [--seconds 20] [--repeats 3] [--json PATH] [--write-md FILE]
        [--paths echo,triton,tritonclient,proxy,adapter,relay,gateway]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from benchmarks.gateway_stack import gateway_process, gateway_setup
from benchmarks.record_md import write_section
from benchmarks.stack import (
    LOOPBACK,
    Pids,
    cpu_delta,
    cpu_snapshot,
    free_port,
    process_tree,
    server_process,
    wait_serving,
)
from loadtest import runner
from loadtest.hdrlog import new_histogram
from loadtest.results import stats
from loadtest.scenario import ArrivalSpec, LengthSpec, Limits, Scenario, TargetSpec
from localstack.triton import TritonServer, default_model_repository

STT_MODEL, TTS_MODEL = "bench_stt", "bench_tts"
RELAY, GATEWAY = "gateway null relay (floor)", "gateway"
PATH_IDS = ("echo", "triton", "tritonclient", "proxy", "adapter", "relay", "gateway")
METRIC = {"stt": "stt.message", "tts": "tts.first_audio"}
MESSAGES = {"stt": "stt.chunks", "tts": "tts.requests"}


@dataclass(frozen=True, slots=True)
class PathSpec:
    label: str
    target: str  # loadtest target kind
    address: str
    models_from: str
    servers: dict[str, Pids]  # process groups whose CPU the path costs
    api_key: str = ""
    lead_ms: int = -1
    id: str = ""  # the name --paths selects it by


def scenario(path: PathSpec, kind: str, level: int, seconds: float) -> Scenario:
    """``level`` streams: STT sessions last the run (``seconds``) and none starts after the
    first half, so each stream is one session; TTS sessions (one request each) follow one
    another in each of ``level`` slots for the whole run."""
    base = Scenario()
    arrivals_s = seconds / 2 if kind == "stt" else seconds
    return Scenario(
        name=f"record-{kind}-{level}-{path.label}",
        kind=kind,
        target=TargetSpec(
            path.target, path.address, path.models_from, api_key=path.api_key, lead_ms=path.lead_ms
        ),
        limits=Limits(
            duration_s=arrivals_s,
            max_duration_s=seconds * 3 + 30,
            warmup_s=1.0,
            workers=1,
            step_timeout_s=30.0,
            max_streams=level + 10,
        ),
        arrivals=ArrivalSpec(process="concurrency", sessions=level, stagger_s=0.1),
        stt=dataclasses.replace(
            base.stt,
            model=STT_MODEL,
            chunk_ms=100,
            wer=False,
            length=LengthSpec(distribution="fixed", seconds=seconds),
        ),
        tts=dataclasses.replace(
            base.tts,
            model=TTS_MODEL,
            turns=1,
            texts=("The quick brown fox jumps over the lazy dog.",),
        ),
    )


async def measure(path: PathSpec, kind: str, level: int, seconds: float, folder: Path):
    """One run of one path at one level: its histogram, CPU per message, errors."""
    s = scenario(path, kind, level, seconds)
    before = cpu_snapshot(path.servers)
    merged = await asyncio.to_thread(runner.run, s, folder, live=False)
    used = cpu_delta(before, cpu_snapshot(path.servers))
    messages = max(1, merged.counters.get(MESSAGES[kind], 0))
    h = merged.totals.get(METRIC[kind], new_histogram())
    return h, {
        **stats(h),
        "messages": messages,
        "client_cpu_us": merged.cpu_s * 1e6 / messages,
        "server_cpu_us": {k: v * 1e6 / messages for k, v in used.items() if k[0] != "_"},
        "busy_pct": used["_busy"],
        "steal_pct": used["_steal"],
        "errors": dict(merged.errors),
        "lag_p99_ms": stats(merged.totals["generator.lag"])["p99"]
        if "generator.lag" in merged.totals
        else None,
    }


def _spread(values: list[float]) -> list[float]:
    return [min(values), max(values)] if values else []


async def record(
    paths: dict[str, list[PathSpec]],
    levels: dict[str, list[int]],
    args: argparse.Namespace,
    workdir: Path,
) -> list[dict[str, Any]]:
    rows: dict[tuple[str, int, str], dict[str, Any]] = {}
    pooled: dict[tuple[str, int, str], Any] = {}
    for repeat in range(args.repeats):
        for kind, kind_levels in levels.items():
            for level in kind_levels:
                order = (
                    paths[kind][repeat % len(paths[kind]) :]
                    + paths[kind][: repeat % len(paths[kind])]
                )
                for path in order:
                    label = f"{kind} {level} {path.label} (repeat {repeat + 1})"
                    print(label, file=sys.stderr, flush=True)
                    folder = workdir / f"{kind}-{level}-{path.target}-{repeat}"
                    h, run = await measure(path, kind, level, args.seconds, folder)
                    key = (kind, level, path.label)
                    rows.setdefault(
                        key, {"kind": kind, "level": level, "path": path.label, "repeats": []}
                    )["repeats"].append(run)
                    pooled.setdefault(key, new_histogram()).add(h)
    out = []
    for key, row in rows.items():
        reps = row["repeats"]
        row["pooled"] = stats(pooled[key])
        row["spread"] = {
            "p50": _spread([r["p50"] for r in reps]),
            "p99": _spread([r["p99"] for r in reps]),
            "client_cpu_us": _spread([r["client_cpu_us"] for r in reps]),
        }
        servers = sorted({k for r in reps for k in r["server_cpu_us"]})
        row["server_cpu_us"] = {k: _spread([r["server_cpu_us"][k] for r in reps]) for k in servers}
        out.append(row)
    return out


def _header(args: argparse.Namespace) -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "grpcio": grpc.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "nproc": os.cpu_count(),
        "seconds": args.seconds,
        "repeats": args.repeats,
        "load_average_before": os.getloadavg(),
        "command": "python -m benchmarks.record " + " ".join(sys.argv[1:]),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    header = _header(args)
    workdir = Path(tempfile.mkdtemp(prefix="voxwire-record-"))
    print(f"logs and worker output under {workdir}; starting Triton", file=sys.stderr)
    triton = TritonServer(default_model_repository(), models=[STT_MODEL, TTS_MODEL])
    await triton.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            paths = await _servers(stack, triton, workdir)
            chosen = {
                kind: [p for p in kind_paths if p.id in args.paths]
                for kind, kind_paths in paths.items()
            }
            levels = {"stt": args.streams, "tts": args.tts_streams}
            levels = {k: v for k, v in levels.items() if v and chosen[k]}
            rows = await record(chosen, levels, args, workdir)
    finally:
        await triton.stop()
    header["load_average_after"] = os.getloadavg()
    return {"header": header, "rows": rows}


async def _servers(
    stack: contextlib.AsyncExitStack, triton: TritonServer, workdir: Path
) -> dict[str, list[PathSpec]]:
    """Start every server process of the record; return the paths by kind (stt, tts)."""
    listen = f"{LOOPBACK}:{free_port()}"
    adapter = [
        "inference_adapter",
        "--listen",
        listen,
        "--triton-url",
        triton.grpc_url,
        "--drain-grace-seconds",
        "2",
    ]
    echo_proc, echo_port = await stack.enter_async_context(
        server_process(["benchmarks.echo_server"], workdir / "echo.log", True)
    )
    proxy_proc, proxy_port = await stack.enter_async_context(
        server_process(["benchmarks.null_proxy", triton.grpc_url], workdir / "proxy.log", True)
    )
    adapter_proc, _ = await stack.enter_async_context(
        server_process(adapter, workdir / "adapter.log")
    )
    await wait_serving(listen, adapter_proc, ["voxwire.v1.Transcription", "voxwire.v1.Synthesis"])
    relay_proc, relay_port = await stack.enter_async_context(
        server_process(["benchmarks.null_relay", listen], workdir / "relay.log", True)
    )
    setup = gateway_setup(workdir / "gateway", [listen], drain_grace_seconds=2.0)
    gateway_proc, gateway_port = await stack.enter_async_context(
        gateway_process(setup, workdir / "gateway.log")
    )
    tri: Pids = lambda: process_tree(triton.pid or 0)  # noqa: E731
    one: Callable[[Any], Pids] = lambda proc: lambda: [proc.pid]  # noqa: E731
    t = triton.grpc_url
    echo_address = f"{LOOPBACK}:{echo_port}"
    echo = PathSpec(
        "echo (floor)", "echo", echo_address, "", {"echo server": one(echo_proc)}, id="echo"
    )
    direct = PathSpec("Triton direct", "triton", t, "", {"triton": tri}, id="triton")
    tclient = PathSpec("tritonclient", "tritonclient", t, "", {"triton": tri}, id="tritonclient")
    proxy = PathSpec(
        "null proxy (floor)",
        "triton",
        f"{LOOPBACK}:{proxy_port}",
        t,
        {"null proxy": one(proxy_proc), "triton": tri},
        id="proxy",
    )
    adapt = PathSpec(
        "adapter",
        "grpc",
        listen,
        "",
        {"adapter": one(adapter_proc), "triton": tri},
        id="adapter",
    )
    relay = PathSpec(
        RELAY,
        "null-relay",
        f"{LOOPBACK}:{relay_port}",
        "",
        {"null relay": one(relay_proc), "adapter": one(adapter_proc), "triton": tri},
        id="relay",
    )
    gateway = PathSpec(
        GATEWAY,
        "gateway",
        f"{LOOPBACK}:{gateway_port}",
        "",
        {"gateway": one(gateway_proc), "adapter": one(adapter_proc), "triton": tri},
        api_key=setup.key,
        lead_ms=0,
        id="gateway",
    )
    return {
        "stt": [echo, direct, tclient, proxy, adapt, relay, gateway],
        "tts": [direct, proxy, adapt, gateway],
    }


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _names(text: str) -> list[str]:
    names = [part for part in text.split(",") if part]
    unknown = set(names) - set(PATH_IDS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown paths {sorted(unknown)}; known: {PATH_IDS}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.record",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="paced seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--streams", type=_ints, default=[1, 100], help="STT streams, e.g. 1,100")
    parser.add_argument("--tts-streams", type=_ints, default=[1, 20], help="TTS concurrency")
    parser.add_argument(
        "--paths",
        type=_names,
        default=list(PATH_IDS),
        help=f"paths to run, of {','.join(PATH_IDS)} (default: all)",
    )
    parser.add_argument("--json", type=Path, default=Path("out/bench/record.json"))
    parser.add_argument("--write-md", type=Path, help="regenerate this file's record section")
    parser.add_argument(
        "--section", default="record", help="the section's marker name (a run of some paths)"
    )
    return parser.parse_args(argv)


def cli() -> None:
    args = parse_args()
    result = asyncio.run(main(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}", file=sys.stderr)
    if args.write_md:
        write_section(result, args.write_md, args.section)
        print(f"regenerated the {args.section} section of {args.write_md}", file=sys.stderr)


if __name__ == "__main__":
    cli()

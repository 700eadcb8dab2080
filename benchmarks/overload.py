"""Overload: the adapter's latency against offered load, from half to twice its capacity.

The adapter (``python -m inference_adapter``, its own process) runs in front of Triton's
``bench_stt`` with a known capacity: ``--max-streams-per-replica C`` (checked against what
``GetCapabilities`` publishes for the model). The load tester (``loadtest``, one worker process)
offers STT streams with open-model arrivals: each stream is ``--session-s`` seconds of 100 ms
chunks paced at real time, and arrivals come at ``k x C / session_s`` per second, so the
offered concurrency is k x C (Little's law) for k in ``--levels`` (0.5, 1, 2, 3). A refused
arrival is not retried: the offered load stays what the level says.

Per level it reports what docs/contract.md promises under overload ("Limits and timeouts";
issue 8): the admitted streams' per-message latency (``stt.message``, pooled percentiles and
counts) and set-up latency, how many arrivals were refused with ``OVERLOADED``, how fast the
refusal came (``session.rejected``: from the intended start to the end of the call), whether
each refusal carried ``RetryInfo``, other errors, and the adapter's resident memory (VmRSS of
its process, sampled every 0.5 s; the level's maximum). Levels are interleaved: each repeat runs
every level once, in an order rotated per repeat, so drift of a shared machine spreads over all
levels; the spread (min-max) of each repeat's own p50/p99/RSS is reported beside the pooled
figures. The first ``session_s`` of each run (the ramp to steady state) is not counted.

Each level gets a verdict against the objectives: the admitted streams' p99 ``stt.message`` at
most ``--slo-message-p99-ms`` (100 ms, the per-message objective of
``loadtest/scenarios/slo_stt_bench.toml``) and the refusals' p99 ``session.rejected`` at most
``--slo-refusal-p99-ms`` (100 ms: refused at once, not queued), every refusal with RetryInfo and
no error other than ``OVERLOADED``.

    python -m benchmarks.overload [--capacity 20] [--session-s 10] [--measure-s 30]
        [--repeats 3] [--levels 0.5,1,2,3] [--json out/bench/overload.json]
        [--write-md BENCHMARKS.md]
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
from pathlib import Path
from typing import Any

import grpc

from benchmarks.overload_md import write_section
from benchmarks.stack import adapter_process
from loadtest import runner
from loadtest.hdrlog import new_histogram
from loadtest.merge import Merged
from loadtest.results import stats
from loadtest.scenario import ArrivalSpec, LengthSpec, Limits, Scenario, TargetSpec
from localstack.triton import TritonServer, default_model_repository
from voxwire.v1 import capabilities_pb2, capabilities_pb2_grpc

MODEL = "bench_stt"
OVERLOADED = "RESOURCE_EXHAUSTED/OVERLOADED"
RSS_EVERY_S = 0.5
HISTOGRAMS = ("stt.message", "session.setup", "session.rejected")


def scenario(address: str, capacity: int, level: float, args: argparse.Namespace) -> Scenario:
    """Open arrivals offering ``level x capacity`` concurrent streams of ``session_s`` each."""
    base = Scenario()
    offered = level * capacity
    return Scenario(
        name=f"overload-{level:g}x",
        kind="stt",
        target=TargetSpec("grpc", address),
        limits=Limits(
            duration_s=args.session_s + args.measure_s,
            max_duration_s=2 * args.session_s + args.measure_s + 30,
            # The tool's own ceiling must never be what refuses: far above the offered load.
            max_streams=int(2 * offered) + 20,
            warmup_s=args.session_s,
            workers=1,
            step_timeout_s=30.0,
            seed=args.seed,
        ),
        arrivals=ArrivalSpec(process=args.process, rate=offered / args.session_s),
        stt=dataclasses.replace(
            base.stt,
            model=MODEL,
            chunk_ms=100,
            wer=False,
            length=LengthSpec(distribution="fixed", seconds=args.session_s),
        ),
    )


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` in MiB (/proc/<pid>/status). Raises OSError when it is gone."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no VmRSS for {pid}")


async def _sample_rss(pid: int, samples: list[float]) -> None:
    while True:
        with contextlib.suppress(OSError):
            samples.append(rss_mib(pid))
        await asyncio.sleep(RSS_EVERY_S)


async def run_level(
    address: str, adapter_pid: int, capacity: int, level: float, args, folder: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One run at one level (a worker process): its summary row and its histograms."""
    s = scenario(address, capacity, level, args)
    samples: list[float] = []
    sampler = asyncio.create_task(_sample_rss(adapter_pid, samples))
    try:
        merged = await asyncio.to_thread(runner.run, s, folder, live=False)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    return summarize(merged, level, capacity, samples)


def summarize(
    merged: Merged, level: float, capacity: int, rss_samples: list[float]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run's row (counts, errors other than OVERLOADED, RSS, stats) and its histograms.

    Session counts (arrivals, OK, refused, RetryInfo) cover the whole run, ramp included;
    latencies only what was intended after the ramp (the scenario's warm-up).
    """
    c, errors = merged.counters, dict(merged.errors)
    hists = {m: merged.totals.get(m, new_histogram()) for m in HISTOGRAMS}
    refused = errors.pop(OVERLOADED, 0)
    row = {
        "level": level,
        "offered_streams": level * capacity,
        "sessions": c.get("sessions.started", 0),
        "ok": c.get("sessions.ok", 0),
        "refused": refused,
        "retry_info": c.get("sessions.retry_info", 0),
        "other_errors": errors,
        "rss_mib_max": max(rss_samples, default=0.0),
        "rss_mib_min": min(rss_samples, default=0.0),
        **{m: stats(h) for m, h in hists.items()},
    }
    return row, hists


def _spread(values: list[float]) -> list[float]:
    return [min(values), max(values)] if values else []


def pool(runs: list[dict[str, Any]], hists: list[dict[str, Any]]) -> dict[str, Any]:
    """The repeats of one level: pooled histograms, summed counts, per-repeat spreads."""
    pooled = {m: new_histogram() for m in HISTOGRAMS}
    for h in hists:
        for metric, histogram in h.items():
            pooled[metric].add(histogram)
    other: dict[str, int] = {}
    for run in runs:
        for key, n in run["other_errors"].items():
            other[key] = other.get(key, 0) + n
    return {
        "level": runs[0]["level"],
        "offered_streams": runs[0]["offered_streams"],
        "repeats": runs,
        **{k: sum(r[k] for r in runs) for k in ("sessions", "ok", "refused", "retry_info")},
        "other_errors": other,
        "pooled": {m: stats(h) for m, h in pooled.items()},
        "spread": {
            "message_p50": _spread([r["stt.message"]["p50"] for r in runs]),
            "message_p99": _spread([r["stt.message"]["p99"] for r in runs]),
            "rejected_p99": _spread(
                [r["session.rejected"]["p99"] for r in runs if r["session.rejected"]["count"]]
            ),
            "rss_mib_max": _spread([r["rss_mib_max"] for r in runs]),
        },
    }


async def published_capacity(address: str) -> int:
    """``bench_stt``'s ``capacity.max_streams_per_replica`` from GetCapabilities."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = capabilities_pb2_grpc.CapabilitiesStub(channel)
        reply = await stub.GetCapabilities(capabilities_pb2.GetCapabilitiesRequest(), timeout=10)
    for model in reply.models:
        if model.name == MODEL:
            return int(model.capacity.max_streams_per_replica)
    raise RuntimeError(f"{MODEL} is not in GetCapabilities")


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Triton, the adapter with ``--capacity``, every level ``--repeats`` times, interleaved."""
    triton = TritonServer(default_model_repository(), models=[MODEL])
    await triton.start()
    options = ["--max-streams-per-replica", str(args.capacity), "--drain-grace-seconds", "2"]
    runs: dict[float, list[dict[str, Any]]] = {level: [] for level in args.levels}
    hists: dict[float, list[dict[str, Any]]] = {level: [] for level in args.levels}
    try:
        async with adapter_process(triton.grpc_url, workdir / "adapter.log", *options) as (
            proc,
            listen,
        ):
            capacity = await published_capacity(listen)
            if capacity != args.capacity:
                raise RuntimeError(f"GetCapabilities says {capacity}, not {args.capacity}")
            idle_rss = rss_mib(proc.pid)
            for repeat in range(args.repeats):
                shift = repeat % len(args.levels)
                for level in args.levels[shift:] + args.levels[:shift]:
                    print(f"{level:g}x capacity (repeat {repeat + 1})", file=sys.stderr, flush=True)
                    folder = workdir / f"{level:g}x-{repeat}"
                    row, h = await run_level(listen, proc.pid, capacity, level, args, folder)
                    runs[level].append(row)
                    hists[level].append(h)
    finally:
        await triton.stop()
    return {
        "capacity": capacity,
        "idle_rss_mib": idle_rss,
        "levels": [pool(runs[level], hists[level]) for level in args.levels],
    }


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
        "capacity": args.capacity,
        "session_s": args.session_s,
        "measure_s": args.measure_s,
        "repeats": args.repeats,
        "process": args.process,
        "slo_message_p99_ms": args.slo_message_p99_ms,
        "slo_refusal_p99_ms": args.slo_refusal_p99_ms,
        "load_average_before": os.getloadavg(),
        "command": "python -m benchmarks.overload " + " ".join(sys.argv[1:]),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    header = _header(args)
    workdir = Path(tempfile.mkdtemp(prefix="voxwire-overload-"))
    print(f"logs and worker output under {workdir}", file=sys.stderr)
    result = await measure(args, workdir)
    header["load_average_after"] = os.getloadavg()
    return {"header": header, **result}


def _levels(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.overload",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--capacity", type=int, default=20, help="--max-streams-per-replica")
    parser.add_argument("--levels", type=_levels, default=[0.5, 1.0, 2.0, 3.0])
    parser.add_argument("--session-s", type=float, default=10.0, help="seconds per stream")
    parser.add_argument("--measure-s", type=float, default=30.0, help="counted arrivals (s)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--process", choices=["constant", "poisson"], default="constant")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slo-message-p99-ms", type=float, default=100.0)
    parser.add_argument("--slo-refusal-p99-ms", type=float, default=100.0)
    parser.add_argument("--json", type=Path, default=Path("out/bench/overload.json"))
    parser.add_argument("--write-md", type=Path, help="regenerate this file's overload section")
    return parser.parse_args(argv)


def cli() -> None:
    args = parse_args()
    result = asyncio.run(main(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    if args.write_md:
        write_section(result, args.write_md)
        print(f"updated {args.write_md}", file=sys.stderr)


if __name__ == "__main__":
    cli()

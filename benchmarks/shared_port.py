"""One gateway process against two sharing a port (``reuse_port``): how the edge's load divides.

Starts Triton (``bench_stt``) and the adapter, one gateway on a port of its own and two gateway
processes sharing another (``reuse_port = true``), each its own process, and drives
``--streams`` paced STT streams (100 ms chunks) through the single gateway and through the
shared port in turn, for ``--rounds`` interleaved rounds (rotated each round). Per round: the
gateways' CPU per message (utime + stime over the run, summed over the path's processes,
divided by the chunks sent), how that CPU split between the two sharing processes, the
adapter's CPU per message, per-message latency p50 / p99 and the machine's busy share.

    python -m benchmarks.shared_port [--streams 30,60] [--seconds 15] [--rounds 3]

On this 2-core machine the client, the adapter and Triton share the cores with the gateways, so
the run shows how the work divides and what a second process costs, not a second core's gain;
BENCHMARKS.md, "Several gateway processes on one port".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.gateway_profile import measure_path
from benchmarks.gateway_stack import gateway_process, gateway_setup
from benchmarks.record import TTS_MODEL, PathSpec
from benchmarks.stack import LOOPBACK, adapter_process, free_port
from localstack.triton import TritonServer, default_model_repository


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="voxwire-shared-port-"))
    rows: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as stack:
        triton = TritonServer(default_model_repository(), models=["bench_stt", TTS_MODEL])
        await triton.start()
        stack.push_async_callback(triton.stop)
        adapter, listen = await stack.enter_async_context(
            adapter_process(
                triton.grpc_url, work / "adapter.log", services=("voxwire.v1.Transcription",)
            )
        )
        single = gateway_setup(work / "gateway", [listen], name="single")
        proc, port = await stack.enter_async_context(gateway_process(single, work / "single.log"))
        paths = [
            (PathSpec("1 process", "gateway", f"{LOOPBACK}:{port}", "", {}, single.key), [proc.pid])
        ]
        shared_port = free_port()
        shared = gateway_setup(
            work / "gateway",
            [listen],
            name="shared",
            listen=f"127.0.0.1:{shared_port}",
            reuse_port=True,
        )
        pids = []
        for i in range(2):
            p, bound = await stack.enter_async_context(
                gateway_process(shared, work / f"shared-{i}.log")
            )
            assert bound == shared_port
            pids.append(p.pid)
        address = f"{LOOPBACK}:{shared_port}"
        paths.append(
            (PathSpec("2 processes, one port", "gateway", address, "", {}, shared.key), pids)
        )
        for streams in args.streams:
            for round_ in range(args.rounds):
                shift = round_ % len(paths)
                for path, path_pids in paths[shift:] + paths[:shift]:
                    folder = work / f"{path.label}-{streams}-{round_}".replace(" ", "_")
                    row = await measure_path(
                        path, path_pids, adapter.pid, "stt", streams, args.seconds, folder
                    )
                    row |= {"path": path.label, "streams": streams, "round": round_ + 1}
                    rows.append(row)
                    split = "/".join(f"{100 * x:.0f}" for x in row["split"])
                    print(
                        f"{streams} streams, round {round_ + 1}, {path.label}: gateway CPU "
                        f"{row['cpu_us']:.0f} µs per message (split {split} %), adapter "
                        f"{row['adapter_cpu_us']:.0f}, p50 {row['p50']:.2f} ms, p99 "
                        f"{row['p99']:.2f} ms ({row['samples']} samples), busy "
                        f"{row['busy']:.0f} %, errors {row['errors']:.0f}",
                        file=sys.stderr,
                        flush=True,
                    )
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "nproc": os.cpu_count(),
        "command": "python -m benchmarks.shared_port " + " ".join(sys.argv[1:]),
        "rows": rows,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shared_port", description=__doc__)
    parser.add_argument(
        "--streams", type=lambda t: [int(x) for x in t.split(",")], default=[30, 60]
    )
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("out/bench/shared_port.json"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    result = asyncio.run(main(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))

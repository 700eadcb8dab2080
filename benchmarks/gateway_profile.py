"""The gateway's hot path: its CPU per message against its null relay's, and a py-spy profile.

Starts Triton (``bench_stt``), the adapter, a gateway and the null relay (each its own process,
as in the record) and drives ``--streams`` paced STT streams (100 ms chunks) through the relay
and the gateway in turn for ``--rounds`` interleaved rounds, printing each one's CPU per
message (utime + stime from /proc over the run, divided by the chunks sent) and latency. With
``--profile`` py-spy (``pip install py-spy``; it needs ptrace rights on the process) records
the gateway and the relay during their last round: the collapsed stacks go to
``<out>/gateway.folded`` and ``<out>/relay.folded`` (for flame graph tools or speedscope),
and the functions with the most samples, self and inclusive, are printed. This is how each
hot-path fix in BENCHMARKS.md was measured.

    python -m benchmarks.gateway_profile [--streams 100] [--seconds 10] [--rounds 2]
        [--profile [--native]] [--out out/profile] [--versions REV,REV,current]

``--syscalls`` runs ``strace -c`` on each path's last round and prints its syscalls per
message (what each path asks of the kernel, whatever its CPU; the traced round's own CPU and
latency are slowed by ptrace and do not count).

``--versions`` starts one gateway per git revision (its ``gateway`` and ``voxwire`` packages,
extracted with ``git archive``) beside the null relay, and measures them interleaved: what each
commit of a series bought, on the same machine in the same minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.gateway_stack import gateway_process, gateway_setup
from benchmarks.record import MESSAGES, METRIC, TTS_MODEL, PathSpec, scenario
from benchmarks.stack import (
    LOOPBACK,
    adapter_process,
    cpu_delta,
    cpu_snapshot,
    free_port,
    server_process,
)
from loadtest import runner
from loadtest.results import stats
from localstack.triton import TritonServer, default_model_repository

# py-spy records these paths' last round: path label -> file name.
PROFILED = {"gateway": "gateway", "null relay": "relay", "lean gateway": "lean"}


def summarize(folded: Path, top: int = 25) -> str:
    """The frames with the most samples: self (the leaf) and inclusive (anywhere on the
    stack, counted once per stack)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples", "", "self:"]
    lines += [f"{100 * n / total:6.2f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"{100 * n / total:6.2f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


async def measure_path(
    path: PathSpec,
    pids: Sequence[int],
    adapter_pid: int,
    kind: str,
    streams: int,
    seconds: float,
    folder: Path,
) -> dict[str, Any]:
    """One run of ``path``: the CPU per message of its server processes ``pids`` together (and
    how it split between them), the adapter's, latency percentiles, errors."""
    s = scenario(path, kind, streams, seconds)
    procs: dict[str, Any] = {f"s{i}": (lambda p=pid: [p]) for i, pid in enumerate(pids)}
    procs["adapter"] = lambda: [adapter_pid]
    before = cpu_snapshot(procs)
    merged = await asyncio.to_thread(runner.run, s, folder, live=False)
    used = cpu_delta(before, cpu_snapshot(procs))
    messages = max(1, merged.counters.get(MESSAGES[kind], 0))
    servers = [used[f"s{i}"] for i in range(len(pids))]
    h = stats(merged.totals[METRIC[kind]])
    return {
        "cpu_us": sum(servers) * 1e6 / messages,
        "split": [cpu / max(sum(servers), 1e-9) for cpu in servers],
        "adapter_cpu_us": used["adapter"] * 1e6 / messages,
        "p50": h["p50"],
        "p99": h["p99"],
        "samples": h["count"],
        "busy": used["_busy"],
        "errors": float(sum(merged.errors.values())),
        "messages": float(messages),
    }


async def _spy(pid: int, seconds: float, folded: Path, native: bool) -> Any:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return await asyncio.create_subprocess_exec(
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--rate",
        "200",
        *(["--native"] if native else ["--nonblocking"]),
        "--duration",
        str(int(seconds + 2)),
        "--output",
        str(folded),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def checkout(rev: str, into: Path) -> Path:
    """The gateway and voxwire packages of commit ``rev`` under ``into`` (git archive), for a
    gateway process of that version. Raises subprocess.CalledProcessError."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", rev, "gateway", "voxwire"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


async def _start(
    stack: contextlib.AsyncExitStack,
    work: Path,
    versions: list[str],
    kind: str,
    front: bool,
    lean: bool = False,
    lead_ms: int = 0,
) -> tuple[list[tuple[PathSpec, Any]], int]:
    """The adapter, the null relay (and with ``lean`` benchmarks/lean_gateway.py) and one
    gateway per version; the paths to measure (each gateway through its gRPC front with
    ``front``)."""
    triton = TritonServer(default_model_repository(), models=["bench_stt", TTS_MODEL])
    await triton.start()
    stack.push_async_callback(triton.stop)
    adapter, listen = await stack.enter_async_context(
        adapter_process(
            triton.grpc_url,
            work / "adapter.log",
            services=("voxwire.v1.Transcription", "voxwire.v1.Synthesis"),
        )
    )
    relay, line = await stack.enter_async_context(
        server_process(["benchmarks.null_relay", listen], work / "relay.log", True)
    )
    # The null relay carries STT only: TTS runs compare the gateway with the adapter's own CPU.
    paths = [(PathSpec("null relay", "null-relay", f"{LOOPBACK}:{line}", "", {}), relay)]
    if kind == "tts":
        paths = []
    if lean and kind == "stt":
        proc, line = await stack.enter_async_context(
            server_process(["benchmarks.lean_gateway", listen], work / "lean.log", True)
        )
        paths.append((PathSpec("lean gateway", "gateway", f"{LOOPBACK}:{line}", "", {}, "-"), proc))
    for version in versions:
        source = checkout(version, work / f"src-{version}") if version != "current" else None
        # Revisions before the gRPC front refuse its key; later ones turn it off with "".
        config = (source or Path.cwd()) / "gateway" / "config.py"
        has_front = "grpc_listen" in config.read_text()
        grpc_port = free_port() if front else 0
        setup = gateway_setup(
            work / "gateway",
            [listen],
            name=f"gateway-{version}",
            grpc_listen=(f"{LOOPBACK}:{grpc_port}" if front else "") if has_front else None,
        )
        proc, port = await stack.enter_async_context(
            gateway_process(setup, work / f"gateway-{version}.log", source=source)
        )
        label = "gateway" if version == "current" else f"gateway@{version}"
        if front:
            spec = PathSpec(label, "grpc", f"{LOOPBACK}:{grpc_port}", "", {}, setup.key)
        else:
            # lead_ms=0 (the default): TTS audio leaves as fast as the model makes it, as in
            # the record; --lead-ms paces it as a voice agent's listener hears it.
            spec = PathSpec(
                label, "gateway", f"{LOOPBACK}:{port}", "", {}, setup.key, lead_ms=lead_ms
            )
        paths.append((spec, proc))
    return paths, adapter.pid


async def _strace(pid: int, out: Path) -> Any:
    """``strace -c -f`` on ``pid`` (every thread) until interrupted: the syscall counts of one
    round. ptrace slows the traced process, so a traced round's CPU and latency do not count;
    its syscalls per message do."""
    return await asyncio.create_subprocess_exec(
        *("strace", "-c", "-f", "-U", "name,calls,errors", "-o", str(out), "-p", str(pid)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def syscall_counts(path: Path) -> dict[str, int]:
    """The calls per syscall of an ``strace -c -U name,calls,errors`` summary."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1].isdigit() and fields[0] not in ("total", "syscall"):
            counts[fields[0]] = int(fields[1])
    return counts


async def main(args: argparse.Namespace) -> None:
    if args.syscalls and shutil.which("strace") is None:
        raise SystemExit("--syscalls needs strace (apt-get install strace)")
    work = Path(tempfile.mkdtemp(prefix="voxwire-profile-"))
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, dict[str, float]]] = []
    async with contextlib.AsyncExitStack() as stack:
        paths, adapter_pid = await _start(
            stack, work, args.versions, args.kind, args.front, args.lean, args.lead_ms
        )
        for round_ in range(args.rounds):
            # Rotated each round, so the machine's drift spreads over every path.
            shift = round_ % len(paths)
            for path, proc in paths[shift:] + paths[:shift]:
                spy = None
                if args.profile and round_ == args.rounds - 1 and path.label in PROFILED:
                    folded = args.out / f"{PROFILED[path.label]}.folded"
                    spy = await _spy(proc.pid, args.seconds, folded, args.native)
                folder = work / f"{path.label}-{round_}"
                tracer = None
                if args.syscalls and round_ == args.rounds - 1:
                    traced = args.out / f"{path.label.replace(' ', '-')}.strace"
                    tracer = await _strace(proc.pid, traced)
                    await asyncio.sleep(0.5)  # attached before the first stream
                row = await measure_path(
                    path, [proc.pid], adapter_pid, args.kind, args.streams, args.seconds, folder
                )
                if tracer is not None:
                    tracer.send_signal(signal.SIGINT)
                    async with asyncio.timeout(30):
                        await tracer.wait()
                    counts = syscall_counts(traced)
                    per = {k: v / row["messages"] for k, v in counts.items()}
                    top = sorted(per.items(), key=lambda kv: -kv[1])[:8]
                    print(
                        f"  {path.label} (traced: its CPU and latency do not count): "
                        f"{sum(per.values()):.2f} syscalls per message: "
                        + ", ".join(f"{k} {v:.2f}" for k, v in top),
                        flush=True,
                    )
                rows.append((path.label, row))
                print(
                    f"round {round_ + 1} {path.label}: {row['cpu_us']:.0f} µs CPU per "
                    f"message (adapter {row['adapter_cpu_us']:.0f}), p50 {row['p50']:.2f} ms, "
                    f"p99 {row['p99']:.2f} ms, machine busy {row['busy']:.0f} %, "
                    f"errors {row['errors']:.0f}",
                    flush=True,
                )
                if spy is not None:
                    async with asyncio.timeout(60):
                        await spy.wait()
    relay = sum(r["cpu_us"] for label, r in rows if label == "null relay") / args.rounds
    if not relay:  # TTS: against the adapter's CPU for the same requests
        relay = sum(r["adapter_cpu_us"] for _, r in rows) / len(rows)
    print(f"\n{args.rounds} rounds of {args.seconds:g} s at {args.streams} streams:")
    for label in dict.fromkeys(label for label, _ in rows):
        cpu = [r["cpu_us"] for lb, r in rows if lb == label]
        mean = sum(cpu) / len(cpu)
        print(
            f"  {label}: CPU per message {min(cpu):.0f}–{max(cpu):.0f} µs (mean {mean:.0f}), "
            f"{mean / relay:.2f}× the " + ("null relay's" if args.kind == "stt" else "adapter's")
        )
    if args.profile:
        for name in PROFILED.values():
            if not (args.out / f"{name}.folded").exists():  # TTS runs have no relay
                continue
            report = summarize(args.out / f"{name}.folded")
            print(f"\n{name}: {report}")
            (args.out / f"{name}.txt").write_text(report + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gateway_profile", description=__doc__
    )
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument(
        "--kind",
        choices=("stt", "tts"),
        default="stt",
        help="stt: paced streams, CPU per chunk; tts: one request per session in each slot, "
        "CPU per request, latency = time to first audio",
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved relay/gateway rounds")
    parser.add_argument(
        "--versions",
        type=lambda text: [v for v in text.split(",") if v],
        default=["current"],
        help="gateways to compare: git revisions and/or 'current' (this checkout's files)",
    )
    parser.add_argument(
        "--lead-ms",
        type=int,
        default=0,
        help="tts: the gateway's pacing lead (0: as fast as the model; -1: its default, 1 s)",
    )
    parser.add_argument(
        "--front",
        action="store_true",
        help="drive each gateway through its gRPC front (voxwire.v1 with the key), not WebSocket",
    )
    parser.add_argument(
        "--lean",
        action="store_true",
        help="also measure benchmarks.lean_gateway: the edge protocol's conversions without the "
        "gateway's guarantees (STT)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy on the last gateway round")
    parser.add_argument("--out", type=Path, default=Path("out/profile"))
    parser.add_argument(
        "--syscalls",
        action="store_true",
        help="strace -c each path's last round: syscalls per message (that round is slowed)",
    )
    parser.add_argument(
        "--native", action="store_true", help="native frames too (C extensions, the collector)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))

"""The adapter's CPU per message against the null proxy's, and where the difference goes.

Issue 8 ("CPU per message"): the adapter's CPU per message should come down to at most 1.2x the
null proxy's (the least any Python adapter in front of Triton does: raw bytes both ways). This
starts one Triton (bench_stt), the null proxy and the adapter, then runs STT at ``--streams``
paced streams (100 ms chunks) through each, interleaved (proxy, adapter, adapter, proxy, ...),
and prints each run's server CPU per message and the ratio. ``--baseline REV`` adds the adapter
of another git revision (a detached worktree of it) to the rotation, so a change to the hot
path is weighed against what it replaces in the same run. With ``--py-spy FILE`` one extra
adapter run is sampled by py-spy (``py-spy record --format raw``) and the functions with the most
samples (own time and with callees) are printed, so a change to the hot path can be weighed.

    python -m benchmarks.adapter_profile [--streams 100] [--seconds 15] [--repeats 2]
                                          [--baseline REV] [--py-spy out/bench/adapter.folded]
                                          [--native] [--lean]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.record import STT_MODEL, TTS_MODEL, PathSpec, measure
from benchmarks.stack import (
    LOOPBACK,
    adapter_process,
    process_tree,
    server_process,
)
from localstack.triton import TritonServer, default_model_repository


def top_functions(
    folded: Path, n: int = 25
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """(own samples, inclusive samples) per function of a py-spy ``--format raw`` file (one
    ``frame;frame;... count`` line per stack), the ``n`` largest, and the total."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return own.most_common(n), inclusive.most_common(n), total


async def _adapter(
    stack: contextlib.AsyncExitStack,
    label: str,
    triton: TritonServer,
    workdir: Path,
    cwd: Path | None = None,
) -> tuple[PathSpec, int]:
    log = workdir / f"{label.replace(' ', '_').replace('@', '')}.log"
    proc, listen = await stack.enter_async_context(adapter_process(triton.grpc_url, log, cwd=cwd))
    tri = lambda: process_tree(triton.pid or 0)  # noqa: E731
    pid = proc.pid
    return PathSpec(label, "grpc", listen, "", {"server": lambda: [pid], "triton": tri}), pid


@contextlib.contextmanager
def _revision(rev: str, workdir: Path) -> Iterator[Path]:
    """A detached worktree of ``rev``, removed afterwards."""
    tree = workdir / f"rev-{rev}"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], check=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=False)


async def profile(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="voxwire-adapter-profile-"))
    triton = TritonServer(default_model_repository(), models=[STT_MODEL, TTS_MODEL])
    await triton.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            proxy_proc, proxy_port = await stack.enter_async_context(
                server_process(
                    ["benchmarks.null_proxy", triton.grpc_url], workdir / "proxy.log", True
                )
            )
            tri = lambda: process_tree(triton.pid or 0)  # noqa: E731
            proxy = PathSpec(
                "null proxy (floor)",
                "triton",
                f"{LOOPBACK}:{proxy_port}",
                triton.grpc_url,
                {"server": lambda: [proxy_proc.pid], "triton": tri},
            )
            adapter, adapter_pid = await _adapter(stack, "adapter", triton, workdir)
            paths = [proxy, adapter]
            if args.lean:
                lean_proc, lean_port = await stack.enter_async_context(
                    server_process(
                        ["benchmarks.lean_adapter", triton.grpc_url], workdir / "lean.log", True
                    )
                )
                lean = PathSpec(
                    "lean (conversions)",
                    "grpc",
                    f"{LOOPBACK}:{lean_port}",
                    "",
                    {"server": lambda: [lean_proc.pid], "triton": tri},
                )
                paths.append(lean)
            if args.baseline:
                tree = stack.enter_context(_revision(args.baseline, workdir))
                base, _ = await _adapter(stack, f"adapter @{args.baseline}", triton, workdir, tree)
                paths.append(base)
            cpu: dict[str, list[float]] = {p.label: [] for p in paths}
            for repeat in range(args.repeats):
                shift = repeat % len(paths)  # rotated each repeat: A B C, B C A, ...
                for path in paths[shift:] + paths[:shift]:
                    _, row = await measure(path, "stt", args.streams, args.seconds, workdir)
                    us = row["server_cpu_us"]["server"]
                    cpu[path.label].append(us)
                    print(
                        f"{path.label:20} {args.streams} streams: server {us:6.1f} us/msg, "
                        f"p50 {row['p50']:.2f} ms, p99 {row['p99']:.2f} ms, "
                        f"errors {row['errors'] or 0}",
                        flush=True,
                    )
            floor = cpu[proxy.label]
            for path in paths[1:]:
                ratio = [a / p for a, p in zip(cpu[path.label], floor, strict=True)]
                each = ", ".join(f"{r:.2f}" for r in ratio)
                median = statistics.median(ratio)
                print(f"{path.label} / null proxy CPU per message: {each} (median {median:.2f})")
            if args.py_spy:
                sampled = [(proxy, proxy_proc.pid), (adapter, adapter_pid)]
                if args.lean:
                    sampled.append((lean, lean_proc.pid))
                await _sample(args, sampled, workdir)
    finally:
        await triton.stop()


async def _sample(
    args: argparse.Namespace, paths: list[tuple[PathSpec, int]], workdir: Path
) -> None:
    """One extra run of each of ``paths`` (the null proxy, the adapter, the lean adapter),
    sampled by py-spy into ``args.py_spy`` (the adapter) and beside it with ``.proxy`` (the
    floor) and ``.lean``: the same sampler on every side, so what the adapter adds shows as
    samples the others do not have."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    args.py_spy.parent.mkdir(parents=True, exist_ok=True)
    for path, pid in paths:
        out = (
            args.py_spy
            if path.label == "adapter"
            else args.py_spy.with_suffix(
                ".lean.folded" if path.target == "grpc" else ".proxy.folded"
            )
        )
        proc = await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
            "--duration", str(int(args.seconds)), "-o", str(out),
            # py-spy refuses --native with --nonblocking: native stacks pause the process.
            *(["--native"] if args.native else ["--nonblocking"]),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        _, row = await measure(path, "stt", args.streams, args.seconds, workdir)
        await asyncio.wait_for(proc.wait(), args.seconds + 30)
        own, inclusive, total = top_functions(out)
        per_msg = row["server_cpu_us"]["server"]
        print(f"\npy-spy: {total} samples of {path.label} ({per_msg:.0f} us/msg); own time:")
        for name, count in own:
            print(f"  {100 * count / total:5.1f} %  {name}")
        print("with callees:")
        for name, count in inclusive:
            print(f"  {100 * count / total:5.1f} %  {name}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline", help="also measure the adapter of this git revision")
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="also sample the adapter into this file (the null proxy beside it, .proxy.folded)",
    )
    parser.add_argument(
        "--native", action="store_true", help="py-spy: native frames too (gRPC core, syscalls)"
    )
    parser.add_argument(
        "--lean",
        action="store_true",
        help="also measure benchmarks.lean_adapter: the adapter's conversions without its "
        "scaffolding (the floor of the contract's own work)",
    )
    args: Any = parser.parse_args(argv)
    asyncio.run(profile(args))


if __name__ == "__main__":
    main()

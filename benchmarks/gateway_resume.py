"""Time for SDK sessions to resume on a second gateway after the first one is stopped.

Triton (``bench_stt``), the adapter and two gateway processes A and B (one keys file, one
token signing key, drain grace ``--grace``), each its own process. ``--sessions`` SDK sessions
(``voxwire.client.TranscriptionSession`` with the URLs [A, B] and the SDK's default options)
stream 100 ms chunks of 16 kHz PCM16 paced at real time on an absolute schedule, with a
``finalize`` every ``--finalize-every`` seconds (so acks move and a resume replays from the
last one) and ``close`` at the end. First a run without a fault (the words each session must
get), then the same run with ``--signal`` to A at ``--fault-at`` seconds. TERM (a restart):
A sends every session ``goingAway``, the SDK hands over to B at once and replays from its ack.
KILL (a crash): the connections end without a word, and the SDK reconnects to B.

Per session, measured on the monotonic clock in this process:
- *resume*: the SDK's ``Resumed.downtime_s``, from the moment the session was lost
  (``goingAway`` read, or the connection's end) to the session live on B (its replay
  written and B's model's ``started`` read);
- *first result on B*: from the same moment to the first result read from B.
Checked: every session resumed on B, each session's final words equal its run without the
fault (``bench_stt`` answers each utterance with the same fixed sentence, so the comparison is
exact: a lost or repeated utterance changes the words), and no session failed.

    python -m benchmarks.gateway_resume [--sessions 100] [--seconds 8] [--fault-at 4]
        [--grace 1] [--finalize-every 2] [--signal TERM|KILL] [--drain-pace N]
        [--json out/bench/gateway_resume.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gateway_stack import gateway_process, gateway_setup
from benchmarks.stack import LOOPBACK, adapter_process, raise_nofile
from localstack.triton import TritonServer, default_model_repository
from voxwire.client import Resumed, TranscriptionSession
from voxwire.v1 import audio_pb2, transcription_pb2

CHUNK_MS = 100
RATE = 16_000
CHUNK = b"\0" * (RATE * 2 * CHUNK_MS // 1000)


@dataclass
class SessionRun:
    """What one session saw, stamped as it was read."""

    words: list[str] = field(default_factory=list)
    utterance_ids: list[str] = field(default_factory=list)
    resumes: list[tuple[float, Resumed]] = field(default_factory=list)  # (read at, event)
    results_at: list[float] = field(default_factory=list)
    error: str = ""


def config() -> transcription_pb2.TranscriptionConfig:
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=RATE)
    return transcription_pb2.TranscriptionConfig(
        model="bench_stt", audio_format=fmt, interim_results=True
    )


async def one_session(
    urls: list[str], key: str, t0: float, args: argparse.Namespace, run: SessionRun
) -> None:
    session = await TranscriptionSession.connect(urls, config(), api_key=key)

    async def read() -> None:
        async for event in session.events():
            at = time.monotonic()
            if isinstance(event, Resumed):
                run.resumes.append((at, event))
            elif isinstance(event, transcription_pb2.TranscriptResult):
                run.results_at.append(at)
                if event.is_final:
                    run.words += event.transcript.split()
                    run.utterance_ids.append(event.utterance_id)

    reader = asyncio.create_task(read())
    try:
        chunks = round(args.seconds * 1000 / CHUNK_MS)
        every = round(args.finalize_every * 1000 / CHUNK_MS)
        for i in range(chunks):
            delay = t0 + i * CHUNK_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await session.send(CHUNK)
            if every and (i + 1) % every == 0 and i + 1 < chunks:
                await session.finalize()
        await session.close()
        async with asyncio.timeout(30):
            await reader
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        reader.cancel()
        await session.abort()


async def run_all(
    urls: list[str], key: str, args: argparse.Namespace, fault: Any = None
) -> list[SessionRun]:
    """Every session at once (started within the first 100 ms); ``fault()`` at
    ``--fault-at`` seconds."""
    runs = [SessionRun() for _ in range(args.sessions)]
    t0 = time.monotonic() + 2.0  # time to connect them all before the audio starts
    tasks = [
        asyncio.create_task(one_session(urls, key, t0 + i * 0.1 / args.sessions, args, run))
        for i, run in enumerate(runs)
    ]
    if fault is not None:
        await asyncio.sleep(max(0.0, t0 + args.fault_at - time.monotonic()))
        fault()
    async with asyncio.timeout(args.seconds + 120):
        await asyncio.gather(*tasks)
    return runs


def summarize(baseline: list[SessionRun], faulted: list[SessionRun]) -> dict[str, Any]:
    downtime, first_result, problems = [], [], []
    for i, (want, got) in enumerate(zip(baseline, faulted, strict=True)):
        if got.error or want.error:
            problems.append(f"session {i}: {got.error or want.error}")
            continue
        if not got.resumes:
            problems.append(f"session {i}: did not resume")
            continue
        read_at, resumed = got.resumes[0]
        lost_at = read_at - resumed.downtime_s
        downtime.append(resumed.downtime_s * 1000)
        after = [at for at in got.results_at if at > read_at]
        if after:
            first_result.append((after[0] - lost_at) * 1000)
        if got.words != want.words:
            problems.append(f"session {i}: words differ ({len(got.words)} vs {len(want.words)})")

    def pct(values: list[float]) -> dict[str, float]:
        if not values:
            return {"count": 0}
        p50, p99 = np.percentile(values, [50, 99]).tolist()
        return {"count": len(values), "p50": p50, "p99": p99, "max": max(values)}

    return {
        "resume_ms": pct(downtime),
        "first_result_ms": pct(first_result),
        "words_equal": sum(1 for a, b in zip(baseline, faulted, strict=True) if a.words == b.words),
        "sessions": len(faulted),
        "problems": problems[:20],
        "problem_count": len(problems),
        "causes": sorted({r.resumes[0][1].cause for r in faulted if r.resumes}),
        "attempts_max": max((r.resumes[0][1].attempts for r in faulted if r.resumes), default=0),
        # The adapter numbers a resumed stream's utterances from first_utterance_index.
        "utterance_ids_equal": sum(
            1 for a, b in zip(baseline, faulted, strict=True) if a.utterance_ids == b.utterance_ids
        ),
        "utterance_ids_example": [baseline[0].utterance_ids, faulted[0].utterance_ids],
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="voxwire-gateway-resume-"))
    print(f"logs under {workdir}", file=sys.stderr)
    header = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "nproc": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "command": "python -m benchmarks.gateway_resume " + " ".join(sys.argv[1:]),
        "args": {k: v for k, v in vars(args).items() if k != "json"},
    }
    triton = TritonServer(default_model_repository(), models=["bench_stt"])
    await triton.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            proc, listen = await stack.enter_async_context(
                adapter_process(triton.grpc_url, workdir / "adapter.log")
            )
            pace = {} if args.drain_pace is None else {"drain_pace_per_s": args.drain_pace}
            setup = gateway_setup(workdir / "gw", [listen], drain_grace_seconds=args.grace, **pace)
            a, port_a = await stack.enter_async_context(gateway_process(setup, workdir / "a.log"))
            _, port_b = await stack.enter_async_context(gateway_process(setup, workdir / "b.log"))
            urls = [f"ws://{LOOPBACK}:{port_a}", f"ws://{LOOPBACK}:{port_b}"]
            print("run without a fault", file=sys.stderr)
            baseline = await run_all(urls, setup.key, args)
            print(f"run with SIG{args.signal} to A at {args.fault_at:g} s", file=sys.stderr)
            sig = signal.Signals[f"SIG{args.signal}"]
            faulted = await run_all(urls, setup.key, args, lambda: a.send_signal(sig))
            async with asyncio.timeout(args.grace + 30):
                header["gateway_a_exit"] = await a.wait()
    finally:
        await triton.stop()
    header["load_average_after"] = os.getloadavg()
    return {**header, **summarize(baseline, faulted)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gateway_resume", description=__doc__
    )
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=8.0, help="audio per session")
    parser.add_argument("--fault-at", type=float, default=4.0, help="SIGTERM to A, seconds in")
    parser.add_argument("--grace", type=float, default=1.0, help="A's drain grace, seconds")
    parser.add_argument("--signal", choices=["TERM", "KILL"], default="TERM", help="to A")
    parser.add_argument("--finalize-every", type=float, default=2.0, help="0: never")
    parser.add_argument(
        "--drain-pace",
        type=float,
        default=None,
        help="the gateways' drain_pace_per_s (0: every going_away at once, the SDK jitters)",
    )
    parser.add_argument("--json", type=Path, default=Path("out/bench/gateway_resume.json"))
    return parser.parse_args(argv)


def cli() -> None:
    args = parse_args()
    result = asyncio.run(main(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    cli()

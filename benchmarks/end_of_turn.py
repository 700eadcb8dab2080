"""End of turn on phone calls through the adapter: one configuration, or several interleaved.

One Triton (``stt_pocketsphinx``), one adapter process per variant in front of it (``--variant
LABEL=FILE``: AdapterConfig keys in a TOML file; none given: the adapter as configured by
default). Each round runs ``--calls`` calls at once through each variant in turn (the order
alternates per round, so the machine's drift favours none): each call streams one of the
phone-band fixtures (``tests/fixtures/speech/telephony``, 8 kHz mu-law) in 20 ms frames at
real time, then 1.5 s of silence, then closes. Per call: from the due time of its last speech
frame to the final result the model's endpointer gives in the silence (the end of turn a voice
agent waits for), its transcript, and how many model requests the stream made (its summary's
timings). ``stt_pocketsphinx`` admits 4 streams (2 an instance): ``--calls`` up to 4 per
variant.

    python -m benchmarks.end_of_turn [--variant off=off.toml --variant on=on.toml]
        [--calls 1] [--rounds 3] [--json out/bench/end_of_turn.json]

Used on 2026-12-06 to weigh the adapter merging audio that waits for an answer (tried, not
kept: BENCHMARKS.md, "Coalescing in the adapter").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from benchmarks.stack import adapter_process
from benchmarks.telephony import MULAW, accuracy_names
from localstack.triton import TritonServer, default_model_repository
from voxwire.stream_write import write_unless_ended
from voxwire.v1 import transcription_pb2, transcription_pb2_grpc

MODEL = "stt_pocketsphinx"
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
FRAME_S = 0.02
SILENCE_S = 1.5
Req = transcription_pb2.StreamingTranscribeRequest
# A busy machine must not fail a stream: latency is measured, not judged (defaults 0.35 / 10 s).
_COMMON = "health_timeout_seconds = 2.0\nmodel_response_timeout_seconds = 60.0\n"


async def call(address: str, audio: bytes) -> dict[str, Any]:
    """One call: the file at real time, then silence; the end of turn and what the model did."""
    frames = [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
    speech = len(frames)
    frames += [b"\xff" * FRAME_BYTES] * round(SILENCE_S / FRAME_S)  # mu-law silence
    finals: list[tuple[float, str]] = []
    summary: transcription_pb2.TranscriptionSummary | None = None
    error = ""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = transcription_pb2_grpc.TranscriptionStub(channel)
        stream = stub.StreamingTranscribe(timeout=60)
        config = transcription_pb2.TranscriptionConfig(model=MODEL, audio_format=MULAW.format)
        await stream.write(Req(config=config))
        start = time.monotonic()

        async def send() -> None:
            for i, frame in enumerate(frames):
                await asyncio.sleep(max(0.0, start + i * FRAME_S - time.monotonic()))
                if not await write_unless_ended(stream, Req(audio=frame)):
                    return  # the call ended: its status says why
            await stream.done_writing()

        sender = asyncio.create_task(send())
        try:
            async for response in stream:
                if response.HasField("result") and response.result.is_final:
                    finals.append((time.monotonic(), response.result.transcript))
                elif response.HasField("summary"):
                    summary = response.summary
        except grpc.aio.AioRpcError as exc:
            error = exc.code().name  # e.g. RESOURCE_EXHAUSTED past the model's admission
        await sender
    last_due = start + (speech - 1) * FRAME_S
    silence_ends = start + len(frames) * FRAME_S
    turn = [at - last_due for at, _ in finals if last_due < at <= silence_ends + 0.5]
    return {
        "end_of_turn_ms": turn[0] * 1000 if turn else None,
        "transcript": " ".join(text for _, text in finals).strip(),
        "frames": len(frames),
        "model_requests": summary.timings.model_requests if summary else None,
        "error": error,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    names = accuracy_names()
    audio = {name: MULAW.audio(name) for name in names}
    out_dir = args.json.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    variants = dict(args.variant) or {"adapter": ""}
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    async with contextlib.AsyncExitStack() as stack:
        triton = await stack.enter_async_context(
            TritonServer(
                default_model_repository(), models=[MODEL], log_path=out_dir / "eot-triton.log"
            )
        )
        addresses = {}
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for i, (variant, keys) in enumerate(variants.items()):
            config = tmp / f"adapter{i}.toml"
            config.write_text(_COMMON + keys)
            _proc, addresses[variant] = await stack.enter_async_context(
                adapter_process(
                    triton.grpc_url, out_dir / f"eot-adapter{i}.log", "--config", str(config)
                )
            )
        order = list(variants)
        for round_ in range(args.rounds):
            for variant in order if round_ % 2 == 0 else order[::-1]:
                # Each file once a round, or as many times as it takes to fill one batch.
                pool = names * -(-args.calls // len(names))
                for first in range(0, len(pool), args.calls):
                    batch = pool[first : first + args.calls]
                    print(f"round {round_ + 1}, {variant}: {batch}", file=sys.stderr)
                    done = await asyncio.gather(
                        *(call(addresses[variant], audio[n]) for n in batch)
                    )
                    results[variant] += [{"file": n, **d} for n, d in zip(batch, done, strict=True)]
    return {
        "calls_at_once": args.calls,
        "rounds": args.rounds,
        "variants": variants,
        "results": results,
    }


def summarize(result: dict[str, Any]) -> str:
    lines = [f"{result['calls_at_once']} call(s) at once, {result['rounds']} rounds:"]
    for variant, calls in result["results"].items():
        turns = sorted(c["end_of_turn_ms"] for c in calls if c["end_of_turn_ms"] is not None)
        requests = [c["model_requests"] / c["frames"] for c in calls if c["model_requests"]]
        failed = Counter(c["error"] for c in calls if c["error"])
        if failed:
            lines.append(f"  {variant}: failed calls {dict(failed)}")
        if not turns:
            lines.append(f"  {variant}: no final in the silence")
            continue
        p90 = turns[min(len(turns) - 1, round(0.9 * (len(turns) - 1)))]
        lines.append(
            f"  {variant}: {len(turns)}/{len(calls)} calls with an end of turn; p50 "
            f"{statistics.median(turns):.0f} ms, mean {statistics.fmean(turns):.0f}, p90 "
            f"{p90:.0f}, max {turns[-1]:.0f}; model requests per frame "
            f"{statistics.fmean(requests):.2f}"
        )
    return "\n".join(lines)


def variant(text: str) -> tuple[str, str]:
    """``LABEL=FILE`` -> (label, the file's AdapterConfig keys)."""
    label, sep, path = text.partition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"expected LABEL=FILE, got {text!r}")
    try:
        return label, Path(path).read_text()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{path}: {exc.strerror}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.end_of_turn",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--variant",
        type=variant,
        action="append",
        default=[],
        help="LABEL=FILE: an adapter with these AdapterConfig keys (repeat to compare)",
    )
    parser.add_argument("--calls", type=int, default=1, help="calls at once per batch")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the order alternated")
    parser.add_argument("--json", type=Path, default=Path("out/bench/end_of_turn.json"))
    return parser.parse_args(argv)


def cli() -> None:
    args = parse_args()
    result = asyncio.run(main(args))
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(summarize(result))


if __name__ == "__main__":
    cli()

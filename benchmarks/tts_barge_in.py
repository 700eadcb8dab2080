"""What draining a stopped TTS context costs a barge-in, against cancelling it.

A barge-in: the listener interrupts, the client cancels the context that is speaking and opens a
new one at once. The adapter either cancels the old context's Triton call (``--tts-stop-in-flight
cancel``: the model stops at once, but Triton 2.51 can crash under many cancelled calls) or, by
default, half-closes it and lets the unit in flight run out, its audio dropped (``drain``,
``inference_adapter/triton/reaper.py``). Draining keeps a model instance busy for the rest of
the unit, so the new context may wait for one.

One Triton with the real eSpeak NG model (``tts_espeak``: 2 instances, one request at a time
each), one adapter per mode, both up at once and used in turn (ABAB). Each of ``--streams``
concurrent streams opens context A with one long sentence (one unit), waits for A's first audio,
then sends cancel A, opens B and appends a short sentence. Measured per barge-in, from the
cancel's write: the ``cancelled`` ack, and B's first audio.

    python -m benchmarks.tts_barge_in [--streams 1,2,4] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from benchmarks.stack import adapter_process
from localstack.triton import TritonServer, default_model_repository
from voxwire.v1 import audio_pb2, synthesis_pb2, synthesis_pb2_grpc

MODEL = "tts_espeak"
SReq = synthesis_pb2.StreamingSynthesizeRequest
LONG = (
    "When the listener interrupts this very long sentence, which keeps going with clause after"
    " clause about nothing in particular, about the weather and the trains and the price of"
    " bread, the agent has to stop speaking at once and answer the new question instead of"
    " finishing the thought it had started several seconds before"
)
SHORT = "Sure, what would you like to know?"
BARGE_TIMEOUT_S = 30.0


def _open(context: str) -> SReq:
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=22050)
    return SReq(
        context_id=context,
        open=synthesis_pb2.SynthesisContextConfig(model=MODEL, voice="en-us", output_format=fmt),
    )


async def barge_in(channel: grpc.aio.Channel) -> tuple[float, float]:
    """One barge-in; returns (ms to the cancelled ack, ms to B's first audio)."""
    call = synthesis_pb2_grpc.SynthesisStub(channel).StreamingSynthesize(timeout=BARGE_TIMEOUT_S)
    try:
        await call.write(_open("a"))
        await call.write(SReq(context_id="a", append=synthesis_pb2.AppendText(text=LONG)))
        await call.write(SReq(context_id="a", flush=synthesis_pb2.Flush(flush_id="f")))
        async for r in call:
            if r.context_id == "a" and r.HasField("audio"):
                break
        t0 = time.monotonic()
        await call.write(SReq(context_id="a", cancel=synthesis_pb2.Cancel()))
        await call.write(_open("b"))
        await call.write(SReq(context_id="b", append=synthesis_pb2.AppendText(text=SHORT)))
        await call.write(SReq(context_id="b", close=synthesis_pb2.CloseContext()))
        await call.done_writing()
        acked = first = None
        seen = []
        async for r in call:
            seen.append(f"{r.context_id}:{r.WhichOneof('response')}")
            now = (time.monotonic() - t0) * 1000.0
            if r.context_id == "a" and r.HasField("cancelled") and acked is None:
                acked = now
            if r.context_id == "b" and r.HasField("audio") and first is None:
                first = now
        if acked is None or first is None:
            raise RuntimeError(
                f"ack {acked}, B's first audio {first} (status {await call.code()}): {seen}"
            )
        return acked, first
    finally:
        call.cancel()


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.array(ms)
    return {
        "n": len(ms),
        "p50": round(float(np.percentile(a, 50)), 1),
        "p90": round(float(np.percentile(a, 90)), 1),
        "max": round(float(a.max()), 1),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    triton = TritonServer(default_model_repository(), models=[MODEL])
    await triton.start()
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with contextlib.AsyncExitStack() as stack:
                channels = {}
                for mode in ("drain", "cancel"):
                    _, address = await stack.enter_async_context(
                        adapter_process(
                            triton.grpc_url,
                            Path(tmp) / f"adapter-{mode}.log",
                            "--tts-stop-in-flight",
                            mode,
                            services=("voxwire.v1.Synthesis",),
                        )
                    )
                    channels[mode] = await stack.enter_async_context(
                        grpc.aio.insecure_channel(address)
                    )
                for streams in args.streams:
                    acks: dict[str, list[float]] = {"drain": [], "cancel": []}
                    firsts: dict[str, list[float]] = {"drain": [], "cancel": []}
                    await asyncio.gather(*(barge_in(channels["drain"]) for _ in range(streams)))
                    for _ in range(args.rounds):  # ABAB: the machine's drift favours neither
                        for mode in ("drain", "cancel"):
                            got = await asyncio.gather(
                                *(barge_in(channels[mode]) for _ in range(streams))
                            )
                            acks[mode] += [a for a, _ in got]
                            firsts[mode] += [f for _, f in got]
                            await asyncio.sleep(0.5)  # what was drained ends before the next
                    results[str(streams)] = {
                        mode: {
                            "ack_ms": _stats(acks[mode]),
                            "b_first_audio_ms": _stats(firsts[mode]),
                        }
                        for mode in ("drain", "cancel")
                    }
                    print(f"{streams} stream(s): {json.dumps(results[str(streams)])}", flush=True)
    finally:
        await triton.stop()
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tts_barge_in", description=__doc__)
    p.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--json", type=Path, default=Path("out/bench/tts_barge_in.json"))
    return p.parse_args(argv)


def cli() -> None:
    args = parse_args()
    results = asyncio.run(main(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    cli()

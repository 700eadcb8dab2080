"""A second floor for the adapter: its conversions, none of its scaffolding.

The null proxy (``benchmarks/null_proxy.py``) is the least any adapter costs: raw bytes both
ways. This instrument serves the real ``voxwire.v1.Transcription/StreamingTranscribe`` and does
what any implementation of the contract must do per message, with the adapter's own pure
functions: parse the client's request, turn its audio into a Triton request of the stream's
sequence (``stt_request``), decode Triton's response (``parse_response``), turn its events into
contract responses (``transcript_result``) and serialize them. Nothing else: no session state
machine, no stage timings, no replay window, no outbox or byte cap, no deadlines or watchdogs,
no idle or drain watch, no admission, failover or telemetry, two plain tasks per stream.

So in one run: *lean − null proxy* is the cost of the contract's conversions themselves, and
*adapter − lean* is what the adapter's guarantees (docs/contract.md) cost on top. It answers only
the happy path the benchmark client drives (config, audio, close); a benchmark instrument, not a
component. Run in its own process (``python -m benchmarks.lean_adapter HOST:PORT``, the Triton
address): it binds a free loopback port, prints it on stdout, and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from collections.abc import AsyncIterator

import grpc
import numpy as np
import uvloop
from tritonclient.grpc import service_pb2

from benchmarks.raw_server import serve_until_sigterm
from inference_adapter.stt.results import transcript_result
from inference_adapter.triton.tensors import parse_response, stt_request
from voxwire.v1 import transcription_pb2

SERVICE = "voxwire.v1.Transcription"
TRITON_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
Request = transcription_pb2.StreamingTranscribeRequest
Response = transcription_pb2.StreamingTranscribeResponse
_sequences = itertools.count(1 << 40)


def _ms(value: object) -> int:
    return int(value) if isinstance(value, int) else 0


async def serve(upstream: str) -> None:
    channel = grpc.aio.insecure_channel(upstream)

    async def transcribe(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        call = channel.stream_stream(TRITON_METHOD)()  # raw bytes: serialized here, once
        it = aiter(requests)
        config = Request.FromString(await anext(it)).config
        model, sequence = config.model, next(_sequences)
        control = {"config": {"interim_results": config.interim_results}}
        empty = np.zeros(0, dtype="<i2")

        def triton(audio: np.ndarray, **kw: object) -> bytes:
            return stt_request(model, sequence, audio, **kw).SerializeToString()  # type: ignore[arg-type]

        await call.write(triton(empty, control=control, start=True))

        async def upward() -> None:
            async for raw in it:
                msg = Request.FromString(raw)
                if msg.WhichOneof("request") == "audio":
                    await call.write(triton(np.frombuffer(msg.audio, dtype="<i2")))
                else:  # close
                    break
            await call.write(triton(empty, end=True))
            await call.done_writing()

        task = asyncio.create_task(upward())
        try:
            async for raw in call:
                resp = parse_response(service_pb2.ModelStreamInferResponse.FromString(raw))
                for event in resp.events:
                    kind = event.get("type")
                    if kind == "ready":
                        out = Response(started=transcription_pb2.TranscriptionStarted(model=model))
                    elif kind in ("interim", "final"):
                        result = transcript_result(
                            event,
                            f"u{event.get('utterance', 0)}",
                            _ms,
                            final=kind == "final",
                            words=False,
                        )
                        out = Response(result=result)
                    else:
                        continue
                    await context.write(out.SerializeToString())
            await task
        finally:
            task.cancel()
            call.cancel()

    try:
        await serve_until_sigterm(SERVICE, "StreamingTranscribe", transcribe)
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1]))

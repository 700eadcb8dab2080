"""Reproduction (issue 8): Triton 2.51 aborts when clients cancel streaming calls, no adapter.

``python -m tools.triton_cancel_storm [--seconds 60] [--concurrency 48] [--end cancel|drain]``
starts a Triton with bench_stt and bench_tts and, on one grpc.aio channel, opens ModelStreamInfer
calls that each send a TTS unit or a short STT sequence (START + a few audio requests), maybe
read one response, and after 0-50 ms end the call: ``cancel`` (the default) cancels it, what the
adapter's ``ModelStream.cancel`` did whenever a client cancelled, disconnected or failed;
``drain`` is the control, what the adapter does now (``ModelStream.finish``): an STT sequence
gets its END (with ``{"cancel": true}``), the call is half-closed and read to its end (a call
Triton has not ended within 5 s is cancelled, and counted). Exits 1 (with Triton's log tail)
when Triton died.

Measured on the shared 2-core dev machine: Triton died in both 100,000-case fuzz runs through
the adapter (after about 3 min and under 1 min: SIGSEGV, or SIGABRT on gRPC assertions such as
``!byte_buffer->Valid()``), and in 3 of 8 direct storms like this one (within 3-20 s, SIGSEGV or
SIGABRT on ``call_op_set.h: false`` / ``sync.cc: prior > 0``); the other 5 storms ran 60-90 s
without a crash. A race, so it is flaky: run it several times. Triton issues about crashes on
request cancellation (triton-inference-server/server#8034, #7368) look related (not verified).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import struct
import sys
import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from localstack.triton import TritonServer, default_model_repository

_TTS_CONFIG = {
    "voice": "tone",
    "language": "en-US",
    "text_format": "plain",
    "word_timestamps": True,
    "pronunciations": [],
}


def _bytes_input(
    req: service_pb2.ModelInferRequest, name: str, value: bytes, batched: bool
) -> None:
    tensor = req.inputs.add(name=name, datatype="BYTES")
    tensor.shape.extend([1, 1] if batched else [1])
    req.raw_input_contents.append(struct.pack("<I", len(value)) + value)


def _tts() -> service_pb2.ModelInferRequest:
    req = service_pb2.ModelInferRequest(model_name="bench_tts")
    req.parameters["triton_enable_empty_final_response"].bool_param = True
    _bytes_input(req, "TEXT", b"Hello there, this is a test sentence. " * 3, batched=False)
    _bytes_input(req, "CONFIG", json.dumps(_TTS_CONFIG).encode(), batched=False)
    return req


def _stt(seq: int, start: bool, samples: int, end: bool = False) -> service_pb2.ModelInferRequest:
    req = service_pb2.ModelInferRequest(model_name="bench_stt")
    req.parameters["sequence_id"].int64_param = seq
    req.parameters["sequence_start"].bool_param = start
    req.parameters["sequence_end"].bool_param = end
    req.parameters["triton_enable_empty_final_response"].bool_param = True
    audio = req.inputs.add(name="AUDIO", datatype="INT16")
    audio.shape.extend([1, samples])
    req.raw_input_contents.append(np.zeros(samples, "<i2").tobytes())
    if start or end:
        control = {"config": {"language": "en-US", "vocabulary": []}} if start else {"cancel": True}
        _bytes_input(req, "CONTROL", json.dumps(control).encode(), batched=True)
    return req


async def _one(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, rng: random.Random, end: str
) -> bool:
    """One call; returns whether it ended with a cancel."""
    call = stub.ModelStreamInfer()
    seq = 0
    # A dead Triton leaves calls hanging: the timeout ends them.
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError):
        async with asyncio.timeout(5.0):
            if rng.random() < 0.5:
                await call.write(_tts())
            else:
                seq = secrets.randbits(62) | 1
                await call.write(_stt(seq, True, 0))
                for _ in range(rng.randint(0, 5)):
                    await call.write(_stt(seq, False, 1600))
            await asyncio.sleep(rng.uniform(0, 0.05))
            if rng.random() < 0.5:
                await call.read()
            if end == "drain":
                if seq:
                    await call.write(_stt(seq, False, 0, end=True))
                await call.done_writing()
                while await call.read() is not grpc.aio.EOF:
                    pass
                await call.code()
                return False
    call.cancel()
    return True


async def storm(seconds: float, concurrency: int, end: str = "cancel") -> int:
    """Run the storm; returns how many calls were made before Triton died (negative) or time
    ran out. Raises TritonStartError when Triton does not start."""
    triton = TritonServer(default_model_repository(), models=["bench_stt", "bench_tts"])
    await triton.start(timeout=120.0)
    rng = random.Random(8)
    done = cancelled = 0
    try:
        async with grpc.aio.insecure_channel(triton.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            until = time.monotonic() + seconds

            async def worker() -> None:
                nonlocal done, cancelled
                while time.monotonic() < until and triton.returncode is None:
                    # Not ``cancelled += await ...``: that reads the count before the await,
                    # and the workers' increments overwrite each other.
                    was_cancelled = await _one(stub, rng, end)
                    cancelled += was_cancelled
                    done += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        await asyncio.sleep(1.0)
        if triton.returncode is not None:
            tail = await asyncio.to_thread(triton.log_tail, 1500)
            print(
                f"Triton died (exit {triton.returncode}) after {done} calls "
                f"({cancelled} cancelled)\n{tail}"
            )
            return -done
        print(f"Triton survived {done} calls ({cancelled} cancelled) in {seconds:g} s")
        return done
    finally:
        await triton.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tools.triton_cancel_storm")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--concurrency", type=int, default=48)
    p.add_argument("--end", choices=("cancel", "drain"), default="cancel")
    a = p.parse_args()
    sys.exit(1 if asyncio.run(storm(a.seconds, a.concurrency, a.end)) < 0 else 0)


if __name__ == "__main__":
    main()

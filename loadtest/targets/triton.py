"""The ``triton`` target: Triton's KServe v2 ``ModelStreamInfer`` directly, the baseline.

Raw generated stubs on grpc.aio (no threads): one sequence per STT stream on one call, one call
per TTS context with one request holding the context's whole text, as the adapter drives the
models (docs/contract.md, "Implementing a model on Triton"). Pointed at the null proxy
(benchmarks/null_proxy.py) it measures that floor instead; both serve the same method.
Stage timings: Triton has no trailer; the ``compute`` stage is the sum of the COMPUTE_US the
model reported.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import random
import time
from typing import Any

import grpc
from tritonclient.grpc import service_pb2_grpc

from loadtest.events import Audio, ContextDone, ContextFailed, Ended, Event, Result, Started
from loadtest.targets.base import SttOptions, TargetError, TtsOptions
from loadtest.targets.triton_requests import (
    Decoded,
    ModelInfo,
    decode,
    model_info,
    stt_request,
    tts_request,
)

_OPTIONS = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]


async def _write(call: Any, message: Any) -> None:
    if call.done():
        return
    with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError):
        await call.write(message)


async def _read(call: Any) -> Any | None:
    try:
        message = await call.read()
    except grpc.aio.AioRpcError:
        return None
    return None if message is grpc.aio.EOF else message


async def _status(call: Any) -> str:
    return str((await call.code()).name)


def stt_events(at: float, decoded: Decoded) -> tuple[list[Event], Ended | None]:
    """A decoded STT response as events, and an Ended if the model reported an error."""
    out: list[Event] = []
    for ev in decoded.events:
        kind = ev.get("type")
        if kind == "ready":
            out.append(Started(at))
        elif kind in ("interim", "final"):
            out.append(Result(at, kind == "final", str(ev.get("text", "")), int(ev["end_ms"])))
        elif kind == "error":
            return out, Ended(at, "MODEL_ERROR", str(ev.get("reason", "")))
    if decoded.error:
        return out, Ended(at, "TRITON_ERROR", "error_message")
    return out, None


class TritonStt:
    """One STT sequence: START (config), audio requests, END; in-order final responses."""

    def __init__(self, call: Any, model: ModelInfo, sequence_id: int) -> None:
        self._call, self._model, self._seq = call, model, sequence_id
        self._pending: collections.deque[Event] = collections.deque()
        self._requests = self._answered = self._compute_us = 0
        self._finished = False
        self._ended: Ended | None = None

    async def _send(self, pcm: bytes, **kwargs: Any) -> None:
        self._requests += 1
        await _write(self._call, stt_request(self._model, self._seq, pcm, **kwargs))

    async def begin(self, interim_results: bool) -> None:
        control = {"config": {"interim_results": interim_results}}
        await self._send(b"", control=control, start=True)

    async def send_audio(self, pcm: bytes) -> None:
        await self._send(pcm)

    async def finish(self) -> None:
        self._finished = True
        await self._send(b"", end=True)

    async def next_event(self) -> Event:
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._ended is not None:
                return self._ended
            message = await _read(self._call)
            at = time.monotonic()
            if message is None:
                status = await _status(self._call)
                self._ended = Ended(at, "UNAVAILABLE" if status == "OK" else status, "")
                continue
            decoded = decode(message)
            events, failed = stt_events(at, decoded)
            self._pending.extend(events)
            self._compute_us += decoded.compute_us
            self._answered += decoded.final
            if failed is not None:
                self._ended = failed
                self._call.cancel()
            elif self._finished and self._answered >= self._requests:
                self._ended = Ended(at, "OK", "", {"compute": self._compute_us})
                with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
                    await self._call.done_writing()

    def cancel(self) -> None:
        self._call.cancel()


class TritonTts:
    """Contexts one after another, each its own call and one request (the whole text)."""

    def __init__(self, stub: Any, model: ModelInfo, options: TtsOptions) -> None:
        self._stub, self._model, self._options = stub, model, options
        self._config = {"voice": options.voice, "language": "", "text_format": "plain"}
        self._texts: dict[str, list[str]] = {}
        self._call: Any = None
        self._context = ""
        self._position_ms = 0.0
        self._finished = False
        self._compute_us = 0
        self._pending: collections.deque[Event] = collections.deque()
        self._wake = asyncio.Event()  # a context's call was opened, or the stream finished

    async def open_context(self, context_id: str) -> None:
        self._texts[context_id] = []

    async def append(self, context_id: str, text: str) -> None:
        self._texts[context_id].append(text)

    async def close_context(self, context_id: str) -> None:
        text = " ".join(self._texts.pop(context_id))
        self._call = self._stub.ModelStreamInfer(timeout=self._options.deadline_s)
        self._context, self._position_ms = context_id, 0.0
        self._wake.set()
        await _write(self._call, tts_request(self._model, text, self._config))

    async def finish(self) -> None:
        self._finished = True
        self._wake.set()

    async def next_event(self) -> Event:
        while not self._pending:
            if self._call is not None:
                message = await _read(self._call)
                at = time.monotonic()
                status = "" if message is not None else await _status(self._call)
                self._on_response(at, message, status)
            elif self._finished:
                return Ended(time.monotonic(), "OK", "", {"compute": self._compute_us})
            else:
                # Between contexts: nothing to read until the next one is sent.
                self._wake.clear()
                await self._wake.wait()
        return self._pending.popleft()

    def _on_response(self, at: float, message: Any, status: str) -> None:
        if message is None:
            self._pending.append(ContextFailed(at, self._context, status))
            self._call = None
            return
        decoded = decode(message)
        self._compute_us += decoded.compute_us
        errors = [e for e in decoded.events if e.get("type") == "error"]
        if decoded.error or errors:
            self._call.cancel()
            self._call = None
            reason = str(errors[0].get("reason", "")) if errors else "TRITON_ERROR"
            self._pending.append(ContextFailed(at, self._context, reason))
            return
        if decoded.audio_samples:
            duration = decoded.audio_samples * 1000.0 / self._model.rate_hz
            start, self._position_ms = self._position_ms, self._position_ms + duration
            self._pending.append(Audio(at, self._context, start, duration))
        if decoded.final:
            # The call ends with the unit; the server sees the half-close when it is cancelled.
            self._call.cancel()
            self._call = None
            self._pending.append(ContextDone(at, self._context))

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()


class TritonTarget:
    name = "triton"

    def __init__(
        self, address: str, *, stt_model: str, tts_model: str, models_from: str = ""
    ) -> None:
        self.address = address
        self._models_from = models_from or address
        self._names = {"stt": stt_model, "tts": tts_model}
        self._models: dict[str, ModelInfo] = {}
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        # Sequence ids unique across workers and runs: a random high part, a counter below.
        self._sequence_ids = itertools.count(random.getrandbits(40) << 20)

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.address, options=_OPTIONS)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        async with grpc.aio.insecure_channel(self._models_from) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            for kind, name in self._names.items():
                if name:
                    self._models[kind] = await model_info(stub, name)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    def _model(self, kind: str) -> ModelInfo:
        if kind not in self._models:
            raise TargetError(f"the triton target needs a {kind} model name (stt.model/tts.model)")
        return self._models[kind]

    async def open_stt(self, options: SttOptions) -> TritonStt:
        model = self._model("stt")
        if options.rate_hz != model.rate_hz:
            raise TargetError(f"{model.name} takes {model.rate_hz} Hz audio, not {options.rate_hz}")
        call = self._stub.ModelStreamInfer(timeout=options.deadline_s)
        stream = TritonStt(call, model, next(self._sequence_ids))
        await stream.begin(options.interim_results)
        return stream

    async def open_tts(self, options: TtsOptions) -> TritonTts:
        return TritonTts(self._stub, self._model("tts"), options)

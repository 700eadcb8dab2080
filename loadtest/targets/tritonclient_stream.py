"""The ``tritonclient`` target: Triton through tritonclient's own streaming client.

A comparison path for the performance record, not a recommended client: per stream one
``InferenceServerClient`` (its own channel), ``start_stream`` (a thread that reads the stream and
calls back) and ``async_stream_infer`` (which queues the request for the stream's request
iterator). The callback hands each response to the event loop with ``call_soon_threadsafe``,
stamped in the callback thread when it arrived. The same requests as the ``triton`` target,
built with tritonclient's ``InferInput``; STT only. ``stop_stream`` joins the thread, so closing
runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2_grpc

from loadtest.events import Ended, Event
from loadtest.targets.base import SttOptions, TargetError, TtsOptions
from loadtest.targets.triton import stt_events
from loadtest.targets.triton_requests import ModelInfo, decode_infer, model_info

_Item = tuple[float, Any, Any]


class TritonClientStt:
    def __init__(self, address: str, model: ModelInfo, sequence_id: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._model, self._seq = model, sequence_id
        self._client = tc.InferenceServerClient(address)
        self._client.start_stream(callback=self._callback)
        self._requests = self._answered = self._compute_us = 0
        self._finished = self._closed = False
        self._pending: list[Event] = []
        self._ended: Ended | None = None

    def _callback(self, result: Any, error: Any) -> None:
        # The stream's own thread: only hand over.
        item = (time.monotonic(), result, error)
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _send(self, pcm: bytes, control: dict[str, Any] | None = None, **flags: bool) -> None:
        lead = [1] if self._model.batched else []
        audio = tc.InferInput("AUDIO", [*lead, len(pcm) // 2], "INT16")
        audio.set_data_from_numpy(np.frombuffer(pcm, dtype="<i2").reshape([*lead, -1]))
        inputs = [audio]
        if control is not None:
            ctrl = tc.InferInput("CONTROL", [*lead, 1], "BYTES")
            value = np.array([json.dumps(control).encode()], dtype=np.object_)
            ctrl.set_data_from_numpy(value.reshape([*lead, 1]))
            inputs.append(ctrl)
        self._requests += 1
        # Queues the request for the stream's request iterator; does not block.
        self._client.async_stream_infer(
            self._model.name,
            inputs,
            sequence_id=self._seq,
            enable_empty_final_response=True,
            **flags,
        )

    def begin(self, interim_results: bool) -> None:
        control = {"config": {"interim_results": interim_results}}
        self._send(b"", control, sequence_start=True)

    async def send_audio(self, pcm: bytes) -> None:
        if self._ended is None:
            self._send(pcm)

    async def finish(self) -> None:
        self._finished = True
        if self._ended is None:
            self._send(b"", sequence_end=True)

    async def next_event(self) -> Event:
        while True:
            if self._pending:
                return self._pending.pop(0)
            if self._ended is not None:
                await self._close()
                return self._ended
            at, result, error = await self._queue.get()
            if error is not None:
                self._ended = Ended(at, "TRITON_ERROR", type(error).__name__)
                continue
            response = result.get_response()
            decoded = decode_infer(response)
            events, failed = stt_events(at, decoded)
            self._pending.extend(events)
            self._compute_us += decoded.compute_us
            self._answered += decoded.final
            if failed is not None:
                self._ended = failed
            elif self._finished and self._answered >= self._requests:
                self._ended = Ended(at, "OK", "", {"compute": self._compute_us})

    async def _close(self) -> None:
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._client.close)

    def cancel(self) -> None:
        if not self._closed:
            self._closed = True
            # In a worker thread: stop_stream joins the stream's thread.
            self._loop.run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._client.stop_stream(cancel_requests=True)  # does not wait for pending requests
        self._client.close()


class TritonClientTarget:
    name = "tritonclient"

    def __init__(self, address: str, *, stt_model: str, models_from: str = "") -> None:
        self.address = address
        self._models_from = models_from or address
        self._stt_model = stt_model
        self._model: ModelInfo | None = None
        self._next_seq = 0

    async def start(self) -> None:
        import random

        import grpc

        if not self._stt_model:
            raise TargetError("the tritonclient target needs stt.model")
        self._next_seq = random.getrandbits(40) << 20
        async with grpc.aio.insecure_channel(self._models_from) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            self._model = await model_info(stub, self._stt_model)

    async def close(self) -> None:
        return None

    async def open_stt(self, options: SttOptions) -> TritonClientStt:
        assert self._model is not None, "target not started"
        self._next_seq += 1
        stream = TritonClientStt(self.address, self._model, self._next_seq)
        stream.begin(options.interim_results)
        return stream

    async def open_tts(self, options: TtsOptions) -> Any:
        raise NotImplementedError("the tritonclient target drives STT sequences only")

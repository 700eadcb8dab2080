"""Talk to the voxwire Triton models directly: KServe v2 ``ModelStreamInfer`` on grpc.aio.

Raw generated stubs (``tritonclient.grpc.service_pb2*``), no tritonclient thread API; every await
has a timeout. Encodings follow the KServe v2 gRPC protocol: fixed-size tensors travel as
little-endian bytes in ``raw_input_contents``/``raw_output_contents``; ``BYTES`` tensors as a
4-byte little-endian length before each element.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

STEP_TIMEOUT_S = 30.0  # bound on any single await against the server

Event = dict[str, Any]


class TritonStreamError(RuntimeError):
    """Triton answered a request with an in-band error_message."""


def encode_bytes(elements: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def decode_bytes(raw: bytes) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        elements.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return elements


def _add_input(
    request: service_pb2.ModelInferRequest, name: str, datatype: str, shape: list[int], raw: bytes
) -> None:
    tensor = request.inputs.add()
    tensor.name = name
    tensor.datatype = datatype
    tensor.shape.extend(shape)
    request.raw_input_contents.append(raw)


def stt_request(
    model: str,
    sequence_id: int,
    *,
    audio: np.ndarray | None = None,
    control: dict[str, Any] | None = None,
    start: bool = False,
    end: bool = False,
    request_id: str = "",
) -> service_pb2.ModelInferRequest:
    """One request of an STT sequence. STT models batch (max_batch_size > 0), so every input
    carries a leading batch dimension of 1."""
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    request.parameters["sequence_id"].int64_param = sequence_id
    request.parameters["sequence_start"].bool_param = start
    request.parameters["sequence_end"].bool_param = end
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    pcm = np.zeros(0, np.int16) if audio is None else np.asarray(audio, dtype=np.int16)
    _add_input(request, "AUDIO", "INT16", [1, pcm.size], pcm.astype("<i2").tobytes())
    if control is not None:
        _add_input(
            request, "CONTROL", "BYTES", [1, 1], encode_bytes([json.dumps(control).encode()])
        )
    return request


def tts_request(
    model: str, text: str, config: dict[str, Any], *, request_id: str = ""
) -> service_pb2.ModelInferRequest:
    """One synthesis unit (TTS models do not batch: shapes are exactly the config dims)."""
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    _add_input(request, "TEXT", "BYTES", [1], encode_bytes([text.encode("utf-8")]))
    _add_input(request, "CONFIG", "BYTES", [1], encode_bytes([json.dumps(config).encode()]))
    return request


@dataclass(frozen=True, slots=True)
class ModelResponse:
    request_id: str
    events: list[Event]
    audio: np.ndarray  # int16, empty when the response has no AUDIO
    compute_us: int | None
    final: bool
    received_at: float  # time.monotonic() when the client read it


def decode_response(message: service_pb2.ModelStreamInferResponse) -> ModelResponse:
    """Raises TritonStreamError for an in-band error."""
    if message.error_message:
        raise TritonStreamError(message.error_message)
    infer = message.infer_response
    events: list[Event] = []
    audio = np.zeros(0, np.int16)
    compute_us = None
    for output, raw in zip(infer.outputs, infer.raw_output_contents, strict=True):
        if output.name == "EVENTS":
            events = [json.loads(e) for e in decode_bytes(raw)]
        elif output.name == "AUDIO":
            audio = np.frombuffer(raw, dtype="<i2").astype(np.int16)
        elif output.name == "COMPUTE_US":
            compute_us = int(np.frombuffer(raw, dtype="<u8")[0])
    return ModelResponse(
        request_id=infer.id,
        events=events,
        audio=audio,
        compute_us=compute_us,
        final=infer.parameters["triton_final_response"].bool_param,
        received_at=time.monotonic(),
    )


class ModelStream:
    """One ``ModelStreamInfer`` call: write requests, read responses, each await bounded."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float = 120.0) -> None:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        self._call = stub.ModelStreamInfer(timeout=timeout)

    async def send(self, request: service_pb2.ModelInferRequest) -> None:
        await asyncio.wait_for(self._call.write(request), STEP_TIMEOUT_S)

    async def read(self) -> ModelResponse:
        message = await asyncio.wait_for(self._call.read(), STEP_TIMEOUT_S)
        if message is grpc.aio.EOF:
            raise TritonStreamError("stream ended before the final response")
        return decode_response(message)

    async def until_final(self) -> list[ModelResponse]:
        """Responses of the oldest unanswered request, up to and including its final one."""
        responses = []
        while True:
            response = await self.read()
            responses.append(response)
            if response.final:
                return responses

    async def request(self, request: service_pb2.ModelInferRequest) -> list[ModelResponse]:
        await self.send(request)
        return await self.until_final()

    async def close(self) -> None:
        await asyncio.wait_for(self._call.done_writing(), STEP_TIMEOUT_S)
        self._call.cancel()

    def cancel(self) -> None:
        self._call.cancel()


def events_of(responses: Sequence[ModelResponse], event_type: str | None = None) -> list[Event]:
    """All events of these responses in order, optionally only one type."""
    events = [e for r in responses for e in r.events]
    return [e for e in events if event_type is None or e["type"] == event_type]


def audio_of(responses: Sequence[ModelResponse]) -> np.ndarray:
    parts = [r.audio for r in responses if r.audio.size]
    return np.concatenate(parts) if parts else np.zeros(0, np.int16)


class SttSequence:
    """One STT sequence on its own stream; each call is one request and its final response."""

    def __init__(self, channel: grpc.aio.Channel, model: str, sequence_id: int) -> None:
        self.model = model
        self.sequence_id = sequence_id
        self.stream = ModelStream(channel)
        self.responses: list[ModelResponse] = []

    async def start(
        self, config: dict[str, Any] | None = None, audio: np.ndarray | None = None
    ) -> list[Event]:
        control = {"config": config} if config is not None else None
        return await self._request(audio=audio, control=control, start=True)

    async def send(
        self,
        audio: np.ndarray | None = None,
        control: dict[str, Any] | None = None,
        end: bool = False,
    ) -> list[Event]:
        return await self._request(audio=audio, control=control, end=end)

    async def _request(self, **fields: Any) -> list[Event]:
        request = stt_request(self.model, self.sequence_id, **fields)
        responses = await self.stream.request(request)
        self.responses += responses
        return events_of(responses)

    async def close(self) -> None:
        await self.stream.close()

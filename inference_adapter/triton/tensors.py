"""KServe v2 request/response tensors for voxwire models (see docs/design/spine.md).

Pure functions over the generated ``inference`` messages that tritonclient ships. Tensor data
travels in ``raw_input_contents`` / ``raw_output_contents`` (KServe v2 gRPC: raw little-endian
bytes; a BYTES element is a 4-byte little-endian length followed by the bytes).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from tritonclient.grpc import service_pb2

from voxwire.errors import BackendUnavailable, ModelError

_LEN = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_FINAL = "triton_final_response"
# Triton's in-band error for a request of a sequence its sequence batcher does not know: the
# server restarted, or the sequence idled out (max_sequence_idle_microseconds). The stream's
# state is gone; a new stream can work, so it is retryable, not the client's fault.
_UNKNOWN_SEQUENCE = "must specify the START flag on the first request of the sequence"


def encode_bytes_tensor(items: Sequence[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(item)) + item for item in items)


def decode_bytes_tensor(raw: bytes) -> list[bytes]:
    """Split a serialized BYTES tensor. Raises ModelError when the framing is broken."""
    out: list[bytes] = []
    pos = 0
    view = memoryview(raw)
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise ModelError("truncated BYTES tensor from the model")
        (n,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + n > len(raw):
            raise ModelError("truncated BYTES tensor element from the model")
        out.append(bytes(view[pos : pos + n]))
        pos += n
    return out


class ModelResponse(NamedTuple):
    """One response of a voxwire model, decoded. A NamedTuple, not a frozen dataclass: one is
    made per model response, and a frozen dataclass's ``__init__`` (``object.__setattr__`` per
    field) cost more than the rest of the decoding (``parse_response``)."""

    events: tuple[dict[str, Any], ...]
    compute_us: int
    audio: np.ndarray | None  # int16, TTS only
    final: bool  # triton_final_response: the request is fully answered


def _shape(n: int, batched: bool) -> list[int]:
    return [1, n] if batched else [n]


def _bytes_input(
    request: service_pb2.ModelInferRequest, name: str, value: bytes, batched: bool
) -> None:
    tensor = request.inputs.add()
    tensor.name = name
    tensor.datatype = "BYTES"
    tensor.shape.extend(_shape(1, batched))
    request.raw_input_contents.append(encode_bytes_tensor([value]))


def stt_request(
    model: str,
    sequence_id: int,
    audio: np.ndarray,
    *,
    control: dict[str, Any] | None = None,
    start: bool = False,
    end: bool = False,
    batched: bool = True,
    request_id: str = "",
) -> service_pb2.ModelInferRequest:
    """A request of an STT sequence: int16 ``audio`` plus an optional JSON ``control``."""
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    params = request.parameters
    params["sequence_id"].int64_param = sequence_id  # KServe v2: int64 or string
    params["sequence_start"].bool_param = start
    params["sequence_end"].bool_param = end
    # Ask Triton for an (empty) final response so every request's end is visible.
    params["triton_enable_empty_final_response"].bool_param = True
    tensor = request.inputs.add()
    tensor.name = "AUDIO"
    tensor.datatype = "INT16"
    tensor.shape.extend(_shape(int(audio.size), batched))
    request.raw_input_contents.append(audio.astype("<i2", copy=False).tobytes())
    if control is not None:
        _bytes_input(request, "CONTROL", json.dumps(control).encode(), batched)
    return request


def tts_request(
    model: str, text: str, config: dict[str, Any], *, request_id: str = ""
) -> service_pb2.ModelInferRequest:
    """A request for one synthesis unit."""
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    _bytes_input(request, "TEXT", text.encode(), batched=False)
    _bytes_input(request, "CONFIG", json.dumps(config).encode(), batched=False)
    return request


def parse_response(msg: service_pb2.ModelStreamInferResponse) -> ModelResponse:
    """Decode one streamed response. Raises ModelError for an in-band Triton error, or
    BackendUnavailable when Triton no longer knows the request's sequence."""
    if msg.error_message:
        if _UNKNOWN_SEQUENCE in msg.error_message:
            raise BackendUnavailable(
                "the model server no longer knows this stream's sequence "
                "(it restarted, or the stream was idle too long)"
            )
        raise ModelError(f"model server error: {msg.error_message}")
    resp = msg.infer_response
    params = resp.parameters
    final = params[_FINAL].bool_param if _FINAL in params else True
    events: tuple[dict[str, Any], ...] = ()
    compute_us = 0
    audio = None
    # This runs once per model response: the repeated fields are read once each (every access
    # makes a wrapper), and a tensor without raw contents is ignored, as zip() would.
    outputs, raws = resp.outputs, resp.raw_output_contents
    for i in range(min(len(outputs), len(raws))):
        name = outputs[i].name
        if name == "EVENTS":
            try:
                # str, not bytes: json.loads(bytes) first guesses the encoding (UTF-8 here).
                events = tuple([json.loads(item.decode()) for item in decode_bytes_tensor(raws[i])])
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError both
                raise ModelError(f"model sent malformed EVENTS: {exc}") from exc
        elif name == "COMPUTE_US":
            raw = raws[i]
            if len(raw) >= 8:
                (compute_us,) = _U64.unpack_from(raw)
        elif name == "AUDIO":
            audio = np.frombuffer(raws[i], dtype="<i2")
    return ModelResponse(events, compute_us, audio, final)

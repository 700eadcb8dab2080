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
# Little-endian int16 (KServe v2 raw tensors), as a dtype object: numpy parses a dtype string
# on every call, a visible share of the per-chunk work (BENCHMARKS.md, adapter CPU).
PCM16 = np.dtype("<i2")
_U64 = struct.Struct("<Q")
_FINAL = "triton_final_response"
# Triton's in-band error for a request of a sequence its sequence batcher does not know: the
# server restarted, or the sequence idled out (max_sequence_idle_microseconds). The stream's
# state is gone; a new stream can work, so it is retryable, not the client's fault.
_UNKNOWN_SEQUENCE = "must specify the START flag on the first request of the sequence"
# Triton's in-band error for a request of a model it no longer serves (unloaded, or being
# reloaded, in explicit model control): that replica cannot serve the stream, another may
# (failover), so it is BACKEND_UNAVAILABLE. It was MODEL_ERROR, not retryable, and the stream
# failed though another replica had the model ready.
_UNKNOWN_MODEL = "Request for unknown model"


_DECODER = json.JSONDecoder()


def _json(text: str) -> Any:
    """``json.loads(text)`` for a str, at half its cost on a model's compact JSON: the
    decoder's ``raw_decode`` alone, and ``json.loads`` (whitespace around the value, or
    its exact error) only when that does not take the whole text."""
    try:
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def encode_bytes_tensor(items: Sequence[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(item)) + item for item in items)


def decode_bytes_tensor(raw: bytes) -> list[bytes]:
    """Split a serialized BYTES tensor. Raises ModelError when the framing is broken."""
    if len(raw) >= 4 and _LEN.unpack_from(raw)[0] == len(raw) - 4:
        return [raw[4:]]  # one element: what a model's response holds (once per response)
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
    request.raw_input_contents.append(audio.astype(PCM16, copy=False).tobytes())
    if control is not None:
        _bytes_input(request, "CONTROL", json.dumps(control).encode(), batched)
    return request


def _varint(value: int) -> bytes:
    """A protobuf base-128 varint (non-negative values)."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (``tag`` is the field number's key byte, wire type 2)."""
    return bytes((tag,)) + _varint(len(payload)) + payload


# Key bytes of the fields written by hand (protobuf encoding: field number << 3 | wire type 2):
# ModelInferRequest.inputs (5), .raw_input_contents (7); InferInputTensor.name (1), .datatype
# (2), .shape (3, packed).
_INPUTS, _RAW_INPUT, _NAME, _DATATYPE, _SHAPE = 0x2A, 0x3A, 0x0A, 0x12, 0x1A
_AUDIO_TENSOR = _delimited(_NAME, b"AUDIO") + _delimited(_DATATYPE, b"INT16")


class SequenceRequests:
    """The serialized requests of one STT sequence, as they go on the wire.

    A plain audio request (no control, neither START nor END) is what a stream sends once per
    chunk. Its bytes are joined from a prefix serialized once per sequence (model name and the
    sequence parameters) and the audio tensor, instead of a ``ModelInferRequest`` built and
    serialized per chunk (5.3 us against 1.6 us for 100 ms of audio, BENCHMARKS.md, "The
    adapter's CPU per message"). The bytes parse to exactly the message ``stt_request`` builds
    (tests/inference_adapter/test_tensors.py compares them for every varint width); every
    other request is built by ``stt_request``.
    """

    __slots__ = ("model", "sequence_id", "batched", "_prefix", "_tensors")

    def __init__(self, model: str, sequence_id: int, *, batched: bool) -> None:
        self.model = model
        self.sequence_id = sequence_id
        self.batched = batched
        header = stt_request(model, sequence_id, np.zeros(0, dtype="<i2"), batched=batched)
        del header.inputs[:]
        del header.raw_input_contents[:]
        self._prefix = header.SerializeToString()
        self._tensors: dict[int, bytes] = {}  # samples -> the AUDIO input of that shape

    def encode(
        self,
        audio: np.ndarray,
        control: dict[str, Any] | None = None,
        *,
        start: bool = False,
        end: bool = False,
    ) -> bytes:
        if control is not None or start or end:
            return stt_request(
                self.model,
                self.sequence_id,
                audio,
                control=control,
                start=start,
                end=end,
                batched=self.batched,
            ).SerializeToString()
        samples = int(audio.size)
        tensor = self._tensors.get(samples)
        if tensor is None:
            shape = b"".join(_varint(d) for d in _shape(samples, self.batched))
            tensor = _delimited(_INPUTS, _AUDIO_TENSOR + _delimited(_SHAPE, shape))
            if len(self._tensors) < 8:  # chunk sizes of a stream: a few at most
                self._tensors[samples] = tensor
        raw = audio.astype(PCM16, copy=False).tobytes()
        return b"".join((self._prefix, tensor, bytes((_RAW_INPUT,)), _varint(len(raw)), raw))


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
    BackendUnavailable when Triton no longer knows the request's sequence or model."""
    if msg.error_message:
        if _UNKNOWN_SEQUENCE in msg.error_message:
            raise BackendUnavailable(
                "the model server no longer knows this stream's sequence "
                "(it restarted, or the stream was idle too long)"
            )
        if msg.error_message.startswith(_UNKNOWN_MODEL):
            raise BackendUnavailable(
                f"the model server no longer serves the model: {msg.error_message[:200]}"
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
                events = tuple([_json(item.decode()) for item in decode_bytes_tensor(raws[i])])
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError both
                raise ModelError(f"model sent malformed EVENTS: {exc}") from exc
        elif name == "COMPUTE_US":
            raw = raws[i]
            if len(raw) >= 8:
                (compute_us,) = _U64.unpack_from(raw)
        elif name == "AUDIO":
            audio = np.frombuffer(raws[i], dtype=PCM16)
    return ModelResponse(events, compute_us, audio, final)

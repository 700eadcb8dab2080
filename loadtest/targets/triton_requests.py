"""KServe v2 requests and responses for voxwire's Triton models, for the load tester.

The same interface the adapter uses (docs/contract.md, "Implementing a model on Triton"), built
here on the generated ``inference`` messages that tritonclient ships, so the tool needs nothing
from ``inference_adapter``. Tensor data travels raw: ``raw_input_contents`` little-endian
bytes; a BYTES element is a 4-byte little-endian length and the bytes (KServe v2 gRPC).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from loadtest.targets.base import TargetError

_LEN = struct.Struct("<I")
_U64 = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    batched: bool  # max_batch_size > 0: every tensor has a leading batch dimension of 1
    rate_hz: int  # voxwire.sample_rate_hz


async def model_info(stub: service_pb2_grpc.GRPCInferenceServiceStub, name: str) -> ModelInfo:
    """Read a model's config. Raises TargetError when the server or the model is missing."""
    try:
        reply = await stub.ModelConfig(service_pb2.ModelConfigRequest(name=name), timeout=10.0)
    except grpc.aio.AioRpcError as exc:
        raise TargetError(f"model {name!r}: {exc.code().name} {exc.details()}") from exc
    config = reply.config
    rate = config.parameters.get("voxwire.sample_rate_hz")
    return ModelInfo(name, config.max_batch_size > 0, int(rate.string_value) if rate else 16000)


def _bytes(items: list[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(item)) + item for item in items)


def _add(request: Any, name: str, datatype: str, shape: list[int], raw: bytes) -> None:
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = name, datatype
    tensor.shape.extend(shape)
    request.raw_input_contents.append(raw)


def stt_request(
    model: ModelInfo,
    sequence_id: int,
    pcm: bytes,
    *,
    control: dict[str, Any] | None = None,
    start: bool = False,
    end: bool = False,
) -> service_pb2.ModelInferRequest:
    """One request of an STT sequence: PCM16 ``pcm`` and an optional JSON CONTROL."""
    request = service_pb2.ModelInferRequest(model_name=model.name)
    params = request.parameters
    params["sequence_id"].int64_param = sequence_id
    params["sequence_start"].bool_param = start
    params["sequence_end"].bool_param = end
    # An (empty) final response for every request makes each request's end visible.
    params["triton_enable_empty_final_response"].bool_param = True
    lead = [1] if model.batched else []
    _add(request, "AUDIO", "INT16", [*lead, len(pcm) // 2], pcm)
    if control is not None:
        _add(request, "CONTROL", "BYTES", [*lead, 1], _bytes([json.dumps(control).encode()]))
    return request


def tts_request(model: ModelInfo, text: str, config: dict[str, Any]) -> Any:
    """One synthesis unit."""
    request = service_pb2.ModelInferRequest(model_name=model.name)
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    _add(request, "TEXT", "BYTES", [1], _bytes([text.encode()]))
    _add(request, "CONFIG", "BYTES", [1], _bytes([json.dumps(config).encode()]))
    return request


@dataclass(frozen=True, slots=True)
class Decoded:
    events: list[dict[str, Any]]
    audio_samples: int
    compute_us: int
    final: bool
    error: str  # Triton's in-band error_message


def decode(message: Any) -> Decoded:
    """A ``ModelStreamInferResponse``; malformed tensors raise ValueError."""
    return decode_infer(message.infer_response, message.error_message)


def decode_infer(response: Any, error: str = "") -> Decoded:
    """A ``ModelInferResponse`` (and the stream's in-band error, if any)."""
    if error:
        return Decoded([], 0, 0, True, error)
    final_param = response.parameters.get("triton_final_response")
    final = bool(final_param.bool_param) if final_param is not None else True
    events: list[dict[str, Any]] = []
    samples = compute = 0
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=False):
        if tensor.name == "EVENTS":
            pos = 0
            while pos + 4 <= len(raw):
                (n,) = _LEN.unpack_from(raw, pos)
                events.append(json.loads(raw[pos + 4 : pos + 4 + n]))
                pos += 4 + n
        elif tensor.name == "AUDIO":
            samples = len(raw) // 2
        elif tensor.name == "COMPUTE_US" and len(raw) >= 8:
            (compute,) = _U64.unpack_from(raw, 0)
    return Decoded(events, samples, compute, final, "")

"""parse_response: what a model's streamed response decodes to, and how a bad one fails."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from inference_adapter.triton.tensors import encode_bytes_tensor, parse_response
from voxwire.errors import BackendUnavailable, ModelError


def response(
    outputs: list[tuple[str, bytes]], *, final: bool | None = None, raws: int | None = None
) -> service_pb2.ModelStreamInferResponse:
    """A response with ``outputs`` (name, raw contents); ``raws`` keeps only that many raw
    contents (a model that sent fewer than it declared)."""
    msg = service_pb2.ModelStreamInferResponse()
    resp = msg.infer_response
    if final is not None:
        resp.parameters["triton_final_response"].bool_param = final
    for name, _ in outputs:
        resp.outputs.add(name=name)
    for _, raw in outputs[:raws]:
        resp.raw_output_contents.append(raw)
    # Off the wire, as the adapter gets it.
    return service_pb2.ModelStreamInferResponse.FromString(msg.SerializeToString())


def events(*items: dict) -> bytes:
    return encode_bytes_tensor([json.dumps(item).encode() for item in items])


def test_events_compute_time_and_the_final_flag_decode():
    got = parse_response(
        response(
            [
                ("EVENTS", events({"type": "interim", "text": "héllo"}, {"type": "final"})),
                ("COMPUTE_US", struct.pack("<Q", 2345)),
            ],
            final=False,
        )
    )
    assert got.events == ({"type": "interim", "text": "héllo"}, {"type": "final"})
    assert (got.compute_us, got.audio, got.final) == (2345, None, False)


def test_audio_decodes_and_a_response_without_the_final_flag_is_final():
    pcm = np.arange(-5, 5, dtype="<i2")
    got = parse_response(response([("AUDIO", pcm.tobytes())]))
    assert got.final and got.events == () and got.compute_us == 0
    assert got.audio is not None and got.audio.tolist() == pcm.tolist()


def test_outputs_without_raw_contents_are_ignored():
    got = parse_response(
        response([("EVENTS", events({"type": "x"})), ("COMPUTE_US", b"\1" * 8)], raws=1)
    )
    assert got.events == ({"type": "x"},) and got.compute_us == 0


@pytest.mark.parametrize(
    "raw",
    [
        encode_bytes_tensor([b"{not json"]),
        encode_bytes_tensor([b'{"text": "\xff\xfe"}']),  # not UTF-8
        encode_bytes_tensor([b"{}"])[:-1],  # truncated element
    ],
    ids=["bad-json", "bad-utf8", "truncated"],
)
def test_malformed_events_are_a_model_error(raw: bytes):
    with pytest.raises(ModelError, match="EVENTS|truncated"):
        parse_response(response([("EVENTS", raw)]))


def test_in_band_errors():
    msg = service_pb2.ModelStreamInferResponse(error_message="boom")
    with pytest.raises(ModelError, match="boom"):
        parse_response(msg)
    msg.error_message = (
        "inference request for sequence 7 to model 'bench_stt' must specify the START flag on "
        "the first request of the sequence"
    )
    with pytest.raises(BackendUnavailable, match="no longer knows"):
        parse_response(msg)

"""parse_response: what a model's streamed response decodes to, and how a bad one fails."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from inference_adapter.triton.tensors import (
    SequenceRequests,
    encode_bytes_tensor,
    parse_response,
    stt_request,
)
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
    # A model unloaded on this replica (explicit model control): another replica may have it,
    # so the stream fails over; it was MODEL_ERROR, not retryable.
    msg.error_message = "Request for unknown model: 'stt_pocketsphinx' has no available versions"
    with pytest.raises(BackendUnavailable, match="no longer serves the model"):
        parse_response(msg)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("samples", [0, 1, 127, 128, 1600, 16000, 40000])
def test_a_sequences_serialized_audio_request_is_the_message_stt_request_builds(batched, samples):
    # SequenceRequests joins the hot path's bytes by hand: they must parse to exactly what the
    # message-built request is, for every shape (varints of one to three bytes).
    pcm = (np.arange(samples) % 2000 - 1000).astype("<i2")
    enc = SequenceRequests("bench_stt", 2**40 + 7, batched=batched)
    for _ in range(2):  # the second from the per-shape cache
        got = service_pb2.ModelInferRequest.FromString(enc.encode(pcm))
        assert got == stt_request("bench_stt", 2**40 + 7, pcm, batched=batched)


def test_a_sequences_other_requests_are_built_as_messages():
    enc = SequenceRequests("m", 5, batched=True)
    pcm = np.arange(10, dtype="<i2")
    for kw in ({"start": True}, {"end": True}, {"control": {"finalize": "f1"}}):
        got = service_pb2.ModelInferRequest.FromString(enc.encode(pcm, **kw))
        assert got == stt_request("m", 5, pcm, batched=True, **kw)


def test_events_decode_as_json_loads_would_whitespace_and_all():
    for text, want in ((' {"type": "x"} ', {"type": "x"}), ('{"a":[1,2]}', {"a": [1, 2]})):
        got = parse_response(response([("EVENTS", encode_bytes_tensor([text.encode()]))]))
        assert got.events == (want,)
    for bad in ('{"a": 1} x', "", '{"a": 1}{"b": 2}'):
        with pytest.raises(ModelError, match="EVENTS"):
            parse_response(response([("EVENTS", encode_bytes_tensor([bad.encode()]))]))

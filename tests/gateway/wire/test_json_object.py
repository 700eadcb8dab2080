"""The edge's JSON encoder equals protobuf's own printer (``json_format.MessageToDict``) on
every edge message, filled at random: every field kind (32- and 64-bit integers, floats with
NaN and infinities, float32 values that print short, bytes, open enums with unknown numbers,
nested and repeated messages, well-known types, oneofs, proto3 ``optional`` presence)."""

from __future__ import annotations

import json
import random
import string

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from voxwire.edge.messages import encode, to_json_object
from voxwire.edge.v1 import http_pb2, session_pb2, stt_pb2, tts_pb2

ENVELOPES = [
    stt_pb2.SttServerMessage,
    stt_pb2.SttClientMessage,
    tts_pb2.TtsServerMessage,
    tts_pb2.TtsClientMessage,
    session_pb2.SessionSummary,
    *(getattr(http_pb2, name) for name in http_pb2.DESCRIPTOR.message_types_by_name),
]
_FLOATS = [0.0, 0.9, -1.5, 1e-7, 3.4e38, 123456.789, float("nan"), float("inf"), float("-inf")]


def _scalar(field: FieldDescriptor, rng: random.Random) -> object:
    cpp = field.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return rng.random() < 0.5
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            return rng.randbytes(rng.randint(0, 12))
        letters = string.printable + "éß漢\u2028"
        return "".join(rng.choice(letters) for _ in range(rng.randint(0, 9)))
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return rng.choice([*numbers, 999])  # proto3 enums are open: 999 prints as a number
    if cpp in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return rng.choice([*_FLOATS, rng.uniform(-1e6, 1e6)])
    bits = 64 if cpp in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64) else 32
    unsigned = cpp in (FieldDescriptor.CPPTYPE_UINT32, FieldDescriptor.CPPTYPE_UINT64)
    low = 0 if unsigned else -(2 ** (bits - 1))
    high = 2**bits - 1 if unsigned else 2 ** (bits - 1) - 1
    return rng.choice([0, 1, low, high, rng.randint(low, high)])


def _fill(message: Message, rng: random.Random, depth: int = 0) -> None:
    descriptor: Descriptor = message.DESCRIPTOR
    for oneof in descriptor.oneofs:
        if oneof.fields and not oneof.name.startswith("_"):
            _set(message, rng.choice(oneof.fields), rng, depth)
    for field in descriptor.fields:
        if field.containing_oneof is not None and not field.containing_oneof.name.startswith("_"):
            continue
        if rng.random() < 0.6:
            _set(message, field, rng, depth)


def _set(message: Message, field: FieldDescriptor, rng: random.Random, depth: int) -> None:
    if field.message_type is not None:
        if field.message_type.full_name.startswith("google.protobuf."):
            value = getattr(message, field.name)
            if field.message_type.name == "Duration":
                value.FromMilliseconds(rng.randint(0, 10**7))
            elif field.message_type.name == "Timestamp":
                value.FromSeconds(rng.randint(0, 2 * 10**9))
            return
        if depth > 3:
            return
        if field.is_repeated:
            for _ in range(rng.randint(0, 3)):
                _fill(getattr(message, field.name).add(), rng, depth + 1)
        else:
            child = getattr(message, field.name)
            child.SetInParent()  # set even when it stays empty ({} in JSON)
            _fill(child, rng, depth + 1)
    elif field.is_repeated:
        getattr(message, field.name).extend(_scalar(field, rng) for _ in range(rng.randint(0, 3)))
    else:
        setattr(message, field.name, _scalar(field, rng))


@pytest.mark.parametrize("kind", ENVELOPES, ids=lambda k: k.DESCRIPTOR.full_name)
def test_equal_to_protobufs_printer_on_random_messages(kind: type[Message]) -> None:
    rng = random.Random(kind.DESCRIPTOR.full_name)
    for _ in range(300):
        message = kind()
        _fill(message, rng)
        want = json_format.MessageToDict(message)
        got = to_json_object(message)
        # NaN != NaN: compare the JSON texts, which print it the same way.
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), message


def test_the_wire_text_is_compact_canonical_json() -> None:
    result = stt_pb2.SttServerMessage(ack=stt_pb2.Ack(finalized_through_ms=2900))
    result.result.transcript = "naïve"
    result.result.confidence = 0.9
    assert encode(result) == (
        '{"result":{"transcript":"naïve","confidence":0.9},"ack":{"finalizedThroughMs":2900}}'
    )

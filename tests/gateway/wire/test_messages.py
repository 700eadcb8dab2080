"""Reading edge JSON: every bad input is one specific voxwire error, nothing else escapes."""

from __future__ import annotations

import json

import pytest

from gateway.wire.messages import MAX_DEPTH, decode, encode
from voxwire import errors
from voxwire.edge.v1 import stt_pb2, tts_pb2

Client = stt_pb2.SttClientMessage
Tts = tts_pb2.TtsClientMessage


def test_round_trip_is_canonical_json():
    msg = stt_pb2.SttServerMessage(ack=stt_pb2.Ack(finalized_through_ms=4200))
    text = encode(msg)
    assert text == '{"ack":{"finalizedThroughMs":4200}}'
    assert decode(text, stt_pb2.SttServerMessage, max_bytes=1000) == msg


@pytest.mark.parametrize(
    ("frame", "error", "needle"),
    [
        ("not json", errors.InvalidMessage, "not valid JSON"),
        ("[1, 2]", errors.InvalidMessage, "JSON object"),
        ('{"bogus": {}}', errors.InvalidMessage, "unknown field 'bogus'"),
        ('{"finalize": {"finalizeId": 5}}', errors.InvalidMessage, "does not match"),
        ('{"keepAlive": {}, "close": {}}', errors.InvalidMessage, "multiple"),
        ('{"audio": {"data": "!!!!"}}', errors.InvalidMessage, "base64"),
        (
            '{"finalize": "f1"}',
            errors.InvalidMessage,
            "finalize must be a JSON object, not a string",
        ),
        ('{"start": {"config": 5}}', errors.InvalidMessage, "start.config must be a JSON object"),
        (b'{"keepAlive": {"\xff": 1}}', errors.InvalidMessage, "UTF-8"),
        ("[" * 100_000 + "]" * 100_000, errors.ChunkTooLarge, "exceeds"),
        (
            '{"start": {"config": {"vocabulary": [{"phrase": "x", "nope": 1}]}}}',
            errors.InvalidMessage,
            "start.config.vocabulary.nope",
        ),
    ],
)
def test_bad_input_is_a_specific_error(frame, error, needle):
    with pytest.raises(error) as caught:
        decode(frame, Client, max_bytes=65536)
    assert needle in caught.value.message


def test_deep_nesting_is_refused_without_recursion():
    deep = '{"keepAlive": ' + "[" * (MAX_DEPTH * 100) + "]" * (MAX_DEPTH * 100) + "}"
    with pytest.raises(errors.InvalidMessage, match="nested"):
        decode(deep, Client, max_bytes=10**6)
    deeper = '{"keepAlive": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(errors.InvalidMessage, match="nested"):
        decode(deeper, Client, max_bytes=10**6)


def test_errors_never_echo_a_huge_field_name():
    frame = json.dumps({"x" * 50_000: 1})
    with pytest.raises(errors.InvalidMessage) as caught:
        decode(frame, Client, max_bytes=10**6)
    assert len(caught.value.message) < 500
    assert all(len(v.field) < 100 for v in caught.value.violations)


def test_snake_case_field_names_are_accepted_too():
    msg = decode(
        '{"context_id": "c1", "close_session": {}}', tts_pb2.TtsClientMessage, max_bytes=100
    )
    assert msg.context_id == "c1" and msg.WhichOneof("message") == "close_session"


@pytest.mark.parametrize(
    ("frame", "message_type"),
    [
        # A lone surrogate escape as a name, an enum name, a string (fuzzing found each: upb
        # raised SystemError from ParseDict or from the field lookup, answered HTTP 500).
        (r'{"\ud800": {}}', Client),
        (r'{"finalize": {"finalizeId": "a\udfff"}}', Client),
        (r'{"contextId": "c", "open": {"outputFormat": {"encoding": "\uD800"}}}', Tts),
        (r'{"start": {"audioDelivery": "\udc00"}}', Tts),
        (r'{"contextId": "c", "append": {"text": "hi \ud83d"}}', Tts),
    ],
)
def test_a_lone_surrogate_escape_is_an_invalid_message(frame, message_type):
    with pytest.raises(errors.InvalidMessage, match="surrogate"):
        decode(frame, message_type, max_bytes=65536)


def test_surrogate_pairs_and_escaped_backslashes_still_parse():
    pair = decode(r'{"contextId": "c", "append": {"text": "\ud83d\ude00 \\ud800"}}', Tts,
                  max_bytes=65536)  # fmt: skip
    assert pair.append.text == "\U0001f600 \\ud800"

"""Twilio Media Streams messages (voxwire.client.twilio_messages): parsed, made, refused."""

from __future__ import annotations

import base64
import json

import pytest

from voxwire import errors
from voxwire.client import twilio_messages as twilio
from voxwire.v1 import audio_pb2

START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "AC1",
        "streamSid": "MZ1",
        "callSid": "CA1",
        "tracks": ["inbound"],
        "customParameters": {"tenant": "abc"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
    "streamSid": "MZ1",
}


def test_start_media_mark_dtmf_stop_parse():
    start = twilio.parse(json.dumps(START))
    assert start == twilio.Start(
        "MZ1", "CA1", ("inbound",), audio_pb2.AUDIO_ENCODING_MULAW, 8000, 1, {"tenant": "abc"}
    )
    payload = base64.b64encode(b"\xff\x7f" * 80).decode()
    media = twilio.parse(
        json.dumps(
            {
                "event": "media",
                "media": {"track": "inbound", "chunk": "2", "timestamp": "20", "payload": payload},
            }
        )
    )
    assert media == twilio.Media("inbound", 2, 20, b"\xff\x7f" * 80)
    assert twilio.parse('{"event":"mark","mark":{"name":"vw-3"}}') == twilio.Mark("vw-3")
    assert twilio.parse('{"event":"dtmf","dtmf":{"track":"inbound_track","digit":"5"}}') == (
        twilio.Dtmf("5")
    )
    assert twilio.parse('{"event":"stop","stop":{"callSid":"CA1"}}') == twilio.Stop("CA1")
    assert twilio.parse('{"event":"connected","protocol":"Call","version":"1.0.0"}') == (
        twilio.Connected("Call", "1.0.0")
    )


def test_an_event_it_does_not_know_is_passed_on():
    event = twilio.parse('{"event":"transcription","x":1}')
    assert event == twilio.Other("transcription", {"event": "transcription", "x": 1})


def test_a_law_streams_are_taken_other_formats_refused():
    alaw = json.loads(json.dumps(START))
    alaw["start"]["mediaFormat"]["encoding"] = "audio/x-alaw"
    assert twilio.parse(json.dumps(alaw)).encoding == audio_pb2.AUDIO_ENCODING_ALAW
    l16 = json.loads(json.dumps(START))
    l16["start"]["mediaFormat"]["encoding"] = "audio/x-l16"
    with pytest.raises(errors.UnsupportedEncoding, match="audio/x-l16"):
        twilio.parse(json.dumps(l16))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "'event' string"),
        ('{"event": 5}', "'event' string"),
        ('{"event":"media"}', "'media' without its 'media' object"),
        ('{"event":"media","media":{"payload":"@@@"}}', "not base64"),
        ('{"event":"media","media":{"payload":5}}', "'payload' is not a string"),
        ('{"event":"media","media":{"payload":"","chunk":"two"}}', "'chunk' is not an integer"),
        ('{"event":"mark","mark":{}}', "'name' is not a string"),
        ('{"event":"start","start":{"streamSid":"MZ"}}', "'mediaFormat'"),
    ],
)
def test_malformed_messages_say_what_is_wrong(text: str, says: str):
    with pytest.raises(errors.InvalidMessage, match=says):
        twilio.parse(text)


def test_messages_for_twilio():
    assert json.loads(twilio.media("MZ1", b"\x00\x01")) == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": "AAE="},
    }
    assert json.loads(twilio.mark("MZ1", "vw-0")) == {
        "event": "mark",
        "streamSid": "MZ1",
        "mark": {"name": "vw-0"},
    }
    assert json.loads(twilio.clear("MZ1")) == {"event": "clear", "streamSid": "MZ1"}

"""Twilio Media Streams messages (bidirectional ``<Connect><Stream>``), sans-I/O.

Parsed from the JSON text frames Twilio sends (``parse``) and made for the ones it takes
(``media``, ``mark``, ``clear``). The names are Twilio's, from its "Media Streams - WebSocket
Messages" page; docs/design/telephony.md says how the bridge uses them.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from voxwire import errors
from voxwire.v1 import audio_pb2

# Twilio's mediaFormat.encoding names (Twilio sends mu-law; other carriers' Twilio-compatible
# streams send A-law under the same scheme).
ENCODINGS = {
    "audio/x-mulaw": audio_pb2.AUDIO_ENCODING_MULAW,
    "audio/x-alaw": audio_pb2.AUDIO_ENCODING_ALAW,
}
RATE_HZ = 8000
# G.711's code for a zero sample (ITU-T G.711 Tables 1a and 2a): what a gap is filled with.
SILENCE = {
    audio_pb2.AUDIO_ENCODING_MULAW: b"\xff",
    audio_pb2.AUDIO_ENCODING_ALAW: b"\xd5",
}


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    encoding: audio_pb2.AudioEncoding.ValueType
    sample_rate_hz: int
    channels: int
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Media:
    track: str
    chunk: int
    timestamp_ms: int
    audio: bytes


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Stop:
    call_sid: str


@dataclass(frozen=True, slots=True)
class Other:
    """An event this module does not know: passed on, not an error (Twilio adds events)."""

    event: str
    message: dict[str, Any]


TwilioEvent = Connected | Start | Media | Mark | Dtmf | Stop | Other


def _bad(what: str) -> errors.InvalidMessage:
    return errors.InvalidMessage(f"Twilio message: {what}")


def _object(message: dict[str, Any], key: str) -> dict[str, Any]:
    value = message.get(key)
    if not isinstance(value, dict):
        raise _bad(f"{message.get('event')!r} without its {key!r} object")
    return value


def _string(obj: dict[str, Any], key: str, event: str, *, required: bool = True) -> str:
    value = obj.get(key, None if required else "")
    if not isinstance(value, str):
        raise _bad(f"{event!r}: {key!r} is not a string")
    return value


def _int(obj: dict[str, Any], key: str, event: str, default: int | None = None) -> int:
    # Twilio sends chunk, timestamp and sampleRate as strings or numbers depending on the field.
    value = obj.get(key, default)
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _bad(f"{event!r}: {key!r} is not an integer") from None


def parse(text: str | bytes) -> TwilioEvent:
    """One text frame from Twilio. Raises InvalidMessage naming what is wrong."""
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"not JSON ({exc})") from None
    if not isinstance(message, dict) or not isinstance(message.get("event"), str):
        raise _bad("not an object with an 'event' string")
    event = message["event"]
    if event == "media":
        media = _object(message, "media")
        try:
            audio = base64.b64decode(_string(media, "payload", event), validate=True)
        except binascii.Error as exc:
            raise _bad(f"'media' payload is not base64 ({exc})") from None
        return Media(
            track=_string(media, "track", event, required=False) or "inbound",
            chunk=_int(media, "chunk", event, 0),
            timestamp_ms=_int(media, "timestamp", event, 0),
            audio=audio,
        )
    if event == "mark":
        return Mark(_string(_object(message, "mark"), "name", event))
    if event == "start":
        start = _object(message, "start")
        fmt = _object(start, "mediaFormat")
        name = _string(fmt, "encoding", event)
        encoding = ENCODINGS.get(name)
        if encoding is None:
            raise errors.UnsupportedEncoding(
                f"Twilio stream's media format {name!r}: the bridge takes "
                f"{', '.join(sorted(ENCODINGS))}"
            )
        tracks = start.get("tracks", ["inbound"])
        params = start.get("customParameters") or {}
        if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
            raise _bad("'start': 'tracks' is not a list of strings")
        if not isinstance(params, dict):
            raise _bad("'start': 'customParameters' is not an object")
        return Start(
            stream_sid=_string(start, "streamSid", event),
            call_sid=_string(start, "callSid", event, required=False),
            tracks=tuple(tracks),
            encoding=encoding,
            sample_rate_hz=_int(fmt, "sampleRate", event, RATE_HZ),
            channels=_int(fmt, "channels", event, 1),
            custom_parameters={str(k): str(v) for k, v in params.items()},
        )
    if event == "connected":
        return Connected(
            _string(message, "protocol", event, required=False),
            _string(message, "version", event, required=False),
        )
    if event == "dtmf":
        return Dtmf(_string(_object(message, "dtmf"), "digit", event))
    if event == "stop":
        stop = message.get("stop")
        call_sid = stop.get("callSid", "") if isinstance(stop, dict) else ""
        return Stop(call_sid if isinstance(call_sid, str) else "")
    return Other(event, message)


def media(stream_sid: str, audio: bytes) -> str:
    """Audio for Twilio to play (in the call's format), after what it already has."""
    payload = base64.b64encode(audio).decode("ascii")
    return json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


def mark(stream_sid: str, name: str) -> str:
    """Twilio echoes it once the audio sent before it has played (or been cleared)."""
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear(stream_sid: str) -> str:
    """Twilio discards the audio it has not played yet and echoes the marks among it."""
    return json.dumps({"event": "clear", "streamSid": stream_sid})

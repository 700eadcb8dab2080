"""Session options in a WebSocket URL's query string (docs/edge.md, "Query parameters").

A query string is configuration a client can send with the handshake, so audio may follow the
upgrade at once. Every parameter is checked: an unknown name or an unreadable value is
INVALID_CONFIG with a violation naming the parameter (a typo must not pass silently). A
parameter given twice is refused too (which value would win is not obvious to a reader).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import duration_pb2

from voxwire.edge.v1 import tts_pb2
from voxwire.errors import InvalidConfig, UnsupportedEncoding, Violation
from voxwire.v1 import audio_pb2, transcription_pb2

ENCODINGS = {
    "pcm_s16le": audio_pb2.AUDIO_ENCODING_PCM_S16LE,
    "linear16": audio_pb2.AUDIO_ENCODING_PCM_S16LE,
    "pcm_f32le": audio_pb2.AUDIO_ENCODING_PCM_F32LE,
    "mulaw": audio_pb2.AUDIO_ENCODING_MULAW,
    "alaw": audio_pb2.AUDIO_ENCODING_ALAW,
}
_MAX_VALUE_CHARS = 200


def parse_bool(value: str) -> bool:
    """A boolean query value: true/1/yes or false/0/no (any case). Raises ValueError."""
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError("must be true or false")


def _uint(value: str) -> int:
    try:
        number = int(value)
    except ValueError:  # its own words are Python's ("invalid literal for int() ...")
        raise ValueError(f"{value[:40]!r} is not a whole number") from None
    if not 0 <= number < 2**32:
        raise ValueError("out of range")
    return number


def parse_encoding(value: str) -> audio_pb2.AudioEncoding.ValueType:
    try:
        return ENCODINGS[value.lower()]
    except KeyError:
        raise ValueError(f"{value[:40]!r} is not one of {', '.join(ENCODINGS)}") from None


def _text(value: str) -> str:
    if len(value) > _MAX_VALUE_CHARS:
        raise ValueError(f"at most {_MAX_VALUE_CHARS} characters")
    return value


@dataclass(frozen=True, slots=True)
class _Param:
    parse: Callable[[str], Any]
    apply: Callable[[Any, Any], None]


def _set_format(attr: str) -> Callable[[transcription_pb2.TranscriptionConfig, Any], None]:
    return lambda cfg, value: setattr(cfg.audio_format, attr, value)


def _set_endpointing(attr: str) -> Callable[[transcription_pb2.TranscriptionConfig, Any], None]:
    return lambda cfg, value: setattr(cfg.endpointing, attr, value)


def _set(attr: str) -> Callable[[Any, Any], None]:
    return lambda cfg, value: setattr(cfg, attr, value)


STT_PARAMS: dict[str, _Param] = {
    "model": _Param(_text, _set("model")),
    "encoding": _Param(parse_encoding, _set_format("encoding")),
    "sample_rate": _Param(_uint, _set_format("sample_rate_hz")),
    "channels": _Param(_uint, _set_format("channels")),
    "language": _Param(_text, _set("language")),
    "interim_results": _Param(parse_bool, _set("interim_results")),
    "word_timestamps": _Param(parse_bool, _set("word_timestamps")),
    "endpointing": _Param(parse_bool, _set_endpointing("enabled")),
    "silence_ms": _Param(_uint, _set_endpointing("silence_ms")),
    "vad": _Param(_uint, _set_endpointing("vad_aggressiveness")),
    "request_id": _Param(_text, _set("request_id")),
}


# The contract's names of the config fields the STT query parameters set: an error names them
# as the client set them (docs/edge.md, "a violation's field is named as the client set it";
# errors.renamed_fields), for the WebSocket's query string and POST /v1/stt's alike.
STT_QUERY_FIELDS = {
    "config.model": "model",
    "config.language": "language",
    "config.word_timestamps": "word_timestamps",
    "config.interim_results": "interim_results",
    "config.request_id": "request_id",
    "config.audio_format.encoding": "encoding",
    "config.audio_format.sample_rate_hz": "sample_rate",
    "config.audio_format.channels": "channels",
    # The whole endpointing message (a model without endpointing refuses it): the query's
    # name for the feature, whichever of its parameters the client gave.
    "config.endpointing": "endpointing",
    "config.endpointing.enabled": "endpointing",
    "config.endpointing.silence_ms": "silence_ms",
    "config.endpointing.vad_aggressiveness": "vad",
}


def _delivery(value: str) -> int:
    table = {"binary": tts_pb2.AUDIO_DELIVERY_BINARY, "json": tts_pb2.AUDIO_DELIVERY_JSON}
    try:
        return table[value.lower()]
    except KeyError:
        raise ValueError("must be binary or json") from None


def _lead(start: tts_pb2.TtsStart, ms: int) -> None:
    start.lead.CopyFrom(duration_pb2.Duration(seconds=ms // 1000, nanos=ms % 1000 * 1_000_000))


TTS_PARAMS: dict[str, _Param] = {
    "audio": _Param(_delivery, _set("audio_delivery")),
    "lead_ms": _Param(_uint, _lead),
}


def _read(items: Iterable[tuple[str, str]], params: dict[str, _Param], target: Any) -> bool:
    """Apply every parameter to ``target``; True when there was any. Raises InvalidConfig."""
    seen: set[str] = set()
    bad: list[Violation] = []
    for name, value in items:
        shown = name if len(name) <= 40 else name[:40] + "..."
        param = params.get(name)
        if param is None:
            bad.append(Violation(shown, f"unknown query parameter; known: {', '.join(params)}"))
            continue
        if name in seen:
            bad.append(Violation(name, "given more than once"))
            continue
        seen.add(name)
        try:
            param.apply(target, param.parse(value))
        except ValueError as exc:
            bad.append(Violation(name, str(exc) or "invalid value"))
    refuse(bad)
    return bool(seen)


def refuse(bad: list[Violation]) -> None:
    """Raises the error of a query string's violations, if any: UnsupportedEncoding when the
    encoding is one of them (an encoding the contract does not carry has that reason wherever
    it is named: a start message, a socket's query, POST /v1/stt's and /v1/tts's), else
    InvalidConfig."""
    if bad:
        unsupported = any(v.field == "encoding" for v in bad)
        kind = UnsupportedEncoding if unsupported else InvalidConfig
        raise kind.of("invalid query string", bad)


def stt_config(items: Iterable[tuple[str, str]]) -> transcription_pb2.TranscriptionConfig | None:
    """The TranscriptionConfig a query string holds, or None when it holds none.

    Raises InvalidConfig (every bad parameter in one error)."""
    config = transcription_pb2.TranscriptionConfig()
    if not _read(items, STT_PARAMS, config):
        return None
    if not config.HasField("audio_format"):
        # The session starts from the query: its audio's format must be there too (it was
        # "config.audio_format is required", a field the client never saw).
        missing = "required with a config in the query string"
        raise InvalidConfig.of(
            "invalid query string",
            [Violation("encoding", missing), Violation("sample_rate", missing)],
        )
    return config


def tts_start(items: Iterable[tuple[str, str]]) -> tts_pb2.TtsStart | None:
    """TTS session options from a query string, or None. Raises InvalidConfig."""
    start = tts_pb2.TtsStart()
    return start if _read(items, TTS_PARAMS, start) else None

"""Edge messages as canonical proto3 JSON, read with limits (docs/design/edge.md, "One schema").

Every text frame, JSON body and SSE event is the canonical JSON of a ``voxwire.edge.v1``
message. Reading one is where hostile input arrives, so each step has a bound and a specific
error (always InvalidMessage unless said otherwise, never an exception of the JSON or protobuf
libraries):

1. size: over ``max_bytes`` -> ChunkTooLarge (checked on the raw frame, before any decoding);
2. UTF-8: RFC 8259 section 8.1 requires it -> InvalidMessage (the socket closes with 1007);
3. JSON syntax, and an object at the top;
4. nesting deeper than ``MAX_DEPTH`` -> InvalidMessage (json.loads alone would recurse until
   RecursionError on a 64 KiB frame of brackets);
5. the schema (``json_format.ParseDict``: unknown fields, wrong types, bad enum names, two
   members of a oneof), with the offending field in a violation;
6. base64 in bytes fields, strictly (RFC 4648 section 3.3: non-alphabet characters are an
   error; protobuf's own decoder skips them).

The gateway reads client messages strictly. A client (the SDK) reads server messages with
``ignore_unknown_fields``: fields and enum values a newer server adds are skipped, so an older
client keeps working (proto3 JSON mapping: "parsers ... may provide an option to ignore
unknown fields"); every other check still applies.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from voxwire.errors import ChunkTooLarge, InvalidMessage, Violation

M = TypeVar("M", bound=Message)

MAX_DEPTH = 32
# What an echoed field path may take in an error (errors never carry client input unbounded).
_MAX_ECHO = 200


# One encoder for every message: json.dumps with non-default options builds a new
# JSONEncoder per call, which cost more than the encoding of a small message itself.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(message: Message) -> str:
    """The canonical JSON of ``message``, compact (no spaces)."""
    return _ENCODER.encode(json_format.MessageToDict(message, preserving_proto_field_name=False))


def decode(
    frame: str | bytes,
    message_type: type[M],
    *,
    max_bytes: int,
    ignore_unknown_fields: bool = False,
) -> M:
    """Read one message. Raises ChunkTooLarge or InvalidMessage (never anything else)."""
    size = len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ChunkTooLarge(f"message of {size} bytes exceeds the limit of {max_bytes} bytes")
    if isinstance(frame, bytes):
        try:
            frame = frame.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidMessage(f"text is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(frame)
    except RecursionError:
        raise InvalidMessage(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise InvalidMessage(f"not valid JSON: {_clip(str(exc))}") from None
    if not isinstance(data, dict):
        raise InvalidMessage(f"a message must be a JSON object, not {type(data).__name__}")
    if _depth(data) > MAX_DEPTH:
        raise InvalidMessage(f"JSON nested deeper than {MAX_DEPTH} levels")
    descriptor = message_type.DESCRIPTOR
    _check_fields(data, descriptor, "", ignore_unknown_fields)
    try:
        return json_format.ParseDict(
            data, message_type(), ignore_unknown_fields=ignore_unknown_fields
        )
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise InvalidMessage(f"does not match {descriptor.name}: {_clip(str(exc))}") from None


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def _check_fields(data: dict[str, Any], descriptor: Any, path: str, lenient: bool) -> None:
    """Unknown fields (with the field named in a violation; skipped when ``lenient``) and strict
    base64, before ParseDict."""
    for key, value in data.items():
        field = descriptor.fields_by_camelcase_name.get(key) or descriptor.fields_by_name.get(key)
        where = f"{path}{_clip(key, 60)}"
        if field is None and lenient:
            continue
        if field is None:
            known = ", ".join(sorted(f.camelcase_name for f in descriptor.fields))
            raise InvalidMessage(
                f"unknown field {where!r} (known: {known})",
                violations=[Violation(where, "unknown field")],
            )
        if field.message_type is not None and field.message_type.full_name.startswith(
            "google.protobuf."
        ):
            continue  # well-known types have their own JSON forms
        repeated = field.is_repeated
        items = value if repeated and isinstance(value, list) else [value]
        for item in items:
            if field.type == FieldDescriptor.TYPE_MESSAGE and isinstance(item, dict):
                _check_fields(item, field.message_type, f"{where}.", lenient)
            elif field.type == FieldDescriptor.TYPE_BYTES and isinstance(item, str):
                _check_base64(item, where)


def _check_base64(value: str, where: str) -> None:
    try:
        # Canonical JSON bytes are standard base64 with padding; the URL-safe alphabet is
        # accepted too (proto3 JSON mapping: "either standard or URL-safe").
        base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidMessage(
            f"{where} is not valid base64", violations=[Violation(where, "not valid base64")]
        ) from None


def _clip(text: str, limit: int = _MAX_ECHO) -> str:
    return text if len(text) <= limit else text[:limit] + "..."

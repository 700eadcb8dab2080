"""Edge messages as canonical proto3 JSON, read with limits (docs/design/edge.md, "One schema").

Every text frame, JSON body and SSE event is the canonical JSON of a ``voxwire.edge.v1``
message. Reading one is where hostile input arrives, so each step has a bound and a specific
error (always InvalidMessage unless said otherwise, never an exception of the JSON or protobuf
libraries):

1. size: over ``max_bytes`` -> ChunkTooLarge (checked on the raw frame, before any decoding);
2. UTF-8: RFC 8259 section 8.1 requires it -> InvalidMessage, whose close code is 1007 (RFC 6455
   8.1);
3. JSON syntax, and an object at the top;
4. nesting deeper than ``MAX_DEPTH`` -> InvalidMessage (json.loads alone would recurse until
   RecursionError on a 64 KiB frame of brackets); a lone surrogate escape (``"\\ud800"``) in
   a name or a string -> InvalidMessage (protobuf would raise SystemError on it);
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
import functools
import json
import math
import re
import struct
from collections.abc import Callable
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
    return _ENCODER.encode(to_json_object(message))


def to_json_object(message: Message) -> dict[str, Any]:
    """``json_format.MessageToDict(message)`` (lowerCamelCase names, defaults omitted), built
    from converters cached per field: the gateway encodes every result it sends, and
    MessageToDict works out again on every call how to print each field. Well-known types
    are printed by MessageToDict, and so is a whole message with a map or a closed enum (none
    in the edge protocol); tests/gateway/wire/test_json_object.py holds the two equal over
    every edge message filled at random."""
    plan = _PLANS.get(message.DESCRIPTOR)
    if plan is None:
        plan = _plan(message.DESCRIPTOR)
    if not plan:
        return json_format.MessageToDict(message)
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        name, convert = plan[field.number]
        out[name] = convert(value)
    return out


Converter = Callable[[Any], Any]
# Per message type: field number -> (JSON name, converter); empty: print it with MessageToDict.
_PLANS: dict[Any, dict[int, tuple[str, Converter]]] = {}  # by Descriptor
_INT64 = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})


def _plan(descriptor: Any) -> dict[int, tuple[str, Converter]]:
    plan: dict[int, tuple[str, Converter]] = {}
    for field in descriptor.fields:
        convert = _converter(field)
        if convert is None:
            plan = {}
            break
        plan[field.number] = (field.json_name, convert)
    _PLANS[descriptor] = plan
    return plan


def _converter(field: FieldDescriptor) -> Converter | None:
    """How to print a value of ``field``; None where only MessageToDict knows."""
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return None
    element = _element(field)
    if element is None or not field.is_repeated:
        return element
    return lambda values: [element(v) for v in values]


def _element(field: FieldDescriptor) -> Converter | None:
    cpp = field.cpp_type
    if field.message_type is not None:
        if field.message_type.full_name.startswith("google.protobuf."):
            return json_format.MessageToDict  # Duration "1.5s", Timestamp RFC 3339, ...
        return to_json_object
    enum = field.enum_type
    if enum is not None:
        if enum.is_closed or enum.full_name == "google.protobuf.NullValue":
            return None
        names = {v.number: v.name for v in enum.values}
        return lambda value: names.get(value, value)  # an unknown value of an open enum: int
    if field.type == FieldDescriptor.TYPE_BYTES:
        return lambda value: base64.b64encode(value).decode("ascii")
    if cpp in _INT64:
        return str  # 64-bit integers are strings in proto3 JSON
    if cpp == FieldDescriptor.CPPTYPE_FLOAT:
        return _float32
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        return _double
    return _same


def _same(value: Any) -> Any:
    return value


def _double(value: float) -> Any:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


_F32 = struct.Struct("<f")


@functools.lru_cache(maxsize=4096)
def _float32(value: float) -> Any:
    """The shortest decimal that reads back as the same float32, as protobuf's JSON printer
    gives it (0.9f is stored as 0.8999999761581421 and printed as 0.9). Cached: confidences
    repeat."""
    if not math.isfinite(value):
        return _double(value)
    for precision in range(6, 10):
        rounded = float(f"{value:.{precision}g}")
        if _F32.unpack(_F32.pack(rounded))[0] == value:
            return rounded
    return value


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
            error = InvalidMessage(f"text is not valid UTF-8 (byte {exc.start})")
            # RFC 6455 8.1 and 7.4.1: a text frame that is not UTF-8 fails the connection with
            # 1007 (the gateway reads text frames as bytes and answers it here, with its event).
            error.ws_close_code = 1007
            raise error from None
    try:
        data = json.loads(frame)
    except RecursionError:
        raise InvalidMessage(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise InvalidMessage(f"not valid JSON: {_clip(str(exc))}") from None
    if not isinstance(data, dict):
        raise InvalidMessage(f"a message must be a JSON object, not {type(data).__name__}")
    if _SURROGATE_ESCAPE.search(frame) is not None:
        _check_scalar_values(data)
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


# A \uD800-\uDFFF escape: json.loads joins a pair into one character but keeps a lone one as
# a surrogate, which is no Unicode scalar value (RFC 8259 section 8.2: "unpredictable");
# protobuf's upb cannot encode it and raises SystemError from deep inside ParseDict (and from
# a field lookup by such a name). Searched only for the escape, so the common message pays a
# regex scan and nothing more.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def _check_scalar_values(data: dict[str, Any]) -> None:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMessage(
            "a string holds an unpaired UTF-16 surrogate escape (\\uD800-\\uDFFF), which is "
            "not a Unicode character (RFC 8259 section 8.2)"
        ) from None


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
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if item is None:
                    continue  # proto3 JSON: null is the field's default (unset)
                if not isinstance(item, dict):
                    # ParseDict's own error for this names a field of the message that the
                    # value's characters happened to spell ('Finalize has no field named "f"').
                    raise InvalidMessage(
                        f"{where} must be a JSON object, not {_json_type(item)}",
                        violations=[Violation(where, "must be a JSON object")],
                    )
                _check_fields(item, field.message_type, f"{where}.", lenient)
            elif field.type == FieldDescriptor.TYPE_BYTES and isinstance(item, str):
                _check_base64(item, where)


def _json_type(value: Any) -> str:
    return {str: "a string", bool: "a boolean", list: "an array"}.get(type(value), "a number")


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

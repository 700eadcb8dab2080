"""The OpenAPI document of the HTTP endpoints, generated from the proto descriptors.

One schema: every JSON body is the canonical proto3 JSON of a ``voxwire.edge.v1`` or
``voxwire.v1`` message, so the component schemas are derived from the descriptors with the
proto3 JSON mapping (developers.google.com/protocol-buffers/docs/proto3#json): lowerCamelCase
names, enums by name, 64-bit integers as strings, bytes as base64 strings, Duration as a
decimal seconds string ("1.5s"), Timestamp as RFC 3339. Nothing here is written by hand
except the paths and the health probes' small bodies, so the document cannot drift from the
wire (a test checks every kind of body against it).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from gateway.wire.query import ENCODINGS
from voxwire.edge.http_errors import by_status
from voxwire.edge.v1 import http_pb2
from voxwire.v1 import capabilities_pb2, stream_pb2, synthesis_pb2

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


class _Schemas:
    def __init__(self) -> None:
        self.schemas: dict[str, dict[str, Any]] = {}

    def message(self, descriptor: Descriptor) -> dict[str, Any]:
        if descriptor.full_name in _WELL_KNOWN:
            return _WELL_KNOWN[descriptor.full_name]
        name = descriptor.full_name
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder first: messages may nest themselves
            props = {f.camelcase_name: self.field(f) for f in descriptor.fields}
            schema: dict[str, Any] = {"type": "object", "properties": props}
            schema["additionalProperties"] = False
            oneofs = [o for o in descriptor.oneofs if not o.name.startswith("_")]
            if oneofs:
                members = ", ".join(f.camelcase_name for o in oneofs for f in o.fields)
                schema["description"] = f"At most one of: {members}."
            self.schemas[name] = schema
        return _ref(name)

    def enum(self, descriptor: EnumDescriptor) -> dict[str, Any]:
        name = descriptor.full_name
        self.schemas.setdefault(
            name, {"type": "string", "enum": [v.name for v in descriptor.values]}
        )
        return _ref(name)

    def field(self, fd: FieldDescriptor) -> dict[str, Any]:
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            assert fd.message_type is not None
            if fd.message_type.GetOptions().map_entry:
                value = fd.message_type.fields_by_name["value"]
                return {"type": "object", "additionalProperties": self.field(value)}
            item = self.message(fd.message_type)
        elif fd.type == FieldDescriptor.TYPE_ENUM:
            assert fd.enum_type is not None
            item = self.enum(fd.enum_type)
        else:
            item = dict(_SCALARS[fd.type])
        return {"type": "array", "items": item} if fd.is_repeated else item


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


# The health probes' statuses (gateway/app.py answers with these).
ALIVE, READY, DRAINING, NO_ADAPTER = "ok", "ready", "draining", "no adapter serving"


def _probe(statuses: list[str], *, sessions: bool = False) -> dict[str, Any]:
    """A health probe's body (gateway/app.py: healthz, readyz), the one body that is no proto
    message: what an orchestrator's probe reads is the status code; the JSON is for people."""
    props: dict[str, Any] = {"status": {"type": "string", "enum": statuses}}
    if sessions:
        props["sessions"] = {"type": "integer", "minimum": 0}
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def document(server_url: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    s = _Schemas()
    error = {
        "description": 'An error: {"error": ErrorEvent}, its reason stable '
        "(docs/contract.md table)",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before retrying, when the error advises a "
                "wait (its retryAfterMs, rounded up)",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
        "content": _json(s.message(http_pb2.ErrorResponse.DESCRIPTOR)),
    }

    def errors(method: str, path: str) -> dict[str, Any]:
        """The statuses ``method path`` answers with an error (voxwire/edge/http_errors.py),
        each naming its reasons; ``default`` for any other a server behind it may add."""
        out: dict[str, Any] = {}
        for status, listed in by_status(method, path).items():
            names = ", ".join(listed)
            out[str(status)] = {
                **error,
                "description": f"{error['description']}; reason one of: {names}",
                "x-voxwire-reasons": listed,
            }
        out["default"] = {
            **error,
            "description": f"{error['description']}: any other the contract may add",
        }
        return out

    encodings = {"type": "string", "enum": list(ENCODINGS)}
    audio_in = {
        media: {"schema": {"type": "string", "format": "binary"}}
        for media in (
            "audio/wav",
            "audio/flac",
            "audio/ogg",
            "audio/mpeg",
            "audio/basic",
            "application/octet-stream",
        )
    }
    paths: dict[str, Any] = {
        "/v1/stt": {
            "post": {
                "summary": "Transcribe a whole file; the body streams into the model as it arrives",
                "parameters": [
                    {"name": n, "in": "query", "required": False, "schema": sch}
                    for n, sch in (
                        ("model", {"type": "string"}),
                        ("language", {"type": "string"}),
                        ("word_timestamps", {"type": "boolean"}),
                    )
                ]
                + [
                    {
                        "name": n,
                        "in": "query",
                        "required": False,
                        "schema": sch,
                        "description": "The raw samples' format (encoding and sample_rate are "
                        "required for raw samples as application/octet-stream; without them, "
                        "an octet-stream body, or one with no Content-Type, must be an audio "
                        "file, known by its first bytes). A file's format is its own "
                        "header's: given with a file, it must agree with it (400 "
                        "INVALID_CONFIG otherwise).",
                    }
                    for n, sch in (
                        ("encoding", encodings),
                        ("sample_rate", {"type": "integer"}),
                        ("channels", {"type": "integer"}),
                    )
                ],
                "requestBody": {"required": True, "content": audio_in},
                "responses": {
                    "200": {
                        "description": "The transcript: the whole response as JSON, or with "
                        "Accept: text/plain the transcript alone as a line",
                        "content": {
                            **_json(s.message(http_pb2.TranscribeFileResponse.DESCRIPTOR)),
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    },
                    **errors("POST", "/v1/stt"),
                },
            }
        },
        "/v1/tts": {
            "post": {
                "summary": "Speak text; audio streams back as it is synthesized",
                "parameters": [
                    {"name": n, "in": "query", "required": False, "schema": sch}
                    for n, sch in (
                        ("model", {"type": "string"}),
                        ("voice", {"type": "string"}),
                        ("language", {"type": "string"}),
                        ("encoding", encodings),
                        ("sample_rate", {"type": "integer"}),
                        ("container", {"type": "string", "enum": ["wav", "raw"]}),
                        ("word_timestamps", {"type": "boolean"}),
                    )
                ],
                "requestBody": {
                    "required": True,
                    "description": "At most 64 KiB (413 BODY_TOO_LARGE). Plain text goes to the "
                    "model in pieces as it is spoken, so all of it is spoken; an SSML document "
                    "goes whole, at most maxPendingTextBytes (16 KiB; 413 TEXT_TOO_LARGE)",
                    "content": {
                        **_json(s.message(http_pb2.SpeakRequest.DESCRIPTOR)),
                        "text/plain": {"schema": {"type": "string"}},
                        # An SSML document (RFC 4267), the model's subset: Features.ssml_elements.
                        "application/ssml+xml": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "200": {
                        "description": "Audio (chunked), or Server-Sent Events (notice, audio, "
                        "words, done, error) with Accept: text/event-stream; each event's data "
                        "is the JSON of the schema x-voxwire-events names for it",
                        "content": {
                            "audio/wav": {"schema": {"type": "string", "format": "binary"}},
                            "audio/basic": {"schema": {"type": "string", "format": "binary"}},
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                            "text/event-stream": {
                                "schema": {"type": "string"},
                                # OpenAPI 3.1 has no schema for an event stream's items (3.2's
                                # itemSchema): an extension names each event's, by its name.
                                "x-voxwire-events": {
                                    "notice": s.message(stream_pb2.StreamNotice.DESCRIPTOR),
                                    "audio": s.message(synthesis_pb2.AudioChunk.DESCRIPTOR),
                                    "words": s.message(synthesis_pb2.WordTimestamps.DESCRIPTOR),
                                    "done": s.message(http_pb2.SpeakDone.DESCRIPTOR),
                                    "error": s.message(http_pb2.ErrorResponse.DESCRIPTOR),
                                },
                            },
                        },
                    },
                    **errors("POST", "/v1/tts"),
                },
            }
        },
        "/v1/auth/token": {
            "post": {
                "summary": "Exchange an API key for a short-lived browser token",
                "requestBody": {
                    "required": False,
                    "content": _json(s.message(http_pb2.TokenRequest.DESCRIPTOR)),
                },
                "responses": {
                    "200": {
                        "description": "The token",
                        "content": _json(s.message(http_pb2.TokenResponse.DESCRIPTOR)),
                    },
                    **errors("POST", "/v1/auth/token"),
                },
            }
        },
        "/v1/capabilities": {
            "get": {
                "summary": "Models, formats, features and limits",
                "responses": {
                    "200": {
                        "description": "Capabilities",
                        "content": _json(
                            s.message(capabilities_pb2.GetCapabilitiesResponse.DESCRIPTOR)
                        ),
                    },
                    **errors("GET", "/v1/capabilities"),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "The process is alive",
                "security": [],
                "responses": {"200": {"description": "alive", "content": _json(_probe([ALIVE]))}},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Ready for new sessions",
                "security": [],
                "responses": {
                    "200": {
                        "description": "ready; sessions: how many this process holds",
                        "content": _json(_probe([READY], sessions=True)),
                    },
                    "503": {
                        "description": "draining, or no adapter serving",
                        "content": _json(_probe([DRAINING, NO_ADAPTER])),
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "description": "Served here unless the gateway's metrics_listen names an "
                "address of its own (then 404 here).",
                "security": [],
                "responses": {"200": {"description": "text exposition format"}},
            }
        },
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "voxwire gateway",
            "version": "v1",
            "description": "HTTP endpoints of the voxwire edge; the WebSocket endpoints are "
            "in docs/edge.md.",
        },
        "paths": paths,
        "components": {
            "schemas": s.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc

"""The voxwire error hierarchy: one class per stable reason, translated to a wire at one place.

    VoxwireError                        gRPC code            reason                  HTTP  WS
    ├── ClientError                     (the request is wrong; retrying it unchanged fails)
    │   ├── ConfigRequired              INVALID_ARGUMENT     CONFIG_REQUIRED         400   1008
    │   ├── ConfigAlreadySet            FAILED_PRECONDITION  CONFIG_ALREADY_SET      400   1008
    │   ├── InvalidConfig               INVALID_ARGUMENT     INVALID_CONFIG          400   1008
    │   ├── UnknownModel                NOT_FOUND            UNKNOWN_MODEL           404   1008
    │   ├── UnsupportedEncoding         INVALID_ARGUMENT     UNSUPPORTED_ENCODING    400   1003
    │   ├── UnsupportedSampleRate       INVALID_ARGUMENT     UNSUPPORTED_SAMPLE_RATE 400   1003
    │   ├── MisalignedAudio             INVALID_ARGUMENT     MISALIGNED_AUDIO        400   1007
    │   ├── InvalidAudio                INVALID_ARGUMENT     INVALID_AUDIO           400   1007
    │   ├── ChunkTooLarge               INVALID_ARGUMENT     CHUNK_TOO_LARGE         413   1009
    │   ├── TextTooLarge                INVALID_ARGUMENT     TEXT_TOO_LARGE          413   1009
    │   ├── BodyTooLarge                INVALID_ARGUMENT     BODY_TOO_LARGE          413   1009
    │   ├── UnsupportedMediaType        INVALID_ARGUMENT     UNSUPPORTED_MEDIA_TYPE  415   1003
    │   ├── UnknownEndpoint             NOT_FOUND            UNKNOWN_ENDPOINT        404   1008
    │   ├── MethodNotAllowed            UNIMPLEMENTED        METHOD_NOT_ALLOWED      405   1008
    │   ├── NotAcceptable               INVALID_ARGUMENT     NOT_ACCEPTABLE          406   1003
    │   ├── UnknownContext              NOT_FOUND            UNKNOWN_CONTEXT         404   1008
    │   ├── ContextNotOpen              FAILED_PRECONDITION  CONTEXT_NOT_OPEN        400   1008
    │   ├── ContextAlreadyOpen          ALREADY_EXISTS       CONTEXT_ALREADY_OPEN    409   1008
    │   ├── TooManyContexts             RESOURCE_EXHAUSTED   TOO_MANY_CONTEXTS       429   1008
    │   ├── SsmlInvalid                 INVALID_ARGUMENT     SSML_INVALID            400   1008
    │   ├── InvalidPronunciation        INVALID_ARGUMENT     INVALID_PRONUNCIATION   400   1008
    │   ├── InvalidMessage              INVALID_ARGUMENT     INVALID_MESSAGE         400   1008
    │   └── ResumeRejected              FAILED_PRECONDITION  RESUME_REJECTED         400   4011
    ├── AccessError                     (credentials; the request never reaches a model)
    │   ├── Unauthenticated             UNAUTHENTICATED      UNAUTHENTICATED         401   4001
    │   ├── PermissionDenied            PERMISSION_DENIED    PERMISSION_DENIED       403   4003
    │   └── RateLimited                 RESOURCE_EXHAUSTED   RATE_LIMITED (+Retry)   429   1013
    ├── StreamLimitError                (a limit of the stream was reached; a new stream works)
    │   ├── IdleTimeout                 DEADLINE_EXCEEDED    IDLE_TIMEOUT            408   4008
    │   ├── StreamTooLong               OUT_OF_RANGE         STREAM_TOO_LONG         400   4009
    │   └── SlowConsumer                RESOURCE_EXHAUSTED   SLOW_CONSUMER           429   4010
    └── ServerError                     (the server side failed or is busy)
        ├── Overloaded                  RESOURCE_EXHAUSTED   OVERLOADED (+Retry)     503   1013
        ├── BackendUnavailable          UNAVAILABLE          BACKEND_UNAVAILABLE     503   1013
        ├── Draining                    UNAVAILABLE          DRAINING                503   1012
        ├── ModelError                  INTERNAL             MODEL_ERROR             500   1011
        └── InternalError               INTERNAL             INTERNAL                500   1011

Each class knows its gRPC status code, its stable reason (the ``voxwire.v1.ErrorReason`` value
name without the ``ERROR_REASON_`` prefix), whether a retry can succeed, the HTTP status an HTTP
endpoint answers with, and the WebSocket close code (RFC 6455 section 7.4.1; 1012 is "service
restart" from the IANA registry; 4000-4999 are application codes). HTTP statuses follow the
google.rpc.Code mapping, except where HTTP has a more precise status (413, 415, 408) or where
the error is the server's, not the client's (OVERLOADED is 503, not 429). Nothing in this module
does I/O: ``to_rpc_status`` and ``to_proto`` build the wire forms, and each wire calls them at
exactly one boundary. ``python -m voxwire.errors`` prints the table for the docs.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from voxwire.edge.v1 import session_pb2
from voxwire.v1 import errors_pb2

DOMAIN = "voxwire.v1"

# What an error may echo back, in UTF-8 bytes. Messages and violations quote client input (a
# model name, a phrase); uncapped, a 1 MB model name or 600 bad vocabulary entries make trailers
# larger than a client accepts (grpc's default limit on received metadata is 8 KiB soft, 16 KiB
# hard), and the client gets RESOURCE_EXHAUSTED without the reason. With these caps the status
# detail stays under about 3 KiB whatever the input.
MAX_MESSAGE_BYTES = 256
MAX_FIELD_BYTES = 96
MAX_DESCRIPTION_BYTES = 128
MAX_VIOLATIONS = 8


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary), marked when cut."""
    raw = text.encode("utf-8", errors="replace")
    if len(raw) <= limit:
        return text
    return raw[: max(0, limit - 3)].decode("utf-8", errors="ignore") + "..."


@dataclass(frozen=True, slots=True)
class Violation:
    """One invalid field, as in google.rpc.BadRequest.FieldViolation (both parts capped)."""

    field: str
    description: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "field", clip(self.field, MAX_FIELD_BYTES))
        object.__setattr__(self, "description", clip(self.description, MAX_DESCRIPTION_BYTES))


class VoxwireError(Exception):
    """Base of every error that reaches a client."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"
    retryable: bool = False
    http_status: int = 500
    ws_close_code: int = 1011  # RFC 6455 7.4.1: internal error

    def __init__(
        self,
        message: str,
        *,
        violations: Sequence[Violation] = (),
        retry_delay: datetime.timedelta | None = None,
    ) -> None:
        violations = tuple(violations)
        if len(violations) > MAX_VIOLATIONS:
            # The first ones, and how many more: the client fixes those and learns the rest next.
            # The count survives the cap: the message is cut before it, not after.
            more = f" ({len(violations) - MAX_VIOLATIONS} more violations not listed)"
            message = clip(message, MAX_MESSAGE_BYTES - len(more)) + more
            violations = violations[:MAX_VIOLATIONS]
        else:
            message = clip(message, MAX_MESSAGE_BYTES)
        super().__init__(message)
        self.message = message
        self.violations = violations
        self.retry_delay = retry_delay

    @classmethod
    def of(cls, what: str, violations: Sequence[Violation]) -> VoxwireError:
        """One error of this class naming its violations (the first MAX_VIOLATIONS of them)."""
        listed = "; ".join(f"{v.field} {v.description}" for v in violations[:2])
        if len(violations) > 2:
            listed += "; ..."
        return cls(f"{what}: {listed}", violations=violations)

    def to_rpc_status(self) -> status_pb2.Status:
        """The google.rpc.Status with ErrorInfo, and RetryInfo / BadRequest where they apply."""
        details = [
            error_details_pb2.ErrorInfo(
                reason=self.reason,
                domain=DOMAIN,
                metadata={"retryable": "true" if self.retryable else "false"},
            )
        ]
        if self.retry_delay is not None:
            delay = duration_pb2.Duration()
            delay.FromTimedelta(self.retry_delay)
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        if self.violations:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in self.violations
                    ]
                )
            )
        packed = []
        for detail in details:
            holder = any_pb2.Any()
            holder.Pack(detail)
            packed.append(holder)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)

    def to_proto(self) -> errors_pb2.Error:
        """The in-band form (voxwire.v1.Error), for errors that end one TTS context."""
        error = errors_pb2.Error(
            reason=errors_pb2.ErrorReason.Value(f"ERROR_REASON_{self.reason}"),
            code=self.code.value[0],
            message=self.message,
            retryable=self.retryable,
            field_violations=[
                errors_pb2.FieldViolation(field=v.field, description=v.description)
                for v in self.violations
            ],
        )
        if self.retry_delay is not None:
            error.retry_delay.FromTimedelta(self.retry_delay)
        return error

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason}: {self.message})"


# -- the request is wrong -------------------------------------------------------------------


class ClientError(VoxwireError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    ws_close_code = 1008  # policy violation


class ConfigRequired(ClientError):
    """First message is not the config."""

    reason = "CONFIG_REQUIRED"


class ConfigAlreadySet(ClientError):
    """Config sent twice."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "CONFIG_ALREADY_SET"


class InvalidConfig(ClientError):
    """Bad fields (see violations)."""

    reason = "INVALID_CONFIG"


class UnknownModel(ClientError):
    """No model of that name and kind."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "UNKNOWN_MODEL"
    http_status = 404


class UnsupportedEncoding(ClientError):
    """Encoding not supported."""

    reason = "UNSUPPORTED_ENCODING"
    ws_close_code = 1003  # unsupported data


class UnsupportedSampleRate(ClientError):
    """Rate (or channel count) not supported."""

    reason = "UNSUPPORTED_SAMPLE_RATE"
    ws_close_code = 1003


class MisalignedAudio(ClientError):
    """Chunk not a whole number of frames."""

    reason = "MISALIGNED_AUDIO"
    ws_close_code = 1007  # invalid frame payload data


class InvalidAudio(ClientError):
    """Samples not valid for their encoding (NaN, infinity), or an undecodable audio file."""

    reason = "INVALID_AUDIO"
    ws_close_code = 1007


class ChunkTooLarge(ClientError):
    """Audio or text over `max_chunk_bytes`, or a WebSocket frame over the edge's limit."""

    reason = "CHUNK_TOO_LARGE"
    ws_close_code = 1009  # message too big
    http_status = 413


class TextTooLarge(ClientError):
    """Unsynthesized text over `max_pending_text_bytes`, or a unit over the model's limit."""

    reason = "TEXT_TOO_LARGE"
    ws_close_code = 1009
    http_status = 413


class BodyTooLarge(ClientError):
    """An HTTP request body over the endpoint's limit."""

    reason = "BODY_TOO_LARGE"
    http_status = 413
    ws_close_code = 1009


class UnsupportedMediaType(ClientError):
    """An HTTP request body of a content type the endpoint does not take."""

    reason = "UNSUPPORTED_MEDIA_TYPE"
    http_status = 415
    ws_close_code = 1003


class UnknownEndpoint(ClientError):
    """An HTTP request for a path the server does not serve."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "UNKNOWN_ENDPOINT"
    http_status = 404


class MethodNotAllowed(ClientError):
    """An HTTP request with a method its path does not take (Allow names those it takes)."""

    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "METHOD_NOT_ALLOWED"
    http_status = 405


class NotAcceptable(ClientError):
    """An HTTP request whose Accept header admits nothing the endpoint can send."""

    reason = "NOT_ACCEPTABLE"
    http_status = 406
    ws_close_code = 1003


class UnknownContext(ClientError):
    """Flush/cancel/close of a context that is not open."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "UNKNOWN_CONTEXT"
    http_status = 404


class ContextNotOpen(ClientError):
    """Text before the context's open."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "CONTEXT_NOT_OPEN"


class ContextAlreadyOpen(ClientError):
    """Open of an open context id."""

    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "CONTEXT_ALREADY_OPEN"
    http_status = 409


class TooManyContexts(ClientError):
    """More than `max_contexts_per_stream`."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "TOO_MANY_CONTEXTS"
    http_status = 429


class SsmlInvalid(ClientError):
    """Malformed or unsupported SSML."""

    reason = "SSML_INVALID"


class InvalidPronunciation(ClientError):
    """Bad pronunciation entry."""

    reason = "INVALID_PRONUNCIATION"


class InvalidMessage(ClientError):
    """A message that is empty, does not parse, or is not valid in this state."""

    reason = "INVALID_MESSAGE"


class ResumeRejected(ClientError):
    """A resume token that is malformed, forged, expired, or past the resume window."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "RESUME_REJECTED"
    ws_close_code = 4011  # application: the session cannot be resumed


# -- credentials ----------------------------------------------------------------------------


class AccessError(VoxwireError):
    pass


class Unauthenticated(AccessError):
    """No credentials, or an unknown or revoked key, or an expired token."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"
    http_status = 401
    ws_close_code = 4001  # application: 4000 + the HTTP status's last digits


class PermissionDenied(AccessError):
    """Credentials that do not allow this request (origin, token scope)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"
    http_status = 403
    ws_close_code = 4003


class RateLimited(AccessError):
    """A per-key quota (concurrent or new sessions per minute) was reached."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"
    retryable = True
    http_status = 429
    ws_close_code = 1013  # try again later


# -- a limit of the stream ------------------------------------------------------------------


class StreamLimitError(VoxwireError):
    retryable = True  # on a new stream


class IdleTimeout(StreamLimitError):
    """No message for `idle_timeout`."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "IDLE_TIMEOUT"
    http_status = 408
    ws_close_code = 4008  # application: idle timeout


class StreamTooLong(StreamLimitError):
    """`max_stream_duration` reached (pending audio is finalized first)."""

    code = grpc.StatusCode.OUT_OF_RANGE
    reason = "STREAM_TOO_LONG"
    http_status = 400
    ws_close_code = 4009  # application: maximum stream duration


class SlowConsumer(StreamLimitError):
    """The client left responses unread past `max_unread_response_bytes` or `write_timeout`."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "SLOW_CONSUMER"
    http_status = 429
    ws_close_code = 4010  # application: the client did not read in time


# -- the server side ------------------------------------------------------------------------


class ServerError(VoxwireError):
    http_status = 500


class Overloaded(ServerError):
    """Every replica is at its stream limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "OVERLOADED"
    retryable = True
    http_status = 503
    ws_close_code = 1013  # try again later


class BackendUnavailable(ServerError):
    """The model server failed or vanished (within 1 s) and no other can take over."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "BACKEND_UNAVAILABLE"
    retryable = True
    http_status = 503
    ws_close_code = 1013


class Draining(ServerError):
    """The server is shutting down."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "DRAINING"
    retryable = True
    http_status = 503
    ws_close_code = 1012  # service restart (IANA WebSocket close code registry)


class ModelError(ServerError):
    """The model failed on valid input."""

    reason = "MODEL_ERROR"


class InternalError(ServerError):
    """A server fault."""

    reason = "INTERNAL"


_BY_REASON: dict[str, type[VoxwireError]] = {}
for _cls in list(globals().values()):
    if (
        isinstance(_cls, type)
        and issubclass(_cls, VoxwireError)
        and _cls is not VoxwireError
        and "reason" in _cls.__dict__
    ):
        _BY_REASON[_cls.reason] = _cls


def error_for_reason(reason: str, message: str) -> VoxwireError:
    """The error a model reported by reason string (an unknown reason becomes ModelError)."""
    return _BY_REASON.get(reason, ModelError)(message)


def reasons() -> dict[str, type[VoxwireError]]:
    """Every reason with its class (for documentation and tests)."""
    return dict(_BY_REASON)


# -- reading errors back from a wire (clients: the gateway, the SDK, the load tester) --------

_DETAILS_KEY = "grpc-status-details-bin"
# Without a reason in the details, what a bare gRPC code means to a client.
_BY_CODE: dict[grpc.StatusCode, type[VoxwireError]] = {
    grpc.StatusCode.UNAVAILABLE: BackendUnavailable,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidMessage,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
}


def from_status(status: status_pb2.Status) -> VoxwireError:
    """The error a google.rpc.Status (with voxwire ErrorInfo) describes."""
    code = _code(status.code)
    reason, retryable, delay = "", None, None
    violations: list[Violation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == DOMAIN:
                reason = info.reason
                retryable = info.metadata.get("retryable") == "true"
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToTimedelta()
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [Violation(v.field, v.description) for v in bad.field_violations]
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code, InternalError)
    error = cls(status.message, violations=violations, retry_delay=delay)
    if retryable is not None and retryable != cls.retryable:
        error.retryable = retryable  # the server's word wins over the class default
    return error


def from_grpc(
    code: grpc.StatusCode, details: str | None, trailing_metadata: Sequence[tuple[str, Any]] = ()
) -> VoxwireError:
    """The error of a finished gRPC call (its code, details and trailers)."""
    for key, value in trailing_metadata or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                return from_status(status_pb2.Status.FromString(value))
            except Exception:  # a malformed trailer: fall back to the bare code
                break
    status = status_pb2.Status(code=code.value[0], message=details or code.name)
    return from_status(status)


def _code(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def from_proto(error: errors_pb2.Error) -> VoxwireError:
    """The error an in-band voxwire.v1.Error describes (e.g. a TTS ContextError)."""
    name = errors_pb2.ErrorReason.Name(error.reason).removeprefix("ERROR_REASON_")
    cls = _BY_REASON.get(name, InternalError)
    delay = error.retry_delay.ToTimedelta() if error.HasField("retry_delay") else None
    made = cls(
        error.message,
        violations=[Violation(v.field, v.description) for v in error.field_violations],
        retry_delay=delay,
    )
    made.retryable = error.retryable
    return made


def to_event(error: VoxwireError) -> session_pb2.ErrorEvent:
    """The edge's JSON error event for ``error`` (docs/design/edge.md, "Errors")."""
    delay = error.retry_delay.total_seconds() if error.retry_delay is not None else 0.0
    return session_pb2.ErrorEvent(
        code=error.code.name,
        reason=error.reason,
        message=error.message,
        retryable=error.retryable,
        retry_after_ms=max(0, round(delay * 1000)),
        field_violations=[
            errors_pb2.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ],
        http_status=error.http_status,
        close_code=error.ws_close_code,
    )


def from_event(event: session_pb2.ErrorEvent) -> VoxwireError:
    """The error an edge error event describes (clients branch on the class)."""
    cls = _BY_REASON.get(event.reason, InternalError)
    delay = datetime.timedelta(milliseconds=event.retry_after_ms) if event.retry_after_ms else None
    made = cls(
        event.message,
        violations=[Violation(v.field, v.description) for v in event.field_violations],
        retry_delay=delay,
    )
    made.retryable = event.retryable
    return made


def markdown_table() -> str:
    """The error table of docs/contract.md, generated from the classes (one source)."""
    rows = [
        "| reason | gRPC code | retryable | HTTP | WS close | when |",
        "|---|---|---|---|---|---|",
    ]
    for reason, cls in _BY_REASON.items():
        retry = "yes + RetryInfo" if reason in _RETRY_INFO else ("yes" if cls.retryable else "no")
        when = (cls.__doc__ or "").strip().rstrip(".")
        when = when[0].lower() + when[1:] if when else ""
        rows.append(
            f"| `{reason}` | {cls.code.name} | {retry} | {cls.http_status} | "
            f"{cls.ws_close_code} | {when} |"
        )
    return "\n".join(rows)


# Reasons whose errors always carry a RetryInfo delay.
_RETRY_INFO = frozenset({"OVERLOADED", "RATE_LIMITED"})


if __name__ == "__main__":
    print(markdown_table())


def renamed_fields(error: VoxwireError, rename: Callable[[str], str | None]) -> VoxwireError:
    """``error`` with its violations' fields named as its client set them (an HTTP query
    parameter, a field of a JSON body, a command's flag) where the contract names them from its
    own messages (``config.language``, ``open.voice``): ``rename`` gives a field's new name, or
    None to keep it. The message names them the same way."""
    renamed = {v.field: new for v in error.violations if (new := rename(v.field)) is not None}
    if not renamed:
        return error
    message = error.message
    for old in sorted(renamed, key=len, reverse=True):  # a.b.c before a.b
        message = message.replace(old, renamed[old])
    violations = [Violation(renamed.get(v.field, v.field), v.description) for v in error.violations]
    named = type(error)(message, violations=violations, retry_delay=error.retry_delay)
    named.retryable = error.retryable  # the server's word, as read (from_status)
    return named

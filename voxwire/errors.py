"""The voxwire error hierarchy: one class per stable reason, translated to a wire at one place.

    VoxwireError
    ├── ClientError                     (the request is wrong; retrying it unchanged fails)
    │   ├── ConfigRequired              INVALID_ARGUMENT     CONFIG_REQUIRED
    │   ├── ConfigAlreadySet            FAILED_PRECONDITION  CONFIG_ALREADY_SET
    │   ├── InvalidConfig               INVALID_ARGUMENT     INVALID_CONFIG (+ field violations)
    │   ├── UnknownModel                NOT_FOUND            UNKNOWN_MODEL
    │   ├── UnsupportedEncoding         INVALID_ARGUMENT     UNSUPPORTED_ENCODING
    │   ├── UnsupportedSampleRate       INVALID_ARGUMENT     UNSUPPORTED_SAMPLE_RATE
    │   ├── MisalignedAudio             INVALID_ARGUMENT     MISALIGNED_AUDIO
    │   ├── ChunkTooLarge               INVALID_ARGUMENT     CHUNK_TOO_LARGE
    │   ├── TextTooLarge                INVALID_ARGUMENT     TEXT_TOO_LARGE
    │   ├── UnknownContext              NOT_FOUND            UNKNOWN_CONTEXT
    │   ├── ContextNotOpen              FAILED_PRECONDITION  CONTEXT_NOT_OPEN
    │   ├── ContextAlreadyOpen          ALREADY_EXISTS       CONTEXT_ALREADY_OPEN
    │   ├── TooManyContexts             RESOURCE_EXHAUSTED   TOO_MANY_CONTEXTS
    │   ├── SsmlInvalid                 INVALID_ARGUMENT     SSML_INVALID
    │   ├── InvalidPronunciation        INVALID_ARGUMENT     INVALID_PRONUNCIATION
    │   └── InvalidMessage              INVALID_ARGUMENT     INVALID_MESSAGE
    ├── StreamLimitError                (a limit of the stream was reached; a new stream works)
    │   ├── IdleTimeout                 DEADLINE_EXCEEDED    IDLE_TIMEOUT
    │   └── StreamTooLong               OUT_OF_RANGE         STREAM_TOO_LONG
    └── ServerError                     (the server side failed or is busy)
        ├── Overloaded                  RESOURCE_EXHAUSTED   OVERLOADED (+ RetryInfo)
        ├── BackendUnavailable          UNAVAILABLE          BACKEND_UNAVAILABLE
        ├── Draining                    UNAVAILABLE          DRAINING
        ├── ModelError                  INTERNAL             MODEL_ERROR
        └── InternalError               INTERNAL             INTERNAL

Each class knows its gRPC status code, its stable reason (the ``voxwire.v1.ErrorReason`` value
name without the ``ERROR_REASON_`` prefix), whether a retry can succeed, and the WebSocket close
code the gateway uses (RFC 6455 section 7.4.1; 4000-4999 are application codes). Nothing in
this module does I/O: ``to_rpc_status`` and ``to_proto`` build the wire forms, and the servicers
call them at exactly one boundary each.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from voxwire.v1 import errors_pb2

DOMAIN = "voxwire.v1"


@dataclass(frozen=True, slots=True)
class Violation:
    """One invalid field, as in google.rpc.BadRequest.FieldViolation."""

    field: str
    description: str


class VoxwireError(Exception):
    """Base of every error that reaches a client."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"
    retryable: bool = False
    ws_close_code: int = 1011  # RFC 6455 7.4.1: internal error

    def __init__(
        self,
        message: str,
        *,
        violations: Sequence[Violation] = (),
        retry_delay: datetime.timedelta | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.violations = tuple(violations)
        self.retry_delay = retry_delay

    @classmethod
    def of(cls, what: str, violations: Sequence[Violation]) -> VoxwireError:
        """One error of this class naming every violation."""
        listed = "; ".join(f"{v.field} {v.description}" for v in violations)
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
    ws_close_code = 1008  # policy violation


class ConfigRequired(ClientError):
    reason = "CONFIG_REQUIRED"


class ConfigAlreadySet(ClientError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "CONFIG_ALREADY_SET"


class InvalidConfig(ClientError):
    reason = "INVALID_CONFIG"


class UnknownModel(ClientError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "UNKNOWN_MODEL"


class UnsupportedEncoding(ClientError):
    reason = "UNSUPPORTED_ENCODING"
    ws_close_code = 1003  # unsupported data


class UnsupportedSampleRate(ClientError):
    reason = "UNSUPPORTED_SAMPLE_RATE"
    ws_close_code = 1003


class MisalignedAudio(ClientError):
    reason = "MISALIGNED_AUDIO"
    ws_close_code = 1007  # invalid frame payload data


class ChunkTooLarge(ClientError):
    reason = "CHUNK_TOO_LARGE"
    ws_close_code = 1009  # message too big


class TextTooLarge(ClientError):
    reason = "TEXT_TOO_LARGE"
    ws_close_code = 1009


class UnknownContext(ClientError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "UNKNOWN_CONTEXT"


class ContextNotOpen(ClientError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "CONTEXT_NOT_OPEN"


class ContextAlreadyOpen(ClientError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "CONTEXT_ALREADY_OPEN"


class TooManyContexts(ClientError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "TOO_MANY_CONTEXTS"


class SsmlInvalid(ClientError):
    reason = "SSML_INVALID"


class InvalidPronunciation(ClientError):
    reason = "INVALID_PRONUNCIATION"


class InvalidMessage(ClientError):
    reason = "INVALID_MESSAGE"


# -- a limit of the stream ------------------------------------------------------------------


class StreamLimitError(VoxwireError):
    retryable = True  # on a new stream


class IdleTimeout(StreamLimitError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "IDLE_TIMEOUT"
    ws_close_code = 4008  # application: idle timeout


class StreamTooLong(StreamLimitError):
    code = grpc.StatusCode.OUT_OF_RANGE
    reason = "STREAM_TOO_LONG"
    ws_close_code = 4009  # application: maximum stream duration


# -- the server side ------------------------------------------------------------------------


class ServerError(VoxwireError):
    pass


class Overloaded(ServerError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "OVERLOADED"
    retryable = True
    ws_close_code = 1013  # try again later


class BackendUnavailable(ServerError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "BACKEND_UNAVAILABLE"
    retryable = True
    ws_close_code = 1013


class Draining(ServerError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "DRAINING"
    retryable = True
    ws_close_code = 1001  # going away


class ModelError(ServerError):
    reason = "MODEL_ERROR"


class InternalError(ServerError):
    reason = "INTERNAL"


_BY_REASON: dict[str, type[VoxwireError]] = {}
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, VoxwireError) and "reason" in _cls.__dict__:
        _BY_REASON[_cls.reason] = _cls


def error_for_reason(reason: str, message: str) -> VoxwireError:
    """The error a model reported by reason string (an unknown reason becomes ModelError)."""
    cls = _BY_REASON.get(reason, ModelError)
    if cls is VoxwireError:
        cls = ModelError
    return cls(message)


def reasons() -> dict[str, type[VoxwireError]]:
    """Every reason with its class (for documentation and tests)."""
    return dict(_BY_REASON)

"""Reading voxwire's rich error details the way a client does (grpcio-status)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class RichError:
    code: grpc.StatusCode
    reason: str
    retryable: bool
    retry_delay_s: float | None
    violations: tuple[str, ...]


def unpack(status: status_pb2.Status) -> RichError:
    reason, retryable, delay, violations = "", False, None, ()
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "voxwire.v1"
            reason, retryable = info.reason, info.metadata["retryable"] == "true"
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToTimedelta().total_seconds()
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = tuple(v.field for v in bad.field_violations)
    return RichError(
        rpc_status.code_to_grpc_status_code(status.code), reason, retryable, delay, violations
    )


def from_trailers(trailers: dict) -> RichError:
    """The rich error in a finished call's trailers (as rpc_status.from_call reads it)."""
    raw = trailers[rpc_status.GRPC_DETAILS_METADATA_KEY]
    return unpack(status_pb2.Status.FromString(raw))

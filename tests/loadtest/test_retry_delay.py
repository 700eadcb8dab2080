"""The grpc target reads a refusal's RetryInfo from the rich status trailer (google.rpc.Status,
``grpc-status-details-bin``), as the overload benchmark counts it."""

from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from loadtest.targets.voxwire_grpc import retry_delay_from_trailers


def _details(*messages: object) -> bytes:
    status = status_pb2.Status(code=8, message="overloaded")
    for message in messages:
        packed = any_pb2.Any()
        packed.Pack(message)
        status.details.append(packed)
    return status.SerializeToString()


def test_the_retry_delay_of_a_rich_status_in_ms() -> None:
    info = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000)
    )
    reason = error_details_pb2.ErrorInfo(reason="OVERLOADED", domain="voxwire.dev")
    trailers = (("x-other", "1"), ("grpc-status-details-bin", _details(reason, info)))
    assert retry_delay_from_trailers(trailers) == 1500


def test_no_retry_delay_without_retry_info_or_without_a_rich_status() -> None:
    reason = error_details_pb2.ErrorInfo(reason="MODEL_ERROR")
    assert retry_delay_from_trailers((("grpc-status-details-bin", _details(reason)),)) is None
    assert retry_delay_from_trailers((("grpc-status-details-bin", b"\xff\xff"),)) is None
    assert retry_delay_from_trailers(()) is None
    assert retry_delay_from_trailers(None) is None

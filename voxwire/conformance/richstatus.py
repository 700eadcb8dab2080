"""Reading a voxwire error the way a client does: the rich status and the in-band Error.

docs/contract.md, "Errors": a failed stream's ``grpc-status-details-bin`` trailer is a
``google.rpc.Status`` carrying an ``ErrorInfo`` (domain ``voxwire.v1``, the reason,
``metadata.retryable``), ``RetryInfo`` when waiting helps and ``BadRequest`` field violations
for configuration errors. In-band ``voxwire.v1.Error`` carries the same fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from voxwire import errors
from voxwire.v1 import errors_pb2

DETAILS_TRAILER = "grpc-status-details-bin"
_CODES = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(frozen=True, slots=True)
class RichError:
    """What a client can learn about one failure."""

    code: grpc.StatusCode | None
    reason: str
    domain: str
    retryable: str  # "true" / "false" as sent, "" when absent
    violations: tuple[str, ...]
    retry_delay_s: float | None

    def describe(self) -> str:
        code = self.code.name if self.code else "?"
        parts = [code, self.reason or "no reason", f"retryable={self.retryable or 'unset'}"]
        if self.violations:
            parts.append("violations=" + ",".join(self.violations))
        return " ".join(parts)


def from_trailers(trailers: Mapping[str, str | bytes]) -> RichError | str:
    """The rich error of a finished call, or a sentence saying why there is none."""
    raw = trailers.get(DETAILS_TRAILER)
    if raw is None:
        return f"no {DETAILS_TRAILER} trailer"
    if isinstance(raw, str):
        return f"{DETAILS_TRAILER} is text, not binary"
    try:
        status = status_pb2.Status.FromString(raw)
    except DecodeError as exc:
        return f"{DETAILS_TRAILER} is not a google.rpc.Status ({exc})"
    reason, domain, retryable, delay = "", "", "", None
    violations: tuple[str, ...] = ()
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain = info.reason, info.domain
            retryable = info.metadata.get("retryable", "")
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToTimedelta().total_seconds()
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = tuple(v.field for v in bad.field_violations)
    return RichError(_CODES.get(status.code), reason, domain, retryable, violations, delay)


def from_proto(error: errors_pb2.Error) -> RichError:
    """The in-band form (a ContextError's or an UpdateConfigAck's ``error``)."""
    name = errors_pb2.ErrorReason.Name(error.reason) if error.reason in _REASON_NUMBERS else ""
    delay = (
        error.retry_delay.ToTimedelta().total_seconds() if error.HasField("retry_delay") else None
    )
    return RichError(
        code=_CODES.get(error.code),
        reason=name.removeprefix("ERROR_REASON_"),
        domain=errors.DOMAIN,  # in-band errors have no domain field: the message type is it
        retryable="true" if error.retryable else "false",
        violations=tuple(v.field for v in error.field_violations),
        retry_delay_s=delay,
    )


_REASON_NUMBERS = frozenset(errors_pb2.ErrorReason.values())


@dataclass(frozen=True, slots=True)
class ContractRow:
    """What the contract's error table says about one reason."""

    code: grpc.StatusCode
    retryable: bool
    retry_info: bool


def contract_row(reason: str) -> ContractRow:
    """The error table row of ``reason`` (voxwire/errors.py is the table's source).

    Raises KeyError for a reason the contract does not define.
    """
    cls = errors.reasons()[reason]
    return ContractRow(cls.code, cls.retryable, reason in _RETRY_INFO)


# docs/contract.md: "yes + RetryInfo" rows.
_RETRY_INFO = frozenset({"OVERLOADED", "RATE_LIMITED"})


def check_against_contract(
    seen: RichError, reason: str, violations: tuple[str, ...] = ()
) -> str | None:
    """None when ``seen`` is what the contract promises for ``reason``, else why not."""
    row = contract_row(reason)
    if seen.domain != errors.DOMAIN:
        return f"ErrorInfo domain {seen.domain!r}, expected {errors.DOMAIN!r} ({seen.describe()})"
    if seen.reason != reason:
        return f"reason {seen.reason or 'missing'}, expected {reason} ({seen.describe()})"
    if seen.code is not row.code:
        name = seen.code.name if seen.code else "?"
        return f"{reason} with code {name}, the contract says {row.code.name}"
    expected = "true" if row.retryable else "false"
    if seen.retryable != expected:
        return f"{reason} retryable={seen.retryable or 'unset'}, the contract says {expected}"
    if row.retry_info and seen.retry_delay_s is None:
        return f"{reason} without RetryInfo"
    for field in violations:
        if not any(_covers(field, v) for v in seen.violations):
            listed = ", ".join(seen.violations) or "none"
            return f"no field violation for {field} (violations: {listed})"
    return None


def _covers(wanted: str, field: str) -> bool:
    """``field`` names ``wanted`` or a part of it (config.endpointing covers
    config.endpointing.vad_aggressiveness and config.vocabulary[0])."""
    return field == wanted or field.startswith((wanted + ".", wanted + "["))

"""Metadata a tool adds to every call (``--header`` of the conformance kit and the fuzzer): a
server behind auth, such as the gateway's gRPC front (``authorization: Bearer ...``), is
checked as its callers reach it.

grpc.aio client interceptors, one per call shape the kit makes, each prepending the headers to
the call's own metadata. Without headers the kit adds no interceptor: calls are plain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

Headers = tuple[tuple[str, str], ...]


def parse_header(text: str) -> tuple[str, str]:
    """``"name: value"`` -> (lower-case name, value). Raises ValueError."""
    name, sep, value = text.partition(":")
    name = name.strip().lower()
    if not sep or not name:
        raise ValueError(f"a header is 'name: value', not {text!r}")
    return name, value.strip()


def _with(details: grpc.aio.ClientCallDetails, headers: Headers) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*headers, *tuple(details.metadata or ()))
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


# One class per call shape: grpc.aio files an interceptor under the first interface it
# implements only (grpc/aio/_channel.py), so one class for all three would add no headers to
# streams.
class _Unary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, headers: Headers) -> None:
        self._headers = headers

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with(details, self._headers), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, headers: Headers) -> None:
        self._headers = headers

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with(details, self._headers), request)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, headers: Headers) -> None:
        self._headers = headers

    async def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_with(details, self._headers), request_iterator)


def channel(
    target: str, headers: Headers, options: Sequence[tuple[str, Any]] | None = None
) -> grpc.aio.Channel:
    """A plaintext channel to ``target`` whose calls carry ``headers``."""
    interceptors = (
        [_Unary(headers), _UnaryStream(headers), _StreamStream(headers)] if headers else None
    )
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)

"""Metadata a tool adds to every call (``--header`` of the conformance kit and the fuzzer): a
server behind auth, such as the gateway's gRPC front (``authorization: Bearer ...``), is
checked as its callers reach it.

A channel whose multicallables prepend the headers to each call's own metadata (see
``_HeaderChannel`` for why not interceptors). Without headers the channel is a plain one.
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


class _WithHeaders:
    """A multicallable whose calls carry the headers before their own metadata."""

    __slots__ = ("_headers", "_inner")

    def __init__(self, inner: Any, headers: Headers) -> None:
        self._inner = inner
        self._headers = headers

    def __call__(self, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        return self._inner(*args, metadata=(*self._headers, *tuple(metadata or ())), **kwargs)


class _HeaderChannel(grpc.aio.Channel):
    """A channel whose calls carry ``headers``.

    Not client interceptors: grpc.aio runs an intercepted stream's writes through a request
    iterator of its own, consumed by a task that a call ending mid-write leaves pending. The
    fuzzer's cut and cancelled streams through the gateway's front printed 170 "Task was
    destroyed but it is pending" and 340 "aclose(): asynchronous generator is already running"
    lines at its exit in a 5,000-case run. Here every call is a plain one with more metadata.
    """

    def __init__(self, inner: grpc.aio.Channel, headers: Headers) -> None:
        self._inner = inner
        self._headers = headers

    async def __aenter__(self) -> _HeaderChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._inner.close()

    async def close(self, grace: float | None = None) -> None:
        await self._inner.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._inner.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._inner.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._inner.channel_ready()

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _WithHeaders(self._inner.unary_unary(*args, **kwargs), self._headers)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _WithHeaders(self._inner.unary_stream(*args, **kwargs), self._headers)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _WithHeaders(self._inner.stream_unary(*args, **kwargs), self._headers)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _WithHeaders(self._inner.stream_stream(*args, **kwargs), self._headers)


def channel(
    target: str, headers: Headers, options: Sequence[tuple[str, Any]] | None = None
) -> grpc.aio.Channel:
    """A plaintext channel to ``target`` whose calls carry ``headers`` (a plain channel when
    there are none)."""
    inner = grpc.aio.insecure_channel(target, options=options)
    return _HeaderChannel(inner, headers) if headers else inner

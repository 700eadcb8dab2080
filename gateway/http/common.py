"""What every HTTP endpoint shares: admission, error responses, the body reader with limits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import HttpVersion11, web

from gateway.auth import AuthServices, Principal, SessionPermit
from gateway.auth.limits import retry_after_header
from gateway.sessions import Registry
from gateway.state import GATEWAY
from gateway.wire.messages import encode
from gateway.wire.query import parse_bool, parse_encoding
from voxwire import errors
from voxwire.edge.v1 import http_pb2
from voxwire.v1 import audio_pb2

log = logging.getLogger(__name__)

# What the access log shows for a request whose client left before its answer (nginx's "client
# closed request"); nothing reaches the client.
CLIENT_LEFT = 499


def client_left(request: web.Request, exc: ConnectionError) -> web.Response:
    """The client of ``request`` reset its connection (a body that stopped coming, audio that
    could not be written, a write waiting for it to read when it went: aiohttp's
    ``ConnectionError("Connection lost")``): its business, not the gateway's error. One log
    line, and a response for aiohttp, which finds the connection gone and only logs the access
    (an exception would be logged as an ERROR with its traceback, one per vanished client)."""
    log.info("%s %s: the client left (%s)", request.method, request.path, exc)
    return web.Response(status=CLIENT_LEFT)


# A response's word on its input (KIND_FORMAT_SUSPECT notices' messages) where its body has no
# place for it (audio; a plain-text transcript).
NOTICE_HEADER = "Voxwire-Notice"


def error_body(error: errors.VoxwireError) -> str:
    """``{"error": <ErrorEvent>}``: an ``ErrorResponse``, the envelope of the WebSocket's error
    message too, and the schema the OpenAPI document gives every error status."""
    return encode(http_pb2.ErrorResponse(error=errors.to_event(error)))


def error_response(error: errors.VoxwireError) -> web.Response:
    """An error as an HTTP response: its status, ``error_body``, Retry-After."""
    headers = {}
    if error.retry_delay is not None:
        headers["Retry-After"] = retry_after_header(error.retry_delay)
    return web.Response(
        status=error.http_status,
        text=error_body(error),
        content_type="application/json",
        headers=headers,
    )


@dataclass(frozen=True, slots=True)
class HttpAdmission:
    principal: Principal
    permit: SessionPermit


def authenticate(request: web.Request, auth: AuthServices) -> Principal:
    """Raises Unauthenticated or PermissionDenied."""
    return auth.authenticator.authenticate_request(list(request.headers.items()))


def not_draining(registry: Registry) -> None:
    """Raises Draining while the gateway drains: checked first, before the credentials, by
    every endpoint that reaches an adapter (the gRPC front's calls do the same)."""
    if registry.draining:
        raise errors.Draining("the gateway is shutting down: use another one")


def admissible(request: web.Request, auth: AuthServices, registry: Registry) -> None:
    """Raises what ``admit`` would raise for ``request`` now, taking nothing."""
    not_draining(registry)
    principal = authenticate(request, auth)
    auth.limiter.check(principal.key_id, principal.limits)


ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


def expect_handler(check: Callable[[web.Request], None]) -> ExpectHandler:
    """A route's answer to ``Expect: 100-continue`` (RFC 9110 10.1.1), made before its client
    sends the body: ``check`` (the request's line and headers: draining, credentials, the
    key's limits, media type, declared length) raises the error the handler would answer, and
    that error is the final response, with the connection closed, the body never read; else
    100 Continue, and the handler runs (and checks it all again, for real). aiohttp's own
    handler sent 100 Continue to every request, so a client with a bad key, over its limits or
    with a file too large sent its body (curl does it for any body over 1 MiB) to be refused
    after it.

    An expectation other than 100-continue is refused 400 INVALID_MESSAGE, as every error is
    (aiohttp's was a text/plain 417)."""

    async def handle(request: web.Request) -> web.StreamResponse | None:
        expectation = request.headers.get("Expect", "")
        try:
            if expectation.lower() != "100-continue":
                raise errors.InvalidMessage(
                    f"Expect: {expectation[:100]!r} is not supported; the only expectation "
                    "is 100-continue"
                )
            check(request)
        except errors.VoxwireError as exc:
            request.app[GATEWAY].metrics.refused.labels(reason=exc.reason).inc()
            response = error_response(exc)
            # The body was not sent and will not be read: the connection cannot carry another
            # request (RFC 9112 9.6: the server says it closes).
            response.force_close()
            return response
        if request.version == HttpVersion11:  # an HTTP/1.0 client does not wait for it
            try:
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            except ConnectionError as exc:
                # The client reset while its head was checked: aiohttp logged an ERROR with
                # a traceback for each (the edge fuzzer's find). A response ends the request,
                # and aiohttp, finding the connection gone, only logs its access.
                return client_left(request, ConnectionError(f"before 100 Continue: {exc}"))
            request.writer.output_size = 0  # the response proper has not begun
        return None

    return handle


def declared_within(request: web.Request, max_bytes: int) -> None:
    """Raises BodyTooLarge (413) when the request's Content-Length is over ``max_bytes``."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise errors.BodyTooLarge(f"body of {request.content_length} bytes exceeds {max_bytes}")


def admit(request: web.Request, auth: AuthServices, registry: Registry) -> HttpAdmission:
    """Authenticate ``request`` and take a new session of its key (release the permit when
    done). Raises Draining, Unauthenticated, PermissionDenied, RateLimited."""
    not_draining(registry)
    principal = authenticate(request, auth)
    return HttpAdmission(principal, auth.limiter.admit(principal.key_id, principal.limits))


async def read_body(request: web.Request, max_bytes: int, within_s: float) -> bytes:
    """The whole (small) body, refusing more than ``max_bytes`` as it arrives, and a body not
    all there within ``within_s`` (the endpoint's deadline: POST /v1/tts its session's idle
    timeout, POST /v1/auth/token ``token_body_timeout_seconds``): a body of a few KiB that
    takes longer has stalled, and one dripped a byte at a time would otherwise hold the
    connection (and the key's session slot, for POST /v1/tts) for as long as its client likes.

    Raises BodyTooLarge (413), IdleTimeout (408)."""
    declared_within(request, max_bytes)
    data = bytearray()
    try:
        async with asyncio.timeout(within_s):
            async for chunk in request.content.iter_chunked(16 * 1024):
                data += chunk
                if len(data) > max_bytes:
                    raise errors.BodyTooLarge(f"body exceeds {max_bytes} bytes")
    except TimeoutError:
        raise errors.IdleTimeout(f"the body did not all come within {within_s:g} s") from None
    return bytes(data)


def media_type(request: web.Request) -> str:
    """The Content-Type without parameters, lower case ("" when absent)."""
    return request.content_type.lower() if request.headers.get("Content-Type") else ""


def single_query(request: web.Request) -> dict[str, str]:
    """The query string as one value per name. A name given twice is refused, as on the
    WebSocket endpoints (gateway/wire/query.py): which value won was not obvious to a reader
    (the first did; ``sample_rate=8000&sample_rate=16000`` gave a wrong transcript, silently)."""
    query = request.query
    twice = sorted({name for name in query if len(query.getall(name)) > 1})
    if twice:
        raise errors.InvalidConfig.of(
            "invalid query string",
            [errors.Violation(name[:40], "given more than once") for name in twice],
        )
    return dict(query)


def no_query(request: web.Request) -> None:
    """An endpoint that takes no query parameters refuses any, as every endpoint refuses one
    it does not know (docs/edge.md): a client that thinks it set something (``?ttl=5``) is
    told it did not."""
    names = sorted(set(request.query))
    if names:
        raise errors.InvalidConfig.of(
            f"{request.path} takes no query parameters",
            [errors.Violation(name[:40], "unknown query parameter") for name in names],
        )


def query_encoding(
    query: dict[str, str], bad: list[errors.Violation]
) -> audio_pb2.AudioEncoding.ValueType | None:
    """The ``encoding`` query parameter, None when absent or not one the contract carries (a
    violation then, which ``refuse`` makes UNSUPPORTED_ENCODING)."""
    if "encoding" not in query:
        return None
    try:
        return parse_encoding(query["encoding"])
    except ValueError as exc:
        bad.append(errors.Violation("encoding", str(exc)))
        return None


def query_flag(query: dict[str, str], name: str, bad: list[errors.Violation]) -> bool:
    """A boolean query parameter, false when absent; a value that is not a boolean is a
    violation (as on the WebSocket endpoints), never silently false."""
    if name not in query:
        return False
    try:
        return parse_bool(query[name])
    except ValueError as exc:
        bad.append(errors.Violation(name, str(exc)))
        return False

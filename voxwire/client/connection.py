"""Opening a WebSocket to a gateway: credentials, URL rotation, and what a close means.

Credentials (docs/design/edge.md, "Auth and limits"): a server holds an API key and sends
``Authorization: Bearer <key>``; a browser-style client holds only short-lived tokens and
offers them as the subprotocol ``voxwire.token.<token>`` beside ``voxwire.v1`` (RFC 6455
section 4.1), with an ``Origin`` the key allows. A token is single use, so ``token_provider`` is
called for every connection (a first connect and each reconnect).

Close codes (RFC 6455 section 7.4.1 and the IANA registry) that a session survives by resuming:
1006 (no close frame: the process died or the network dropped), 1012 (service restart: a drain),
1013 (try again later: limits, no backend), 4009 (maximum session duration, after going_away).
Any other close without an error event is a failure of the session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp

from voxwire import errors
from voxwire.edge.messages import decode, encode
from voxwire.edge.v1 import http_pb2, stt_pb2
from voxwire.v1 import capabilities_pb2

SUBPROTOCOL = "voxwire.v1"
TOKEN_SUBPROTOCOL_PREFIX = "voxwire.token."
RESUMABLE_CLOSES = frozenset({1006, 1012, 1013, 4009})
# Retryable error reasons that resuming cannot cure: the client itself stopped talking.
_NOT_RESUMED = frozenset({"IDLE_TIMEOUT"})

TokenProvider = Callable[[], Awaitable[str]]
_MAX_BODY = 64 * 1024
# A capabilities answer lists every model with its formats: far larger than a token's.
_MAX_CAPABILITIES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Credentials:
    """An API key (servers) or a token provider (browser-style clients), not both.

    Raises ValueError when neither or both are given."""

    api_key: str | None = None
    token_provider: TokenProvider | None = None
    # Sent as the Origin header; a browser token is accepted only with an allowed origin.
    origin: str | None = None

    def __post_init__(self) -> None:
        if (self.api_key is None) == (self.token_provider is None):
            raise ValueError("give an api_key or a token_provider (one of them)")

    async def handshake(self) -> tuple[dict[str, str], tuple[str, ...]]:
        """The headers and subprotocols of one connection attempt (fetches a fresh token).

        Raises whatever ``token_provider`` raises."""
        headers: dict[str, str] = {}
        if self.origin:
            headers["Origin"] = self.origin
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key}"
            return headers, (SUBPROTOCOL,)
        assert self.token_provider is not None
        token = await self.token_provider()
        return headers, (SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + token)


def token_fetcher(
    base_url: str,
    api_key: str,
    *,
    origin: str | None = None,
    ttl_s: int = 0,
    timeout_s: float = 10.0,
) -> TokenProvider:
    """A ``token_provider`` that exchanges ``api_key`` for a fresh browser token at
    ``POST {base_url}/v1/auth/token`` for every connection (the shape of a page's backend: the
    key stays on the server, the page gets tokens). ``base_url`` may be ws(s):// or http(s)://;
    ``origin`` is the page's origin, which the token is bound to.

    The provider raises the error the gateway answered with (``voxwire.errors``), or
    ConnectionLost when the gateway cannot be reached."""
    http_base = _http_base(base_url)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    if origin:
        headers["Origin"] = origin
    body = encode(http_pb2.TokenRequest(ttl_seconds=ttl_s))

    async def provide() -> str:
        try:
            async with asyncio.timeout(timeout_s), aiohttp.ClientSession() as http:
                async with http.post(
                    f"{http_base}/v1/auth/token", data=body, headers=headers
                ) as response:
                    text = await response.text()
                    status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConnectionLost(f"{http_base}: {type(exc).__name__}: {exc}", None) from exc
        if status != 200:
            raise _http_error(status, text)
        reply = decode(
            text, http_pb2.TokenResponse, max_bytes=_MAX_BODY, ignore_unknown_fields=True
        )
        return reply.token

    return provide


async def fetch_capabilities(
    base_url: str, api_key: str, *, timeout_s: float = 10.0
) -> capabilities_pb2.GetCapabilitiesResponse:
    """``GET {base_url}/v1/capabilities``: the models, formats, features and limits the
    servers behind the gateway offer (``base_url`` ws(s):// or http(s)://).

    Raises the error the gateway answered with (``voxwire.errors``), BackendUnavailable when
    it cannot be reached within ``timeout_s``."""
    http_base = _http_base(base_url)
    try:
        async with asyncio.timeout(timeout_s), aiohttp.ClientSession() as http:
            async with http.get(
                f"{http_base}/v1/capabilities", headers={"Authorization": f"Bearer {api_key}"}
            ) as response:
                text = await response.text()
                status = response.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        why = f"{type(exc).__name__}: {exc}".rstrip(": ")
        raise errors.BackendUnavailable(f"{http_base} did not answer: {why}") from exc
    if status != 200:
        raise _http_error(status, text)
    return decode(
        text,
        capabilities_pb2.GetCapabilitiesResponse,
        max_bytes=_MAX_CAPABILITIES,
        ignore_unknown_fields=True,
    )


# The session endpoints a gateway URL may name (``Endpoints`` takes such a URL as its gateway's).
_SESSION_PATHS = ("/v1/stt/stream", "/v1/tts/stream")


def _http_base(url: str) -> str:
    """The gateway's HTTP origin of a ws(s):// or http(s):// URL, a session endpoint's too:
    ``ws://host:8080/v1/stt/stream`` asked ``/v1/stt/stream/v1/capabilities``, a 404 that
    the CLI took as no capabilities (no format fitted to the model)."""
    base = url.rstrip("/")
    for path in _SESSION_PATHS:
        base = base.removesuffix(path)
    return base.replace("ws://", "http://", 1).replace("wss://", "https://", 1)


def _http_error(status: int, text: str) -> errors.VoxwireError:
    """The error of an HTTP error answer (its JSON error event, else the status alone)."""
    try:
        event = decode(
            text, stt_pb2.SttServerMessage, max_bytes=_MAX_BODY, ignore_unknown_fields=True
        )
    except errors.VoxwireError:
        event = stt_pb2.SttServerMessage()
    if event.HasField("error"):
        return errors.from_event(event.error)
    if status >= 500 or status == 429:
        return errors.BackendUnavailable(f"HTTP {status}")
    return errors.InvalidMessage(f"HTTP {status}")


class Endpoints:
    """The gateway URLs of a session (``ws://host:port`` or ``wss://...``): the first is used
    first, and every reconnect moves to the next, round robin. A URL that already names the
    session's endpoint (``ws://host:8080/v1/stt/stream``, as docs/edge.md writes it) is taken
    as its gateway's: the path is not added twice.

    Raises ValueError for an empty list or a URL that is not ws(s)."""

    def __init__(self, urls: Sequence[str] | str, path: str) -> None:
        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls:
            raise ValueError("at least one gateway URL is needed")
        for url in urls:
            if not url.startswith(("ws://", "wss://")):
                raise ValueError(f"{url!r}: a gateway URL starts with ws:// or wss://")
        self.urls = [u.rstrip("/").removesuffix(path) for u in urls]
        self._path = path
        self._index = 0

    @property
    def current(self) -> str:
        return self.urls[self._index] + self._path

    def advance(self) -> None:
        self._index = (self._index + 1) % len(self.urls)


async def open_socket(
    http: aiohttp.ClientSession,
    url: str,
    credentials: Credentials,
    *,
    timeout_s: float,
    heartbeat_s: float | None,
    max_msg_size: int = 4 * 1024 * 1024,
) -> aiohttp.ClientWebSocketResponse:
    """The upgraded WebSocket. Raises ConnectionLost for what a reconnect may cure (refused,
    reset, timeout, a 5xx or 429 handshake), Unauthenticated / PermissionDenied for a 401 / 403
    handshake (a gateway answers auth errors after the upgrade; these come from proxies),
    UnknownEndpoint for a 404 (a URL whose path is not a session endpoint)."""
    try:
        headers, protocols = await credentials.handshake()
    except errors.VoxwireError as exc:
        if resumable(exc):  # the token endpoint is busy or restarting: as a failed connect
            raise ConnectionLost(f"token: {exc.reason}: {exc}", None) from exc
        raise
    try:
        async with asyncio.timeout(timeout_s):
            return await http.ws_connect(
                url,
                headers=headers,
                protocols=protocols,
                heartbeat=heartbeat_s,
                # No permessage-deflate offer: 100 ms of speech PCM deflates by ~12 % for
                # ~190 us of CPU (BENCHMARKS.md, "WebSocket compression").
                compress=0,
                max_msg_size=max_msg_size,
                autoclose=True,
            )
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status == 401:
            raise errors.Unauthenticated(f"{url}: handshake refused (401)") from exc
        if exc.status == 403:
            raise errors.PermissionDenied(f"{url}: handshake refused (403)") from exc
        if exc.status in (429,) or exc.status >= 500:
            raise ConnectionLost(f"{url}: handshake answered {exc.status}", None) from exc
        if exc.status == 404:  # a base URL with a path of its own, or not a gateway at all
            raise errors.UnknownEndpoint(
                f"{url}: no such endpoint (404); a gateway URL is ws(s)://host:port, to which "
                "the session adds its endpoint's path"
            ) from exc
        raise errors.InvalidMessage(f"{url}: handshake answered {exc.status}") from exc
    except TimeoutError as exc:  # its own text is empty ("TimeoutError: ")
        raise ConnectionLost(
            f"{url}: no WebSocket handshake within {timeout_s:g} s (connect_timeout_s)", None
        ) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise ConnectionLost(f"{url}: {type(exc).__name__}: {exc}", None) from exc


class ConnectionLost(Exception):
    """The connection failed or ended without a reason the session must stop for."""

    def __init__(self, message: str, close_code: int | None) -> None:
        super().__init__(message)
        self.close_code = close_code


def resumable(error: errors.VoxwireError) -> bool:
    """Whether an error event ends only this connection (the session resumes elsewhere)."""
    return error.retryable and error.reason not in _NOT_RESUMED


def close_error(code: int | None) -> errors.VoxwireError | None:
    """The failure a close without an error event means; None when the session resumes."""
    if code is None or code in RESUMABLE_CLOSES:
        return None
    return errors.InternalError(f"the gateway closed the connection with code {code}")

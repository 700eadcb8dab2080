"""The one call per request or handshake: credentials in, a ``Principal`` or a voxwire error out.

Credentials (docs/design/edge.md, "Auth and limits"):
- servers: ``Authorization: Bearer <API key>`` (RFC 6750 section 2.1) on HTTP, on the
  WebSocket handshake and in gRPC metadata;
- browsers, which cannot set headers on a WebSocket: the subprotocol offer
  ``["voxwire.v1", "voxwire.token.<browser token>"]`` (RFC 6455 section 4.1,
  ``Sec-WebSocket-Protocol``). The server echoes ``voxwire.v1``, never the token.

Errors: no credentials, a malformed header, an unknown or revoked key, an expired or reused
token -> ``Unauthenticated``; an ``Origin`` that the key does not allow -> ``PermissionDenied``.
A Bearer request without ``Origin`` is a server and passes; with an ``Origin`` (a browser
page holding the key) the origin must be allowed too. A browser token needs an allowed
``Origin``. Tokens are accepted only in the subprotocol, never in a query string, where they
would end up in access logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.auth.keys import ApiKey, KeyId, KeyStore
from gateway.auth.limits import KeyLimits
from gateway.auth.origins import origin_allowed
from gateway.auth.tokens import BrowserTokens, IssuedToken
from voxwire.errors import PermissionDenied, Unauthenticated

SUBPROTOCOL = "voxwire.v1"
TOKEN_SUBPROTOCOL_PREFIX = "voxwire.token."
MAX_CREDENTIAL_LENGTH = 1024

Credential = Literal["api_key", "browser_token"]
# A plain mapping (case-insensitive or not), or the (name, value) pairs of ASGI / gRPC metadata.
# Pass the pairs when a mapping folds repeated headers or raises on them (websockets' Headers:
# ``raw_items()``), so that a repeated Authorization or Origin is seen and refused.
Headers = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: the API key behind the request, with its limits as of now."""

    key_id: KeyId
    name: str
    limits: KeyLimits
    credential: Credential
    origin: str | None  # the request's Origin header, if any


@dataclass(frozen=True, slots=True)
class WebSocketAuth:
    principal: Principal
    subprotocol: str | None  # to echo in Sec-WebSocket-Protocol; None: send none


def select_subprotocol(offered: Sequence[str]) -> str | None:
    """The subprotocol to accept from an offer: ``voxwire.v1`` if offered, else None.

    Call it whatever the outcome of authentication: a handshake error is sent after the
    upgrade as an ``error`` event, and a browser drops a connection whose server picks no
    subprotocol from a non-empty offer (RFC 6455 section 4.1, client step 6).
    """
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def offered_subprotocols(headers: Headers) -> list[str]:
    """The subprotocols offered in every ``Sec-WebSocket-Protocol`` header, in order."""
    offered: list[str] = []
    for value in header_values(headers, "sec-websocket-protocol"):
        offered.extend(p.strip() for p in value.split(",") if p.strip())
    return offered


def header_values(headers: Headers, name: str) -> list[str]:
    """Every value of header ``name`` (matched case-insensitively); bytes decode as Latin-1."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    values = []
    for key, value in items:
        key_text = key.decode("latin-1") if isinstance(key, bytes) else key
        if key_text.lower() == name:
            values.append(value.decode("latin-1") if isinstance(value, bytes) else value)
    return values


class Authenticator:
    """Checks credentials against the keys file and the browser-token signer."""

    def __init__(
        self,
        keys: KeyStore,
        browser_tokens: BrowserTokens,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._tokens = browser_tokens
        self._clock = wall_clock

    def authenticate_request(self, headers: Headers) -> Principal:
        """The principal of an HTTP request or a gRPC call (metadata): Bearer API key only.

        Raises:
            Unauthenticated: no, several or a malformed Authorization header; unknown or
                revoked key.
            PermissionDenied: an Origin header that the key does not allow.
        """
        key = self._bearer_key(headers)
        if key is None:
            raise Unauthenticated("no credentials: send Authorization: Bearer <API key>")
        return self._principal(self._keys.verify(key), "api_key", _origin(headers))

    def authenticate_websocket(
        self, headers: Headers, subprotocols: Sequence[str] | None = None
    ) -> WebSocketAuth:
        """The principal of a WebSocket handshake and the subprotocol to echo.

        ``subprotocols`` is the offer as the server framework parsed it; None reads it from
        the headers. A browser token in the offer is used up (one session per token).

        Raises:
            Unauthenticated: no credentials, both kinds at once, several tokens, a token
                offered without ``voxwire.v1``, a bad Bearer header or key, a forged,
                expired or reused token, a token of a key since revoked.
            PermissionDenied: a token without an Origin, or an Origin the key does not allow
                (or, for a token bound to an origin, another one).
            RateLimited: the token's key holds its share of unexpired used tokens in this
                process (see NonceCache).
        """
        offered = offered_subprotocols(headers) if subprotocols is None else list(subprotocols)
        tokens = [p for p in offered if p.startswith(TOKEN_SUBPROTOCOL_PREFIX)]
        key = self._bearer_key(headers)
        origin = _origin(headers)
        if tokens and key is not None:
            raise Unauthenticated("send one credential: a Bearer key or a token, not both")
        if len(tokens) > 1:
            raise Unauthenticated("more than one voxwire.token subprotocol")
        if key is not None:
            record = self._keys.verify(key)
            principal = self._principal(record, "api_key", origin)
        elif tokens:
            if SUBPROTOCOL not in offered:
                raise Unauthenticated(f"offer {SUBPROTOCOL} beside the token subprotocol")
            principal = self._redeem(tokens[0].removeprefix(TOKEN_SUBPROTOCOL_PREFIX), origin)
        else:
            raise Unauthenticated(
                "no credentials: send Authorization: Bearer <API key>, or (browsers) the "
                f"subprotocols {SUBPROTOCOL} and {TOKEN_SUBPROTOCOL_PREFIX}<token>"
            )
        return WebSocketAuth(principal, select_subprotocol(offered))

    def issue_browser_token(self, principal: Principal, ttl_s: int | None = None) -> IssuedToken:
        """For ``POST /v1/auth/token``: a token for one session of the principal's key, bound
        to the request's Origin if it had one (already checked against the key's origins).

        Raises:
            PermissionDenied: the principal holds a token, not the key (a token cannot mint
                tokens).
            InvalidConfig: ``ttl_s`` over the configured maximum.
        """
        if principal.credential != "api_key":
            raise PermissionDenied("browser tokens are issued only for an API key")
        return self._tokens.issue(
            principal.key_id, origin=principal.origin, now=self._clock(), ttl_s=ttl_s
        )

    def _redeem(self, token: str, origin: str | None) -> Principal:
        if origin is None:
            raise PermissionDenied("a browser token needs the Origin header")
        key_id = self._tokens.redeem(token, origin=origin, now=self._clock())
        record = self._keys.get(key_id)
        if record is None or record.revoked:
            raise Unauthenticated(f"API key {key_id} of the browser token is unknown or revoked")
        return self._principal(record, "browser_token", origin)

    def _principal(self, record: ApiKey, credential: Credential, origin: str | None) -> Principal:
        if origin is not None and not origin_allowed(origin, record.allowed_origins):
            raise PermissionDenied(f"origin {origin!r} is not allowed for key {record.key_id}")
        return Principal(
            key_id=record.key_id,
            name=record.name,
            limits=record.limits(self._keys.defaults),
            credential=credential,
            origin=origin,
        )

    @staticmethod
    def _bearer_key(headers: Headers) -> str | None:
        values = header_values(headers, "authorization")
        if not values:
            return None
        if len(values) > 1:
            raise Unauthenticated("more than one Authorization header")
        value = values[0]
        scheme, _, credentials = value.strip().partition(" ")
        credentials = credentials.strip()
        # RFC 9110 11.1: the auth scheme is case-insensitive; RFC 6750 2.1: one token after it.
        if (
            scheme.lower() != "bearer"
            or not credentials
            or len(credentials) > MAX_CREDENTIAL_LENGTH
            or any(c.isspace() for c in credentials)
        ):
            raise Unauthenticated("malformed Authorization header: expected Bearer <API key>")
        return credentials


def _origin(headers: Headers) -> str | None:
    values = header_values(headers, "origin")
    if len(values) > 1:
        raise PermissionDenied("more than one Origin header")
    return values[0] if values else None

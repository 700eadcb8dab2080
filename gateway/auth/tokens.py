"""Signed tokens: short-lived browser session tokens and resume tokens (HMAC-SHA256).

Format (both kinds): ``base64url(claims) "." base64url(mac)``, unpadded (RFC 4648 section 5),
where ``claims`` is compact JSON (sorted keys, no spaces) and ``mac`` is HMAC-SHA256 over the
ASCII of the first segment, as in JWS compact serialization (RFC 7515). Every character is in
``[A-Za-z0-9_-.]``, all RFC 7230 ``tchar``s, so a token is a valid RFC 6455 subprotocol token
(``voxwire.token.<token>``) and needs no escaping in a URL, a header or JSON.

Keys and rotation: the signing secrets come from configuration by key id (``kid``), shared by
every gateway process. One ``kid`` is current and signs; every configured ``kid`` verifies.
Rotate by adding a new ``kid``, making it current once every process has it, and removing the
old one after the longest token lifetime has passed. The ``kid`` is a claim (read before the
MAC is checked, like a JWS header; the claims segment is bounded in size first).

Domain separation: each kind is signed with its own subkey ``HMAC(secret, "voxwire token
<kind>")``, so a browser token never verifies as a resume token nor the other way round (its
MAC is simply wrong), whatever its claims say.

Claims (times are Unix seconds, integers; the wall clock is passed in, since tokens cross
processes):
- browser: ``kid``, ``key`` (API key id), ``exp``, ``nonce`` (128 random bits), ``origin``
  (the normalized Origin of the request that asked for the token, if it sent one).
- resume: ``kid``, ``sid`` (session id), ``key``, ``kind`` (``stt``/``tts``), ``cfg`` (the
  session's serialized config, base64url; opaque here), ``iat``, ``exp``, and ``n`` (how many
  times the session has resumed so far; absent for none), so the count carries across
  connections.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import heapq
import hmac
import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from gateway.auth.origins import normalize_origin
from voxwire.errors import (
    InvalidConfig,
    PermissionDenied,
    RateLimited,
    ResumeRejected,
    Unauthenticated,
    Violation,
)

SessionKind = Literal["stt", "tts"]
SESSION_KINDS: tuple[SessionKind, ...] = ("stt", "tts")
MIN_SECRET_BYTES = 32
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_KID = re.compile(r"[A-Za-z0-9._-]{1,32}")
_MAC_CHARS = 43  # 32 bytes, unpadded base64url


class TokenInvalid(ValueError):
    """Why a token did not verify (mapped to the voxwire error of its kind by the caller)."""


def parse_secret(value: str) -> bytes:
    """A signing secret from configuration: ``hex:<hex>`` or ``base64:<base64 or base64url>``.

    Raises:
        ValueError: another form, bad digits, or fewer than 32 bytes.
    """
    kind, _, text = value.partition(":")
    try:
        if kind == "hex":
            secret = bytes.fromhex(text)
        elif kind == "base64":
            text = text.replace("-", "+").replace("_", "/")
            secret = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        else:
            raise ValueError("a signing secret is hex:<hex digits> or base64:<base64>")
    except binascii.Error as exc:
        raise ValueError(f"bad {kind} signing secret") from exc
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"a signing secret has at least {MIN_SECRET_BYTES} bytes")
    return secret


class TokenSigner:
    """HMAC-SHA256 signing with rotation: ``current_kid`` signs, every configured kid verifies."""

    def __init__(self, secrets_by_kid: Mapping[str, bytes], current_kid: str) -> None:
        """Raises ValueError: no current kid among the keys, a bad kid or a short secret."""
        if current_kid not in secrets_by_kid:
            raise ValueError(f"the current signing kid {current_kid!r} has no secret")
        for kid, secret in secrets_by_kid.items():
            if not _KID.fullmatch(kid):
                raise ValueError(f"a signing kid is 1 to 32 of [A-Za-z0-9._-], not {kid!r}")
            if len(secret) < MIN_SECRET_BYTES:
                raise ValueError(f"signing secret {kid!r} is shorter than {MIN_SECRET_BYTES}")
        self._secrets = dict(secrets_by_kid)
        self.current_kid = current_kid

    @classmethod
    def from_config(cls, secrets_by_kid: Mapping[str, str], current_kid: str) -> TokenSigner:
        """From configured ``hex:``/``base64:`` strings. Raises ValueError (see parse_secret)."""
        return cls({kid: parse_secret(s) for kid, s in secrets_by_kid.items()}, current_kid)

    def sign(self, purpose: str, claims: dict[str, Any]) -> str:
        """A token of ``purpose`` holding ``claims`` (plus the current ``kid``)."""
        body = dict(claims, kid=self.current_kid)
        text = json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
        segment = _b64encode(text.encode("ascii"))
        return f"{segment}.{self._mac(self.current_kid, purpose, segment)}"

    def open(self, purpose: str, token: str, max_length: int) -> dict[str, Any]:
        """The claims of a token of ``purpose`` whose MAC verifies under its ``kid``.

        Raises:
            TokenInvalid: too long, malformed, unknown kid, or a MAC that does not match.
        """
        if len(token) > max_length:
            raise TokenInvalid("token too long")
        segment, dot, mac = token.partition(".")
        if not dot or not _SEGMENT.fullmatch(segment) or not _SEGMENT.fullmatch(mac):
            raise TokenInvalid("malformed token")
        try:
            claims = json.loads(_b64decode(segment))
        except (ValueError, RecursionError) as exc:  # JSON nested past the recursion limit
            raise TokenInvalid("malformed token") from exc
        if not isinstance(claims, dict) or not isinstance(claims.get("kid"), str):
            raise TokenInvalid("malformed token")
        kid = claims["kid"]
        if kid not in self._secrets:
            raise TokenInvalid("token signed with an unknown key")
        # Compared as the canonical text, so that no other spelling of the MAC passes.
        if len(mac) != _MAC_CHARS or not hmac.compare_digest(mac, self._mac(kid, purpose, segment)):
            raise TokenInvalid("token signature does not verify")
        return claims

    def _mac(self, kid: str, purpose: str, segment: str) -> str:
        subkey = hmac.new(
            self._secrets[kid], b"voxwire token " + purpose.encode(), hashlib.sha256
        ).digest()
        return _b64encode(hmac.new(subkey, segment.encode("ascii"), hashlib.sha256).digest())


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: int  # Unix seconds

    def expires_at_datetime(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.expires_at, datetime.UTC)


class BrowserTokens:
    """Short-lived tokens a web page passes as a WebSocket subprotocol instead of the API key.

    A token opens one session: its nonce is remembered by this process until the token
    expires, in a cache where each API key has a bounded share of its own (``NonceCache``).
    Another gateway process does not know the nonce, so with N processes a stolen token can
    open at most N sessions within its lifetime (60 s default).
    """

    PURPOSE = "browser/v1"
    MAX_TOKEN_LENGTH = 1024

    def __init__(
        self,
        signer: TokenSigner,
        *,
        default_ttl_s: int = 60,
        max_ttl_s: int = 300,
        nonces_per_key: int = 4096,
    ) -> None:
        if not 0 < default_ttl_s <= max_ttl_s:
            raise ValueError("browser token TTLs: 0 < default <= max")
        self._signer = signer
        self.default_ttl_s = default_ttl_s
        self.max_ttl_s = max_ttl_s
        self._nonces = NonceCache(nonces_per_key)

    def issue(
        self, key_id: str, *, origin: str | None, now: float, ttl_s: int | None = None
    ) -> IssuedToken:
        """A token for one session of ``key_id``, bound to ``origin`` if the request sent one.

        ``ttl_s`` None or 0 takes the default (``TokenRequest.ttl_seconds`` semantics).

        Raises:
            InvalidConfig: ``ttl_s`` negative or over the maximum.
            PermissionDenied: ``origin`` is not an origin.
        """
        ttl = ttl_s or self.default_ttl_s
        if not 0 < ttl <= self.max_ttl_s:
            raise InvalidConfig.of(
                "token request",
                # Named as the JSON body names it (docs/edge.md: HTTP violations name the
                # body's fields).
                [Violation("ttlSeconds", f"must be 0 (default) to {self.max_ttl_s}")],
            )
        claims: dict[str, Any] = {
            "key": key_id,
            "exp": math.floor(now) + ttl,
            "nonce": _b64encode(secrets.token_bytes(16)),
        }
        if origin is not None:
            claims["origin"] = _origin_or_denied(origin)
        return IssuedToken(self._signer.sign(self.PURPOSE, claims), claims["exp"])

    def redeem(self, token: str, *, origin: str | None, now: float) -> str:
        """The API key id a token was issued to; the token is used up in this process.

        Raises:
            Unauthenticated: malformed, forged, unknown kid, expired, or already used.
            PermissionDenied: issued for another origin than the request's.
            RateLimited: the token's key holds ``nonces_per_key`` unexpired used tokens in
                this process (other keys' tokens are not affected).
        """
        try:
            claims = self._signer.open(self.PURPOSE, token, self.MAX_TOKEN_LENGTH)
        except TokenInvalid as exc:
            raise Unauthenticated(f"browser token rejected: {exc}") from None
        key_id, exp, nonce = claims.get("key"), claims.get("exp"), claims.get("nonce")
        bound = claims.get("origin")
        if not (isinstance(key_id, str) and _is_int(exp) and isinstance(nonce, str)):
            raise Unauthenticated("browser token rejected: malformed claims")
        if now >= exp:
            raise Unauthenticated("browser token expired")
        if bound is not None and (origin is None or _normalized(origin) != bound):
            raise PermissionDenied("browser token was issued for another origin")
        if not self._nonces.consume(key_id, nonce, exp, now):
            raise Unauthenticated("browser token already used")
        return key_id


class NonceCache:
    """Used nonces until their token's expiry, each API key's in a bounded share of its own.

    Why a share per key rather than one bound for the process: under a shared bound, one key
    that redeems many tokens (its own, minted at will at ``POST /v1/auth/token``) fills the
    cache, and every other key's valid tokens are refused until those nonces expire; forgetting
    live nonces to make room instead would let a used token open a second session. Recording a
    nonce only once the key's session limiter has admitted the session would not isolate the
    keys either: a WebSocket takes its per-minute slot at its ``start``, after the upgrade that
    redeems the token, so a client that upgrades and leaves spends nonces that no limit counts,
    and the keys' limits added up can exceed any shared bound anyway. With a share each, a key
    that fills its own is refused its own tokens (``RATE_LIMITED``), and no other key notices.

    Memory: ``consume`` forgets the expired nonces of every key first, so it follows the tokens
    still valid; at most ``per_key`` per key id, and key ids are signed claims, so only keys
    this deployment issued tokens to reach here (the keys file bounds them). A dict entry and
    two heap entries, ~200 bytes per nonce.
    """

    def __init__(self, per_key: int) -> None:
        if per_key < 1:
            raise ValueError("nonces per key must be positive")
        self._per_key = per_key
        # (key id, nonce) -> expiry: the nonce is a claim like the key, so a pair is what a
        # token's reuse repeats.
        self._expiry: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, str, str]] = []  # (expiry, key id, nonce), every key's
        self._by_key: dict[str, list[float]] = {}  # a heap of expiries per key with nonces

    def __len__(self) -> int:
        return len(self._expiry)

    def held(self, key_id: str) -> int:
        """How many unexpired nonces of ``key_id`` are remembered (as of the last consume)."""
        return len(self._by_key.get(key_id, ()))

    def consume(self, key_id: str, nonce: str, exp: float, now: float) -> bool:
        """Record ``nonce`` of a token of ``key_id`` (valid until ``exp``); False if it was
        already recorded.

        Raises:
            RateLimited: ``key_id`` holds ``per_key`` unexpired nonces (retry delay: until the
                first of them expires).
        """
        self._forget_expired(now)
        if (key_id, nonce) in self._expiry:
            return False
        held = self._by_key.setdefault(key_id, [])
        if len(held) >= self._per_key:
            raise RateLimited(
                f"key {key_id} has {self._per_key} browser tokens in use on this gateway process",
                retry_delay=datetime.timedelta(seconds=math.ceil(held[0] - now)),
            )
        self._expiry[(key_id, nonce)] = exp
        heapq.heappush(self._heap, (exp, key_id, nonce))
        heapq.heappush(held, exp)
        return True

    def _forget_expired(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, key_id, nonce = heapq.heappop(self._heap)
            del self._expiry[(key_id, nonce)]
            # The whole heap gives up expiries in order, so this one is its key's earliest.
            held = self._by_key[key_id]
            heapq.heappop(held)
            if not held:
                del self._by_key[key_id]


@dataclass(frozen=True, slots=True)
class ResumeClaims:
    """What a resume token holds: enough to continue the session on any gateway process."""

    session_id: str
    key_id: str
    kind: SessionKind
    config: bytes  # the session's serialized config, opaque here
    issued_at: int
    expires_at: int
    resumes: int = 0  # resumes before the token was issued (SessionStarted.resumes)


class ResumeTokens:
    """Tokens that let a client continue a session on any gateway process (no shared store)."""

    PURPOSE = "resume/v1"
    MAX_TOKEN_LENGTH = 16384

    def __init__(self, signer: TokenSigner) -> None:
        self._signer = signer

    def issue(
        self,
        *,
        session_id: str,
        key_id: str,
        kind: SessionKind,
        config: bytes,
        now: float,
        ttl_s: int,
        resumes: int = 0,
    ) -> IssuedToken:
        """A resume token valid for ``ttl_s`` seconds from ``now``, for a session resumed
        ``resumes`` times so far.

        Raises:
            ValueError: an unknown kind, a non-positive TTL, or a token over MAX_TOKEN_LENGTH
                (a config too large to carry).
        """
        if kind not in SESSION_KINDS or ttl_s <= 0:
            raise ValueError(f"resume token: kind {kind!r}, ttl {ttl_s}")
        issued = math.floor(now)
        claims = {
            "sid": session_id,
            "key": key_id,
            "kind": kind,
            "cfg": _b64encode(config),
            "iat": issued,
            "exp": issued + ttl_s,
        }
        if resumes:
            claims["n"] = resumes
        token = self._signer.sign(self.PURPOSE, claims)
        if len(token) > self.MAX_TOKEN_LENGTH:
            raise ValueError(f"resume token of {len(token)} characters (config too large)")
        return IssuedToken(token, issued + ttl_s)

    def verify(self, token: str, *, key_id: str, kind: SessionKind, now: float) -> ResumeClaims:
        """The claims of a resume token presented on a ``kind`` session authenticated as
        ``key_id``.

        Raises:
            ResumeRejected: malformed, forged, unknown kid, expired, another kind of session,
                or issued to another API key.
        """
        try:
            claims = self._signer.open(self.PURPOSE, token, self.MAX_TOKEN_LENGTH)
            resume = _resume_claims(claims)
        except TokenInvalid as exc:
            raise ResumeRejected(f"resume token rejected: {exc}") from None
        if now >= resume.expires_at:
            raise ResumeRejected("resume token expired: start a new session")
        if resume.kind != kind:
            raise ResumeRejected(f"resume token of a {resume.kind} session, not {kind}")
        if resume.key_id != key_id:
            raise ResumeRejected("resume token was issued to another API key")
        return resume


def _resume_claims(claims: dict[str, Any]) -> ResumeClaims:
    sid, key, kind, cfg = (claims.get(k) for k in ("sid", "key", "kind", "cfg"))
    iat, exp, resumes = claims.get("iat"), claims.get("exp"), claims.get("n", 0)
    if not (
        isinstance(sid, str)
        and isinstance(key, str)
        and kind in SESSION_KINDS
        and isinstance(cfg, str)
        and _is_int(iat)
        and _is_int(exp)
        and _is_int(resumes)
        and resumes >= 0
    ):
        raise TokenInvalid("malformed claims")
    try:
        config = _b64decode(cfg) if cfg else b""
    except ValueError as exc:
        raise TokenInvalid("malformed claims") from exc
    return ResumeClaims(sid, key, kind, config, iat, exp, resumes)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _origin_or_denied(origin: str) -> str:
    try:
        return normalize_origin(origin)
    except ValueError:
        raise PermissionDenied("the Origin header is not an origin") from None


def _normalized(origin: str) -> str | None:
    try:
        return normalize_origin(origin)
    except ValueError:
        return None


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Unpadded base64url. Raises ValueError (binascii.Error) on bad input."""
    if not _SEGMENT.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

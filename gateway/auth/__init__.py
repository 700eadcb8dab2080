"""Auth and limits of the gateway: API keys, browser and resume tokens, per-key session limits.

Nothing here does network I/O or depends on the HTTP framework: inputs are plain values
(header pairs, subprotocol lists, origin strings, clocks), outputs are values or voxwire errors
(``Unauthenticated``, ``PermissionDenied``, ``RateLimited``, ``ResumeRejected``). The only I/O
is the keys file (read on ``KeyStore.reload_if_changed``, a few hundred bytes per key; call it
off the hot path, e.g. from a timer every ``keys_reload_interval_s``).

    keys.py          key format, hashes, the keys file's entries, KeyStore (reload on change)
    keys_file.py     the TOML file: atomic locked writes, change signature
    origins.py       RFC 6454 origins: normalize, match
    tokens.py        HMAC-SHA256 signer with kid rotation; BrowserTokens; ResumeTokens
    limits.py        SessionLimiter: concurrent sessions (permits), new sessions per minute (GCRA);
                     CatalogLimiter: capabilities requests per minute
    authenticate.py  Authenticator: headers + subprotocols + Origin -> Principal
    redaction.py     redact() and RedactingFilter: keys and tokens never reach a log
    config.py        AuthConfig, the [auth] settings
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.auth.authenticate import Authenticator, Principal, WebSocketAuth
from gateway.auth.config import AuthConfig
from gateway.auth.keys import KeyStore
from gateway.auth.limits import CatalogLimiter, KeyLimits, SessionLimiter, SessionPermit
from gateway.auth.tokens import BrowserTokens, ResumeTokens, TokenSigner

__all__ = [
    "AuthConfig",
    "AuthServices",
    "Authenticator",
    "CatalogLimiter",
    "KeyLimits",
    "KeyStore",
    "Principal",
    "ResumeTokens",
    "SessionLimiter",
    "SessionPermit",
    "WebSocketAuth",
]


@dataclass(frozen=True, slots=True)
class AuthServices:
    """Everything the gateway needs from this package, built from one AuthConfig."""

    keys: KeyStore
    authenticator: Authenticator
    limiter: SessionLimiter
    catalog: CatalogLimiter  # requests that are not sessions (capabilities)
    browser_tokens: BrowserTokens
    resume_tokens: ResumeTokens

    @classmethod
    def from_config(
        cls,
        config: AuthConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic_clock: Callable[[], float] = time.monotonic,
    ) -> AuthServices:
        """Load the keys file and build the signer, token kinds, authenticator and limiters.

        Raises:
            KeysFileError: the keys file is missing or invalid.
            ValueError: a signing secret that does not parse.
        """
        keys = KeyStore(config.keys_file, config.default_limits())
        signer = TokenSigner.from_config(config.token_signing_keys, config.token_current_kid)
        browser_tokens = BrowserTokens(
            signer,
            default_ttl_s=config.browser_token_ttl_s,
            max_ttl_s=config.browser_token_max_ttl_s,
            nonces_per_key=config.browser_token_nonces_per_key,
        )
        return cls(
            keys=keys,
            authenticator=Authenticator(keys, browser_tokens, wall_clock=wall_clock),
            limiter=SessionLimiter(
                concurrency_retry_delay=config.concurrency_retry_delay_s, clock=monotonic_clock
            ),
            catalog=CatalogLimiter(
                floor_per_minute=config.capabilities_per_minute, clock=monotonic_clock
            ),
            browser_tokens=browser_tokens,
            resume_tokens=ResumeTokens(signer),
        )

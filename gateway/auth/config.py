"""The auth settings the gateway's configuration embeds (its ``[auth]`` table)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gateway.auth.limits import KeyLimits
from gateway.auth.tokens import parse_secret

DEFAULT_KEYS_FILE = Path("voxwire-keys.toml")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Auth settings. Validated on construction (``ValueError`` names the field)."""

    # The API keys file (TOML, hashes only); `voxwire keys create --file` writes it.
    keys_file: Path = DEFAULT_KEYS_FILE
    # How often the gateway checks the keys file for changes (inode, size, mtime), seconds.
    keys_reload_interval_s: float = 2.0
    # Token signing secrets by key id ("kid"): "hex:<64+ hex digits>" or "base64:<...>", at
    # least 32 bytes each, the same on every gateway process. Every kid here verifies.
    # Generate one: python -c "import secrets; print('hex:' + secrets.token_hex(32))"
    token_signing_keys: Mapping[str, str] = field(default_factory=dict)
    # The kid that signs new tokens (browser and resume). Rotation: add the new kid
    # everywhere, then make it current, then remove the old one after the longest token
    # lifetime (the resume horizon) has passed.
    token_current_kid: str = ""
    # Browser session tokens: lifetime when the request asks for none, and the most a
    # request may ask for (POST /v1/auth/token, ttlSeconds), seconds.
    browser_token_ttl_s: int = 60
    browser_token_max_ttl_s: int = 300
    # Used browser-token nonces (single use) each API key may have remembered per process
    # until their tokens expire: a key at its share has its own redemptions RATE_LIMITED until
    # its oldest expires, and other keys are not affected (gateway/auth/tokens.py, NonceCache).
    # 4096 is 4096 token sessions a minute per key with 60 s tokens. ~200 bytes each; memory
    # is at most this many per key of the keys file. (Was browser_token_nonce_capacity, one
    # bound shared by every key, which one key could fill.)
    browser_token_nonces_per_key: int = 4096
    # Limits of keys whose entry sets none.
    default_max_concurrent_sessions: int = 10
    default_max_new_sessions_per_minute: int = 60
    # Retry delay announced at the concurrency limit (when a slot frees is unknown), seconds.
    concurrency_retry_delay_s: float = 1.0
    # Capabilities requests (GET /v1/capabilities, gRPC GetCapabilities) per key per minute, a
    # bucket of its own (gateway/auth/limits.py, CatalogLimiter); a key whose
    # max_new_sessions_per_minute is higher may make that many, so a client that asks once
    # per session never meets this limit first. Each request reaches an adapter.
    capabilities_per_minute: int = 600

    def __post_init__(self) -> None:
        if not self.token_signing_keys:
            raise ValueError("auth.token_signing_keys: at least one signing key is needed")
        if self.token_current_kid not in self.token_signing_keys:
            raise ValueError("auth.token_current_kid must name one of auth.token_signing_keys")
        for kid, secret in self.token_signing_keys.items():
            try:
                parse_secret(secret)
            except ValueError as exc:
                raise ValueError(f"auth.token_signing_keys.{kid}: {exc}") from None
        if not 0 < self.browser_token_ttl_s <= self.browser_token_max_ttl_s:
            raise ValueError("auth: 0 < browser_token_ttl_s <= browser_token_max_ttl_s")
        for name in ("keys_reload_interval_s", "concurrency_retry_delay_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"auth.{name} must be positive")
        if self.capabilities_per_minute < 1:
            raise ValueError("auth.capabilities_per_minute must be positive")
        if self.browser_token_nonces_per_key < 1:
            raise ValueError("auth.browser_token_nonces_per_key must be positive")
        self.default_limits()  # validates both defaults

    def default_limits(self) -> KeyLimits:
        """The limits of a key that sets none. Raises ValueError if they are not positive."""
        return KeyLimits(
            max_concurrent_sessions=self.default_max_concurrent_sessions,
            max_new_sessions_per_minute=self.default_max_new_sessions_per_minute,
        )

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], base_dir: Path | None = None) -> AuthConfig:
        """From a parsed ``[auth]`` TOML table; a relative ``keys_file`` is taken relative to
        ``base_dir`` (the config file's directory).

        Raises:
            ValueError: an unknown field, or a value that does not validate.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"auth: unknown settings {', '.join(unknown)}")
        values = dict(table)
        if "keys_file" in values:
            path = Path(values["keys_file"])
            values["keys_file"] = base_dir / path if base_dir and not path.is_absolute() else path
        if "token_signing_keys" in values:
            values["token_signing_keys"] = dict(values["token_signing_keys"])
        return cls(**values)

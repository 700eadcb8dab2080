"""Web origins (RFC 6454): normalizing the configured ones and the ``Origin`` header, matching.

An origin is ``scheme://host[:port]`` with no path, query, fragment or user info, or the
opaque ``null`` that sandboxed frames and ``file:`` pages send (RFC 6454 section 7.3). Scheme
and host compare case-insensitively and a default port is the same as none (section 4), so
both sides are normalized to lower case without the default port before comparing. ``*`` in a
key's allowed origins admits any origin, ``null`` included; it must be written explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

ANY = "*"
NULL = "null"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(value: str) -> str:
    """The comparable form of an origin: ``https://Example.COM:443`` -> ``https://example.com``.

    Raises:
        ValueError: not an origin (a path, query, user info, another scheme, non-ASCII...).
    """
    if value == NULL:
        return NULL
    if not value.isascii() or any(c.isspace() for c in value):
        raise ValueError(f"not an origin: {value!r}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not an origin: {value!r}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http(s) origin: {value!r}")
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"an origin has no path, query or user info: {value!r}")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal: keep its brackets
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def normalize_allowed(values: Iterable[str]) -> tuple[str, ...]:
    """A key's allowed origins, each normalized (``*`` kept as is), duplicates dropped.

    Raises:
        ValueError: an entry is neither ``*`` nor an origin.
    """
    seen: dict[str, None] = {}
    for value in values:
        seen[ANY if value == ANY else normalize_origin(value)] = None
    return tuple(seen)


def origin_allowed(origin: str, allowed: Iterable[str]) -> bool:
    """Whether a request's ``Origin`` header value is admitted by a key's (normalized) list.

    A malformed origin is never admitted, not even by ``*``.
    """
    try:
        normalized = normalize_origin(origin)
    except ValueError:
        return False
    return any(entry == ANY or entry == normalized for entry in allowed)

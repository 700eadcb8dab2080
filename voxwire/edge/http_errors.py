"""The error reasons each HTTP endpoint of the edge answers (docs/contract.md table).

One list per operation, read by the OpenAPI document (gateway/http/openapi.py: each operation
lists the statuses it can answer and, per status, the reasons) and by the edge fuzzer's oracle
(voxwire/fuzz/edge/verdict.py: an error a fuzz case got that its endpoint does not list is a
finding). Before, the document gave every status of the table to every operation: 413 on
``GET /v1/capabilities``, 409 ``CONTEXT_ALREADY_OPEN`` on ``POST /v1/stt``.

Where the reasons come from: every endpoint authenticates (``UNAUTHENTICATED``; an ``Origin``
the key does not allow, ``PERMISSION_DENIED``), counts against the key's limits
(``RATE_LIMITED``), is refused while the gateway drains (``DRAINING``) and can fail
unexpectedly (``INTERNAL``); the token endpoint has no limit of its own and is served while
the gateway drains. A body is read with a size and a time limit (``BODY_TOO_LARGE``,
``IDLE_TIMEOUT``). The speech endpoints add what their own checks refuse and what the contract's
stream behind them answers (docs/contract.md, each RPC's errors). A reason from an upstream
server that is not listed still comes as ``{"error": ...}``: the document's ``default``.
"""

from __future__ import annotations

from voxwire.errors import reasons

_EVERY = ("UNAUTHENTICATED", "PERMISSION_DENIED", "RATE_LIMITED", "DRAINING", "INTERNAL")
_BODY = ("BODY_TOO_LARGE", "IDLE_TIMEOUT", "INVALID_MESSAGE")
_UPSTREAM = ("UNKNOWN_MODEL", "MODEL_ERROR", "OVERLOADED", "BACKEND_UNAVAILABLE")
_FORMAT = ("INVALID_CONFIG", "UNSUPPORTED_ENCODING", "UNSUPPORTED_SAMPLE_RATE")
_MEDIA = ("UNSUPPORTED_MEDIA_TYPE", "NOT_ACCEPTABLE")

ERROR_REASONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", "/v1/stt"): (
        *_EVERY,
        *_BODY,
        *_UPSTREAM,
        *_FORMAT,
        *_MEDIA,
        "INVALID_AUDIO",
        "MISALIGNED_AUDIO",
        "STREAM_TOO_LONG",
    ),
    ("POST", "/v1/tts"): (
        *_EVERY,
        *_BODY,
        *_UPSTREAM,
        *_FORMAT,
        *_MEDIA,
        "TEXT_TOO_LARGE",
        "SSML_INVALID",
        "INVALID_PRONUNCIATION",
    ),
    # Not refused while draining: a token opens a session on any gateway of the deployment.
    ("POST", "/v1/auth/token"): (
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "INTERNAL",
        *_BODY,
        "INVALID_CONFIG",
    ),
    # INVALID_CONFIG: it takes no query parameters (docs/edge.md, "Query strings").
    ("GET", "/v1/capabilities"): (*_EVERY, "BACKEND_UNAVAILABLE", "INVALID_CONFIG"),
}


def by_status(method: str, path: str) -> dict[int, list[str]]:
    """The reasons ``method path`` answers, by HTTP status (the table's)."""
    table = reasons()
    grouped: dict[int, list[str]] = {}
    for reason in ERROR_REASONS[(method, path)]:
        grouped.setdefault(table[reason].http_status, []).append(reason)
    return dict(sorted(grouped.items()))


def documented(method: str, path: str, reason: str) -> bool:
    """Whether ``reason`` is one ``method path`` lists (False for a path not listed)."""
    return reason in ERROR_REASONS.get((method, path), ())

"""Keeping API keys and tokens out of logs: ``redact()`` and a ``logging.Filter`` around it.

What is removed (replaced by ``[REDACTED]``):
- API keys ``vx_<key id>_<secret>``: the secret (the key id stays, it is not secret and says
  which key a line is about); anything else starting ``vx_`` that is long enough to be a
  mangled key is removed whole;
- the credentials after ``Bearer`` (any case), wherever they appear (a header dumped whole);
- the token in a ``voxwire.token.<token>`` subprotocol;
- signed tokens anywhere (browser and resume tokens, and JWTs): a base64url segment starting
  ``eyJ`` (the encoding of ``{"``) followed by ``.`` and another segment;
- the values of query parameters and ``key=value`` pairs named like a credential (``token``,
  ``api_key``, ``resume_token``, ``access_token``, ``authorization``...).

Install the filter on every handler (``handler.addFilter(RedactingFilter())``): a filter on a
logger sees only the records logged on that very logger, not those of its children, whereas a
handler sees every record it writes (``install_redaction`` does that for a logger's handlers).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # The token of a subprotocol offer, before the generic token rule eats it.
    (re.compile(r"(voxwire\.token\.)[A-Za-z0-9._~+/=-]+"), rf"\1{REDACTED}"),
    # A whole API key: keep its id.
    (re.compile(r"(?<![A-Za-z0-9])(vx_[a-z0-9]{4,32}_)[A-Za-z0-9_-]{8,}"), rf"\1{REDACTED}"),
    # Anything else that looks like a (mangled or truncated) key, unless redacted above.
    (re.compile(r"(?<![A-Za-z0-9])vx_(?![a-z0-9]{4,32}_\[)[A-Za-z0-9_-]{12,}"), REDACTED),
    # The credentials after the Bearer scheme (RFC 6750 b64token characters; 8 or more, so
    # that prose like "a bearer token" stays readable).
    # A key already redacted above (vx_<id>_[REDACTED]) is left as it is.
    (
        re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=-]{8,}(?![\[A-Za-z0-9._~+/=-])"),
        rf"\1\2{REDACTED}",
    ),
    # Signed tokens: base64url JSON claims "." MAC (and more segments: JWTs).
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]+)+"), REDACTED),
    # Credential-named parameters: query strings, form bodies, key=value log fields.
    (
        re.compile(
            r"(?i)\b((?:access_?|resume_?|browser_?|api_?|x-api-)?(?:token|key|secret)"
            r"|authorization|password)([\"']?\s*[=:]\s*[\"']?)"
            r"(?!\[REDACTED\]|bearer\s)[^\s&,;\"']+"
        ),
        rf"\1\2{REDACTED}",
    ),
)


def redact(text: str) -> str:
    """``text`` with every API key and token in it replaced (see the module docstring)."""
    lowered = text.lower()
    # Every pattern above needs one of these words; most log lines have none (a plain
    # substring test is ~10x cheaper than a case-insensitive regex search).
    if not (
        "vx_" in lowered
        or "eyj" in lowered
        or "bearer" in lowered
        or "token" in lowered
        or "key" in lowered
        or "secret" in lowered
        or "authorization" in lowered
        or "password" in lowered
    ):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# The attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class RedactingFilter(logging.Filter):
    """Rewrites each record so that no key or token reaches a handler; never drops one.

    The format string and each argument are redacted in place, so formatters that read
    ``record.args`` (uvicorn's access log does) keep working; if the formatted message still
    holds something to redact (a key split across arguments), the record is collapsed to its
    redacted message. The traceback text, the stack text and ``extra`` fields are redacted too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {k: _redact_value(v) for k, v in record.args.items()}
        elif record.args:
            record.args = tuple(_redact_value(v) for v in record.args)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: still log it, redacted and unformatted
            message = f"{record.msg} {record.args!r}"
        if redact(message) != message:
            record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            # Formatters use exc_text when it is set; set it redacted.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name in vars(record).keys() - _STANDARD:  # the ``extra=`` fields
            setattr(record, name, _redact_value(getattr(record, name)))
        return True


def _redact_value(value: Any) -> Any:
    """A string redacted; any other object kept, unless its text holds something to redact
    (then its redacted text)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("latin-1")).encode("latin-1")
    try:
        text, shown = str(value), repr(value)
    except Exception:
        return value
    if redact(text) != text or redact(shown) != shown:
        return redact(text)
    return value


def install_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Add one RedactingFilter to every handler of ``logger`` (default: the root logger).

    Handlers added later need ``handler.addFilter(...)`` with the returned filter.
    """
    target = logger if logger is not None else logging.getLogger()
    redacting = RedactingFilter()
    for handler in target.handlers:
        handler.addFilter(redacting)
    return redacting

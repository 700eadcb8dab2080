"""Content negotiation by the Accept header (RFC 9110, 12.5.1), for a response the gateway can
send in more than one form (``POST /v1/tts``: its audio, or Server-Sent Events).

A form is admitted with the weight ``q`` of the most specific media range that matches one of
its names (``audio/wav`` over ``audio/*`` over ``*/*``); the form with the highest weight
wins; on a tie, the one matched by the more specific range ("text/event-stream, */*" asks
for events), then the first offered; none with a weight above 0 is ``None``, which the endpoint
answers 406 (RFC 9110, 15.5.7) rather than send what the client said it cannot take (audio it
would save as MP3). No Accept header, or one of nothing but malformed ranges, admits every
form (RFC 9110: "a request without any Accept header field implies that the user agent will
accept any media type").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Form:
    """One form of a response: its media type (first) and its aliases. ``named``: admitted
    only by a range that names it or its type (``text/*``), never by ``*/*`` alone: an event
    stream, or a bare transcript, is another shape of the answer, not another encoding of it,
    and a client that takes anything expects the default."""

    names: tuple[str, ...]
    named: bool = False


@dataclass(frozen=True, slots=True)
class _Range:
    type: str
    subtype: str
    q: float


def _ranges(accept: str) -> list[_Range]:
    ranges = []
    for part in accept.split(","):
        media, *params = part.split(";")
        type_, slash, subtype = media.strip().lower().partition("/")
        if not slash or not type_ or not subtype or (type_ == "*" and subtype != "*"):
            continue  # malformed: ignored, as a range that matches nothing
        q: float | None = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(1.0, max(0.0, float(value.strip())))
                except ValueError:
                    q = None  # malformed too
        if q is not None:
            ranges.append(_Range(type_, subtype, q))
    return ranges


def _weight(ranges: Sequence[_Range], form: Form) -> tuple[float, int]:
    """(q, specificity) of the most specific range that matches ``form``; (0, 0) for none."""
    best = (0, 0.0)  # (specificity, q)
    for name in form.names:
        type_, _, subtype = name.partition("/")
        for r in ranges:
            if (r.type, r.subtype) == (type_, subtype):
                specificity = 3
            elif r.type == type_ and r.subtype == "*":
                specificity = 2
            elif r.type == "*" and not form.named:
                specificity = 1
            else:
                continue
            if specificity > best[0] or (specificity == best[0] and r.q > best[1]):
                best = (specificity, r.q)
    return best[1], best[0]


def choose(accept: str | None, forms: Sequence[Form]) -> Form | None:
    """The form ``accept`` prefers, or None when it admits none."""
    ranges = _ranges(accept or "")
    if not ranges:
        return next((form for form in forms if not form.named), None)
    # Highest weight, then the most specific range, then the first offered.
    best = max(range(len(forms)), key=lambda i: (*_weight(ranges, forms[i]), -i))
    return forms[best] if _weight(ranges, forms[best])[0] > 0 else None

"""Content negotiation by Accept (gateway/http/accept.py), on POST /v1/tts's forms."""

from __future__ import annotations

import pytest

from gateway.http.accept import Form, choose

WAV = Form(("audio/wav", "audio/x-wav"))
SSE = Form(("text/event-stream",), named=True)
FORMS = (WAV, SSE)


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, WAV),
        ("", WAV),
        ("*/*", WAV),
        ("audio/*", WAV),
        ("audio/x-wav", WAV),
        ("AUDIO/WAV", WAV),
        ("text/event-stream", SSE),
        ("text/event-stream, */*", SSE),  # the more specific range
        ("text/event-stream, audio/wav", WAV),  # a tie: the first offered
        ("audio/wav;q=0.5, text/event-stream", SSE),
        ("text/event-stream;q=0.5, audio/wav", WAV),  # was events: any mention won
        ("text/event-stream;q=0, */*", WAV),
        ("audio/*;q=0.2, audio/wav;q=0", None),  # the most specific range's weight
        ("audio/mpeg", None),
        ("audio/mpeg, audio/ogg;q=0.9", None),
        ("application/json", None),
        ("text/*", None),  # events only when named
        ("text/event-stream;q=0", None),
        ("garbage", WAV),  # nothing readable: as if absent
        ("audio/wav;q=abc", WAV),
        ("*/wav", WAV),  # malformed, ignored
    ],
)
def test_the_preferred_form_or_none(accept: str | None, chosen: Form | None) -> None:
    assert choose(accept, FORMS) is chosen

"""Content negotiation by Accept (gateway/http/accept.py), on POST /v1/tts's forms."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        ("text/*", SSE),  # events when named, or their type
        ("*/*;q=0.5", WAV),
        ("text/event-stream;q=0", None),
        ("garbage", WAV),  # nothing readable: as if absent
        ("audio/wav;q=abc", WAV),
        ("*/wav", WAV),  # malformed, ignored
    ],
)
def test_the_preferred_form_or_none(accept: str | None, chosen: Form | None) -> None:
    assert choose(accept, FORMS) is chosen


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_any_accept_header_gives_a_form_or_none_and_never_raises(accept: str) -> None:
    assert choose(accept, FORMS) in (WAV, SSE, None)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["audio/wav", "audio/*", "*/*", "text/event-stream", "text/*", "audio/mpeg"]
            ),
            st.sampled_from(["", ";q=0", ";q=0.5", ";q=1", ";q=0.001"]),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_the_chosen_form_has_the_highest_weight(ranges: list[tuple[str, str]]) -> None:
    accept = ", ".join(media + q for media, q in ranges)
    weights = {"audio/wav": 0.0, "text/event-stream": 0.0}
    # The most specific range that matches each form decides its weight (RFC 9110 12.5.1).
    for form, matches in (
        ("audio/wav", ["audio/wav", "audio/*", "*/*"]),
        ("text/event-stream", ["text/event-stream", "text/*"]),
    ):
        for media in matches:
            given = [float(q[3:]) if q else 1.0 for m, q in ranges if m == media]
            if given:
                weights[form] = max(given)
                break
    chosen = choose(accept, FORMS)
    best = max(weights.values())
    if best == 0:
        assert chosen is None, (accept, weights)
    else:
        assert chosen is not None and weights[chosen.names[0]] == best, (accept, weights)

"""voxwire.client.twilio_stream.FrameBatch: Twilio's frames gathered into STT messages."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from voxwire.client.twilio_stream import FrameBatch


@given(
    batch_ms=st.sampled_from([1, 20, 60, 100]),
    frames=st.lists(st.integers(min_value=0, max_value=1200), max_size=40),
)
def test_every_byte_goes_out_once_in_order_in_messages_of_at_least_the_batch(
    batch_ms: int, frames: list[int]
):
    batch = FrameBatch(batch_ms)
    audio = [bytes([i % 251]) * n for i, n in enumerate(frames)]
    sent = [m for frame in audio if (m := batch.add(frame)) is not None]
    rest = batch.rest()
    assert b"".join(sent) + (rest or b"") == b"".join(audio)
    assert all(len(m) >= batch_ms * 8 for m in sent)
    assert rest is None or 0 < len(rest) < batch_ms * 8
    assert batch.rest() is None  # taken once
    assert batch.total_ms == sum(frames) // 8


def test_a_frame_that_is_a_whole_message_goes_as_it_came():
    batch = FrameBatch(20)
    frame = b"\xff" * 160
    assert batch.add(frame) is frame  # no copy
    assert batch.add(b"\xff" * 80) is None
    assert batch.add(b"\x7f" * 80) == b"\xff" * 80 + b"\x7f" * 80

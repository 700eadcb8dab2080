"""voxwire.client.twilio_stream.FrameBatch: Twilio's frames gathered into STT messages."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxwire.client import SessionClosed
from voxwire.client.twilio_stream import FrameBatch, read_start


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


def runs(flags: list[bool]) -> int:
    return sum(1 for i, f in enumerate(flags) if f and (i == 0 or not flags[i - 1]))


@given(
    batch_ms=st.sampled_from([20, 100]),
    dropped=st.lists(st.booleans(), min_size=2, max_size=60),
)
def test_frames_twilio_did_not_deliver_come_back_as_silence_in_their_place(
    batch_ms: int, dropped: list[bool]
):
    # Twilio's 20 ms frames stamped 20 ms apart; the ones it discarded (warning 31930) never
    # come. The track's audio is what Twilio had, the missing frames silence, so every frame
    # after a gap sits where Twilio's clock put it.
    dropped[0] = dropped[-1] = False  # the first frame starts the track; a trailing gap is unseen
    batch = FrameBatch(batch_ms, silence=b"\xd5", max_fill_ms=60_000)
    frames = [bytes([1 + i % 250]) * 160 for i in range(len(dropped))]
    sent = [
        m
        for i, frame in enumerate(frames)
        if not dropped[i] and (m := batch.add(frame, 5000 + 20 * i)) is not None
    ]
    out = b"".join(sent) + (batch.rest() or b"")
    assert out == b"".join(b"\xd5" * 160 if d else f for f, d in zip(frames, dropped, strict=True))
    assert batch.start_ms == 5000
    assert batch.gaps.count == runs(dropped)
    assert batch.gaps.filled_ms == 20 * sum(dropped)
    assert batch.gaps.unfilled_ms == 0
    assert batch.total_ms == 20 * len(frames)


def test_a_gap_longer_than_the_fill_limit_is_filled_to_it_and_the_rest_counted():
    batch = FrameBatch(20, max_fill_ms=1000)
    assert batch.add(b"\x01" * 160, 0) is not None
    message = batch.add(b"\x02" * 160, 3020)  # 3 s missing
    assert message == b"\xff" * 8000 + b"\x02" * 160
    # The next frames are in step with the one after the gap: no second gap.
    for i in range(1, 5):
        assert batch.add(b"\x03" * 160, 3020 + 20 * i) == b"\x03" * 160
    assert (batch.gaps.count, batch.gaps.filled_ms, batch.gaps.unfilled_ms) == (1, 1000, 2000)
    assert batch.total_ms == 20 + 1000 + 20 * 5


def test_timestamps_in_step_behind_or_off_by_a_few_ms_add_nothing():
    batch = FrameBatch(20)
    for ts in (100, 120, 145, 160, 160, 180):  # one 5 ms late (rounding), then a repeat
        assert batch.add(b"\x04" * 160, ts) == b"\x04" * 160
    assert batch.gaps.count == 0 and batch.total_ms == 120


def test_no_fill_when_the_limit_is_zero_but_the_gap_is_counted():
    batch = FrameBatch(20, max_fill_ms=0)
    batch.add(b"\x01" * 160, 0)
    assert batch.add(b"\x02" * 160, 520) == b"\x02" * 160
    assert (batch.gaps.count, batch.gaps.filled_ms, batch.gaps.unfilled_ms) == (1, 0, 500)


class _Script:
    """Twilio's side of a media socket as a list of messages (None: the socket closed; the
    list's end: Twilio says nothing more)."""

    def __init__(self, *messages: dict | None) -> None:
        self._messages = list(messages)

    async def receive_text(self) -> str | None:
        if not self._messages:
            await asyncio.sleep(3600)
        message = self._messages.pop(0)
        return None if message is None else json.dumps(message)

    async def send_text(self, data: str) -> None:
        raise AssertionError("nothing is sent before 'start'")


CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
STOP = {"event": "stop", "streamSid": "MZ0", "stop": {"callSid": "CA0"}}


@pytest.mark.parametrize(
    ("script", "error", "says"),
    [
        # A stop before start: the socket was held for the whole timeout, then a bare
        # TimeoutError (the example's log: "Error handling request", no cause).
        ((CONNECTED, STOP), SessionClosed, "stopped before its 'start'"),
        # A hang-up before start was InvalidMessage, as if the caller's side were malformed.
        ((CONNECTED, None), SessionClosed, "closed before its 'start'"),
        ((CONNECTED,), TimeoutError, "no 'start' from Twilio within 0.2 s"),
    ],
)
async def test_a_stream_that_never_starts_says_why_at_once(script, error, says):
    began = time.monotonic()
    with pytest.raises(error, match=re.escape(says)):
        await read_start(_Script(*script), timeout_s=0.2)
    assert time.monotonic() - began < 1.0

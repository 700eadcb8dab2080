"""voxwire.client.twilio_fork: both legs of a forked call transcribed through the real gateway,
adapter and models, Twilio's side played by ``FakeTwilio`` (Twilio cannot run here).

The fork carries the caller (``inbound``) from the start and the dialled agent (``outbound``)
from 1 s in; the caller asks, the agent answers after. Each leg's words come tagged with its
track, and on the stream's clock the answer follows the question.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import aiohttp
import pytest

from examples.twilio_transcribe import make_app
from gateway.auth.keys import create_key
from loadtest.wer import word_error_rate
from tests.helpers.edge import Edge
from tests.helpers.fake_twilio import MULAW_SILENCE, FakeTwilio, run_fork, serve
from tests.helpers.front import wait_until
from voxwire import errors
from voxwire.client.twilio_fork import ForkEnded, ForkEvent, TrackEvent
from voxwire.v1 import transcription_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")

TELEPHONY = Path(__file__).parents[1] / "fixtures" / "speech" / "telephony"
TRANSCRIPTS = json.loads((TELEPHONY / "transcripts.json").read_text())
BYTES_PER_MS = 8


def mulaw(name: str) -> bytes:
    return (TELEPHONY / f"{name}.mulaw").read_bytes()


def silence(seconds: float) -> bytes:
    return MULAW_SILENCE * int(8000 * seconds)


def finals(events: list[ForkEvent], track: str) -> list[tuple[TrackEvent, str]]:
    return [
        (e, e.event.transcript)
        for e in events
        if isinstance(e, TrackEvent)
        and e.track == track
        and isinstance(e.event, transcription_pb2.TranscriptResult)
        and e.event.is_final
        and e.event.transcript
    ]


async def test_both_legs_of_a_forked_call_are_transcribed_each_with_its_track(edge: Edge):
    limiter = edge.server.auth.limiter
    key_id = edge.key.split("_")[1]
    before = limiter.active_sessions(key_id)
    question, answer = mulaw("pay_bill"), mulaw("account_balance")
    answer_at_ms = len(question) // BYTES_PER_MS + 500  # on the stream's clock
    caller = question + silence(len(answer) / 8000 + 1.0)
    agent = silence(answer_at_ms / 1000 - 1.0) + answer  # its leg starts 1 s into the stream
    events: list[ForkEvent] = []
    runner, base = await serve(make_app([edge.ws], edge.key, on_event=events.append))
    twilio = FakeTwilio(f"{base}/fork", caller, outbound=agent, outbound_from_s=1.0, tail_s=1.0)
    try:
        await twilio.run(timeout_s=40)
        assert await wait_until(lambda: bool(events) and isinstance(events[-1], ForkEnded), 15)
    finally:
        await runner.cleanup()

    (asked, asked_text), *_ = finals(events, "inbound") or [(None, "")]
    (answered, answered_text), *_ = finals(events, "outbound") or [(None, "")]
    assert word_error_rate(TRANSCRIPTS["pay_bill.wav"], asked_text) <= 0.3, asked_text
    assert word_error_rate(TRANSCRIPTS["account_balance.wav"], answered_text) <= 0.3, answered_text
    assert len(finals(events, "inbound")) == 1 and len(finals(events, "outbound")) == 1
    assert asked is not None and answered is not None
    # Twilio stamped each leg's first frame: the agent's 1 s in. On the stream's clock the
    # answer starts where it was put (its utterance starting within the recording's first second),
    # after the question ended; on its own track's offsets it would be a second early.
    assert (asked.track_start_ms, answered.track_start_ms) == (0, 1000)
    answer_start_ms = answered.stream_ms(answered.event.start_ms)
    assert answer_at_ms - 100 <= answer_start_ms <= answer_at_ms + 1000, (
        answer_start_ms,
        answer_at_ms,
    )
    assert answer_start_ms > asked.stream_ms(asked.event.end_ms)

    ended = events[-1]
    assert isinstance(ended, ForkEnded) and ended.reason == "stop", ended
    assert abs(ended.track_ms["inbound"] - (len(caller) // BYTES_PER_MS + 1000)) <= 40
    assert abs(ended.track_ms["outbound"] - len(agent) // BYTES_PER_MS) <= 40
    assert ended.unknown_track_messages == 0
    assert twilio.received_bytes == 0  # a fork sends Twilio nothing
    # Both sessions have ended on the gateway.
    assert await wait_until(lambda: limiter.active_sessions(key_id) == before, 3)


async def test_a_fork_whose_second_session_is_refused_fails_and_leaves_none_open(edge: Edge):
    """A key that allows one session at a time: one track's session opens, the other's is
    refused; ``accept`` raises the refusal and the one that opened is closed too."""
    key, _ = create_key(
        edge.keys_file,
        name="one-leg-only",
        now=datetime.datetime.now(datetime.UTC),
        max_concurrent_sessions=1,
    )
    edge.server.auth.keys.reload_if_changed()
    limiter = edge.server.auth.limiter
    key_id = key.split("_")[1]
    _, failures = await run_fork(
        edge.ws, key, silence(0.5), silence(0.5), outbound_from_s=0.0, tail_s=0
    )
    assert len(failures) == 1 and isinstance(failures[0], errors.RateLimited), failures
    assert "(1 attempt in " in str(failures[0]), failures[0]
    assert await wait_until(lambda: limiter.active_sessions(key_id) == 0, 3)


async def test_the_example_forks_both_directions_of_the_call_and_dials_the_agent(edge: Edge):
    runner, base = await serve(make_app([edge.ws], edge.key, dial="+15551230000"))
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                base.replace("ws://", "http://") + "/twiml", headers={"Host": "calls.example.com"}
            ) as response,
        ):
            body = await response.text()
            assert response.content_type == "text/xml"
    finally:
        await runner.cleanup()
    assert body == (
        '<Response><Start><Stream url="wss://calls.example.com/fork" track="both_tracks"/>'
        "</Start><Dial>+15551230000</Dial></Response>"
    )

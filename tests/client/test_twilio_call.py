"""voxwire.client.twilio: a phone call from Twilio Media Streams through the real gateway,
adapter and models, Twilio's side played by ``FakeTwilio`` (Twilio cannot run here).

The caller says three sentences in 8 kHz mu-law at real time; the application (an aiohttp
server on the SDK, as a user writes it) answers each final with "You said ...". The third
sentence starts while the second answer plays: the call clears Twilio's buffer and truncates
the answer where Twilio's marks put playback. Held against what the fake actually played.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from examples.twilio_agent import answer, make_app
from loadtest.wer import word_error_rate
from tests.helpers.edge import Edge
from tests.helpers.fake_twilio import MULAW_SILENCE, FakeTwilio, serve
from tests.helpers.front import wait_until
from voxwire import errors
from voxwire.client.twilio import (
    AiohttpSocket,
    CallEnded,
    CallEvent,
    ReplyInterrupted,
    ReplyPlayed,
    TwilioCall,
)
from voxwire.client.twilio_messages import Mark
from voxwire.client.twilio_stream import TrackGaps
from voxwire.v1 import transcription_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")

TELEPHONY = Path(__file__).parents[1] / "fixtures" / "speech" / "telephony"
BYTES_PER_MS = 8


def mulaw(name: str) -> bytes:
    return (TELEPHONY / f"{name}.mulaw").read_bytes()


def silence(seconds: float) -> bytes:
    return MULAW_SILENCE * int(8000 * seconds)


async def serve_app(
    edge: Edge, events: list[CallEvent], token_gap_s: float = 0.0, inbound_batch_ms: int = 20
) -> tuple[web.AppRunner, str]:
    """The user's server: examples/twilio_agent.py, on a free loopback port."""
    app = make_app(
        [edge.ws],
        edge.key,
        token_gap_s=token_gap_s,
        inbound_batch_ms=inbound_batch_ms,
        on_event=events.append,
    )
    runner, base = await serve(app)
    return runner, f"{base}/media"


async def test_a_call_is_answered_and_a_barge_in_stops_what_the_caller_did_not_hear(edge: Edge):
    transcripts = json.loads((TELEPHONY / "transcripts.json").read_text())
    said = ["call_me_back", "pay_bill", "account_balance"]
    caller = (
        mulaw("call_me_back")
        + silence(5.0)
        + mulaw("pay_bill")
        + silence(1.2)  # the third sentence starts over the second answer
        + mulaw("account_balance")
    )
    events: list[CallEvent] = []
    runner, url = await serve_app(edge, events)
    # 50 ms each way between Twilio and the application: a round trip across a continent.
    twilio = FakeTwilio(url, caller, tail_s=4.5, one_way_s=0.05)
    try:
        await twilio.run(timeout_s=60)
    finally:
        await runner.cleanup()

    finals = [e for e in events if isinstance(e, transcription_pb2.TranscriptResult) and e.is_final]
    assert len(finals) == 3, [e for e in events if not hasattr(e, "audio")]
    heard_by_model = " ".join(f.transcript for f in finals)
    expected = " ".join(transcripts[f"{name}.wav"] for name in said)
    assert word_error_rate(expected, heard_by_model) <= 0.3, heard_by_model

    outcomes = [e for e in events if isinstance(e, (ReplyPlayed, ReplyInterrupted))]
    assert [type(o) for o in outcomes] == [ReplyPlayed, ReplyInterrupted, ReplyPlayed], outcomes
    first, cut, third = outcomes
    assert isinstance(events[-1], CallEnded) and events[-1].reason == "stop"
    assert abs(events[-1].inbound_ms - (len(caller) // BYTES_PER_MS + 4500)) <= 40

    # What the fake played, reply by reply: each reply starts into an empty FIFO.
    assert len(twilio.starts) == 3, twilio.starts
    assert len(twilio.clears) == 1, twilio.clears
    (_, start1), (_, start2), (_, start3) = twilio.starts
    clear = twilio.clears[0]
    # The first reply played whole, and the call said so only after it had.
    # (chunk positions are whole ms: a few ms of rounding)
    assert abs((start2 - start1) / BYTES_PER_MS - first.played_ms) <= 5
    # The barge-in: the call's idea of how much of the answer played against the truth. Over
    # the 100 ms round trip, measured +5, +7 and +17 ms off; without counting the round trip
    # (the echoes' half and the clear's) -85 and -92 ms.
    truth_ms = (clear.played_bytes - start2) // BYTES_PER_MS
    assert truth_ms > 200, (truth_ms, cut)  # it was cut while playing, not before
    assert abs(cut.played_ms - truth_ms) <= 50, (cut.played_ms, truth_ms)
    assert clear.dropped_bytes > 0  # audio was waiting in Twilio's buffer, now discarded
    # Nothing of the cut answer played after the clear: the next audio is the third answer.
    assert start3 == clear.played_bytes
    # The words heard: a prefix of the answer, each ended by the played position.
    spoken = answer(finals[1].transcript).lower().rstrip(".").split()
    heard = [w.word.lower() for w in cut.heard]
    assert heard == spoken[: len(heard)], (heard, spoken)
    assert all(w.end_ms <= cut.played_ms for w in cut.heard)
    assert len(heard) >= 1
    # The third answer played whole too; the fake played nothing else.
    assert abs((len(twilio.played) - start3) / BYTES_PER_MS - third.played_ms) <= 5
    # Every mark the call sent came back (played or cleared), none twice, and none reached
    # the application: the cleared ones' echoes were consumed, not taken for its own marks.
    assert len(twilio.echoed) == len(set(twilio.echoed))
    assert not [e for e in events if isinstance(e, Mark)]


async def test_a_caller_who_hangs_up_mid_answer_ends_the_call_and_its_sessions(edge: Edge):
    events: list[CallEvent] = []
    limiter = edge.server.auth.limiter
    key_id = edge.key.split("_")[1]
    before = limiter.active_sessions(key_id)
    # The caller's frames batched five to a message (the capacity setting): heard the same.
    runner, url = await serve_app(edge, events, inbound_batch_ms=100)
    # The answer starts about 0.7 s after the sentence; the socket closes 1.5 s after it.
    twilio = FakeTwilio(url, mulaw("pay_bill"), tail_s=1.5, hang_up=True)
    try:
        await twilio.run(timeout_s=30)
        # The app reads the call's end after the socket's.
        assert await wait_until(lambda: bool(events) and isinstance(events[-1], CallEnded), 15)
    finally:
        await runner.cleanup()
    ended = events[-1]
    assert isinstance(ended, CallEnded) and ended.reason == "socket closed", ended
    finals = [e for e in events if isinstance(e, transcription_pb2.TranscriptResult) and e.is_final]
    assert len(finals) == 1, finals
    assert word_error_rate("i would like to pay my bill", finals[0].transcript) <= 0.3, finals
    assert abs(ended.inbound_ms - (len(mulaw("pay_bill")) // BYTES_PER_MS + 1500)) <= 40
    cut = [e for e in events if isinstance(e, ReplyInterrupted)]
    assert len(cut) == 1 and not [e for e in events if isinstance(e, ReplyPlayed)], events
    # What had played when the socket went: the fake's playout, give or take a chunk.
    assert twilio.starts, "the answer never reached Twilio"
    truth_ms = (len(twilio.played) - twilio.starts[0][1]) // BYTES_PER_MS
    assert abs(cut[0].played_ms - truth_ms) <= 120, (cut[0].played_ms, truth_ms)
    # Both of the call's sessions (STT and TTS) have ended on the gateway.
    assert await wait_until(lambda: limiter.active_sessions(key_id) == before, 3)


async def test_audio_twilio_discarded_is_silence_in_its_place_and_the_call_says_how_much(
    edge: Edge,
):
    # Twilio drops 600 ms of the caller's frames before the sentence (its buffer overflowed):
    # the frames after carry their timestamps, so the sentence is still heard where it was
    # said on the call's clock (without the filling, 600 ms early), and the call reports it.
    events: list[CallEvent] = []
    said_at_ms = 1500
    caller = silence(said_at_ms / 1000) + mulaw("pay_bill")
    runner, url = await serve_app(edge, events)
    twilio = FakeTwilio(url, caller, tail_s=1.0, dropped=((0.4, 1.0),))
    try:
        await twilio.run(timeout_s=30)
        assert await wait_until(lambda: bool(events) and isinstance(events[-1], CallEnded), 15)
    finally:
        await runner.cleanup()
    finals = [e for e in events if isinstance(e, transcription_pb2.TranscriptResult) and e.is_final]
    assert len(finals) == 1, finals
    assert word_error_rate("i would like to pay my bill", finals[0].transcript) <= 0.3, finals
    # The recording's speech begins within its first second (200 ms of lead measured).
    assert said_at_ms - 100 <= finals[0].start_ms <= said_at_ms + 1000, finals[0].start_ms
    ended = events[-1]
    assert isinstance(ended, CallEnded) and ended.reason == "stop", ended
    assert ended.inbound_gaps == TrackGaps(count=1, filled_ms=600, unfilled_ms=0)
    assert abs(ended.inbound_ms - (len(caller) // BYTES_PER_MS + 1000)) <= 40


async def test_a_stream_in_another_format_is_refused_before_any_session(edge: Edge):
    events: list[CallEvent] = []
    failures: list[BaseException] = []

    async def media_socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            await TwilioCall.accept(
                AiohttpSocket(ws),
                edge.ws,
                api_key=edge.key,
                stt_model="stt_pocketsphinx",
                tts_model="tts_espeak",
            )
        except Exception as exc:  # what the application sees
            failures.append(exc)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/media", media_socket)
    runner, base = await serve(app)
    url = f"{base}/media"
    twilio = FakeTwilio(url, silence(0.2), encoding="audio/x-l16", tail_s=0)
    try:
        await twilio.run(timeout_s=15)
    finally:
        await runner.cleanup()
    assert len(failures) == 1 and isinstance(failures[0], errors.UnsupportedEncoding), failures
    assert "audio/x-l16" in str(failures[0])
    assert not events


async def test_the_example_answers_twilios_webhook_with_a_bidirectional_stream(edge: Edge):
    runner, url = await serve_app(edge, [])
    http_url = url.replace("ws://", "http://").replace("/media", "/twiml")
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(http_url, headers={"Host": "agent.example.com"}) as response,
        ):
            body = await response.text()
            assert response.content_type == "text/xml"
    finally:
        await runner.cleanup()
    assert body == (
        '<Response><Connect><Stream url="wss://agent.example.com/media"/></Connect></Response>'
    )


async def test_a_barge_in_while_an_llm_still_streams_the_answer_drops_the_rest(edge: Edge):
    """The answer comes a word every 0.25 s; the caller speaks again before it is complete:
    nothing of it is played, the words still streamed are dropped without an error, and the
    next answer plays."""
    caller = mulaw("pay_bill") + silence(0.8) + mulaw("kitchen_lights")
    events: list[CallEvent] = []
    runner, url = await serve_app(edge, events, token_gap_s=0.25)
    twilio = FakeTwilio(url, caller, tail_s=6.0)
    try:
        await twilio.run(timeout_s=40)
    finally:
        await runner.cleanup()
    outcomes = [e for e in events if isinstance(e, (ReplyPlayed, ReplyInterrupted))]
    assert [type(o) for o in outcomes] == [ReplyInterrupted, ReplyPlayed], outcomes
    cut, played = outcomes
    assert cut.heard == () and cut.played_ms == 0
    assert isinstance(events[-1], CallEnded) and events[-1].reason == "stop"
    # Twilio played only the second answer.
    assert len(twilio.starts) == 1
    assert abs(len(twilio.played) / BYTES_PER_MS - played.played_ms) <= 5


class _SlowClearSocket(AiohttpSocket):
    """The application's socket, recording what it sends, with Twilio's ``clear`` slow to
    leave: while it is on its way the reply's next chunk comes from the gateway."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        super().__init__(ws)
        self.sent: list[str] = []  # event names, in order
        self.media_bytes = 0

    async def send_text(self, data: str) -> None:
        message = json.loads(data)
        self.sent.append(message["event"])
        if message["event"] == "media":
            self.media_bytes += len(message["media"]["payload"]) * 3 // 4
        if message["event"] == "clear":
            await asyncio.sleep(0.5)
        await super().send_text(data)


async def test_audio_of_a_cut_reply_that_arrives_after_the_cut_never_reaches_twilio(edge: Edge):
    """A long reply streams at the gateway's pace (1 s ahead of playback); the application
    interrupts it 1.5 s in, and the ``clear`` takes 0.5 s to leave. Chunks of the reply that
    come meanwhile, and until the truncation reaches the gateway, are dropped: after the
    ``clear`` Twilio is sent nothing more of it and plays nothing more."""
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 4)
    sockets: list[_SlowClearSocket] = []
    outcomes: list[CallEvent] = []

    async def media_socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        socket = _SlowClearSocket(ws)
        sockets.append(socket)
        call = await TwilioCall.accept(
            socket,
            edge.ws,
            api_key=edge.key,
            stt_model="stt_pocketsphinx",
            tts_model="tts_espeak",
            barge_in=False,
        )
        events = asyncio.create_task(_collect(call, outcomes))
        reply = await call.say(text)
        assert await wait_until(lambda: socket.media_bytes >= 12_000, 10)  # 1.5 s of audio
        assert await call.interrupt()
        assert isinstance(await reply.outcome(), ReplyInterrupted)
        await asyncio.sleep(1.0)  # what was still on its way from the gateway
        await events
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/media", media_socket)
    runner, base = await serve(app)
    url = f"{base}/media"
    twilio = FakeTwilio(url, silence(0.2), tail_s=4.0)
    try:
        await twilio.run(timeout_s=30)
    finally:
        await runner.cleanup()
    (socket,) = sockets
    assert socket.sent.count("clear") == 1, socket.sent
    after_clear = socket.sent[socket.sent.index("clear") + 1 :]
    assert "media" not in after_clear, after_clear
    assert len(twilio.clears) == 1
    assert len(twilio.played) == twilio.clears[0].played_bytes  # nothing played after it
    (cut,) = [e for e in outcomes if isinstance(e, ReplyInterrupted)]
    assert 0 < cut.played_ms < 4000, cut


async def _collect(call: TwilioCall, into: list[CallEvent]) -> None:
    async for event in call.events():
        into.append(event)


@pytest.mark.parametrize("hang_up", [True, False], ids=["socket-closed", "stop"])
async def test_the_answer_to_words_that_end_the_call_is_never_sent(edge: Edge, hang_up: bool):
    # The caller's last final comes after the call's end (Twilio's stop, or its socket
    # closed), and the app answers it. Before: the answer was synthesized and written to the
    # stopped stream (15 KB after a stop in a review) with its outcome never settled, or, the
    # socket closing, the write failed the whole call with the transport's error and neither
    # the call's last events nor CallEnded came.
    events: list[CallEvent] = []
    runner, url = await serve_app(edge, events)
    twilio = FakeTwilio(url, mulaw("pay_bill"), tail_s=0.1, hang_up=hang_up)
    try:
        await twilio.run(timeout_s=30)
        assert await wait_until(lambda: bool(events) and isinstance(events[-1], CallEnded), 15)
        await asyncio.sleep(1.0)  # an answer that was going to be sent has had time to be
    finally:
        await runner.cleanup()
    ended = events[-1]
    assert ended.reason == ("socket closed" if hang_up else "stop"), ended
    finals = [e for e in events if isinstance(e, transcription_pb2.TranscriptResult) and e.is_final]
    assert finals, events
    assert twilio.received_bytes == 0, twilio.received_bytes

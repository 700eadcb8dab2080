"""SttEdgeSession under any sequence of client frames, upstream answers, upstream failures,
drains and time (hypothesis, stateful), driven as ``gateway/stt/runner.py`` drives it: a
VoxwireError from a client frame becomes ``session.fail``, every ``Actions`` is carried out.

The upstream here is a toy model written for these tests (``tests.helpers.stt_toy``, named
so): it answers in order, makes a final of everything it has received when told to, acks
finalizes and updates, and ends with a summary after ``close``. What it checks is the session,
not a model.

Invariants (docs/design/edge.md, "Session states", "Sessions that survive restarts"):
- nothing but a VoxwireError escapes a client frame; nothing escapes anything else;
- every error event has a reason, every close with an error has that error's close code, and a
  close without one is 1000; after the close the session emits nothing, opens and writes
  nothing;
- each upstream stream opens at the acknowledged position (offset and utterance index) and is
  written exactly the session's audio from there, in order, no byte twice or skipped: a failover
  replays, it does not duplicate or lose;
- the acknowledged position never goes back and never passes the audio received; finals reach
  the client in utterance order, each utterance once, their offsets never going back;
- the gateway's own (forced) finalizes are never shown to the client, and one is upstream
  whenever unacknowledged audio reaches the replay window less its margin;
- memory: the replay window never holds more than its bound.
"""

from __future__ import annotations

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from gateway.stt.session import Actions, State, SttEdgeSession
from tests.helpers.clock import Clock
from tests.helpers.stt_toy import BYTES_PER_MS, LIMITS, Response, ToyUpstream
from voxwire import errors
from voxwire.edge.v1 import stt_pb2
from voxwire.v1 import audio_pb2, transcription_pb2

Client = stt_pb2.SttClientMessage
FORCE_AT_MS = LIMITS.replay_window_ms - LIMITS.force_final_margin_ms


frames_ms = st.integers(0, 300)


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.session = SttEdgeSession(
            LIMITS, session_id="s1", issue_token=lambda cfg, *_: ("tok", 2e9), clock=self.clock
        )
        self.upstream: ToyUpstream | None = None
        self.segments: list[tuple[ToyUpstream, int]] = []  # (stream, its first byte's offset)
        self.taken = bytearray()  # every byte of audio the session took, in order
        self.closed = False
        self.finalized = 0
        self.next_index = 0
        self.last_final: tuple[int, int] = (-1, 0)  # (utterance index, end)
        self.counter = 0

    # -- the runner --------------------------------------------------------------------------

    def carry_out(self, actions: Actions) -> None:
        if self.closed:
            assert not actions.to_client and not actions.to_upstream, actions
            assert actions.open_upstream is None and actions.close is None, actions
            return
        if actions.cancel_upstream:
            self.upstream = None
        for message in actions.to_client:
            self.shown(message)
        if actions.open_upstream is not None:
            config = actions.open_upstream.config
            ack = self.session.ack
            assert config.stream_offset_ms == ack.finalized_through_ms
            assert config.first_utterance_index == ack.next_utterance_index
            self.upstream = ToyUpstream(config)
            self.segments.append((self.upstream, config.stream_offset_ms * BYTES_PER_MS))
        for request in actions.to_upstream:
            assert self.upstream is not None, "a request with no upstream open"
            self.upstream.write(request)
        if actions.close is not None:
            self.closed = True
            error = actions.close.error
            if error is None:
                assert actions.close.code == 1000
            else:
                assert error.reason, error
                assert actions.close.code == error.ws_close_code, (actions.close, error)
            assert self.session.state is State.ENDED

    def shown(self, message: stt_pb2.SttServerMessage) -> None:
        kind = message.WhichOneof("message")
        if kind == "error":
            assert message.error.reason, message
        if kind == "finalize_ack":
            assert not message.finalize_ack.finalize_id.startswith("vx-forced-"), message
        if kind == "result" and message.result.is_final:
            index = int(message.result.utterance_id[1:])
            last_index, last_end = self.last_final
            assert index > last_index, (message.result, self.last_final)  # each once, in order
            assert message.result.start_ms >= last_end, (message.result, self.last_final)
            self.last_final = (index, message.result.end_ms)
        if message.HasField("ack"):
            ack = message.ack
            assert ack.finalized_through_ms >= self.finalized
            assert ack.next_utterance_index >= self.next_index
            self.finalized, self.next_index = ack.finalized_through_ms, ack.next_utterance_index

    def client(self, frame: Client | bytes) -> None:
        if not self.session.takes_audio:
            event("the runner holds the client back")
            return  # the runner reads no frame now: it waits in TCP
        window = self.session.window
        before = window.received_ms if window is not None else 0
        try:
            if isinstance(frame, bytes):
                actions = self.session.client_audio(frame)
            elif frame.WhichOneof("message") == "start":
                actions = self.session.start(frame.start.config)
            else:
                actions = self.session.client_message(frame)
        except errors.VoxwireError as exc:
            assert exc.reason
            actions = self.session.fail(exc)
        window = self.session.window
        if isinstance(frame, bytes) and window is not None and window.received_ms > before:
            self.taken += frame
        self.carry_out(actions)

    # -- the client --------------------------------------------------------------------------

    @initialize(streaming=st.booleans())
    def begin(self, streaming: bool) -> None:
        """Half the runs start streaming at once (the rest start however the rules say)."""
        if streaming:
            self.start(16000, twice=False)
            self.upstream_says("started")

    @rule(
        ms=frames_ms,
        chunks=st.integers(1, 4),
        # A bad frame ends the session: rare, so that most runs live long enough to fail over.
        how=st.sampled_from(["whole"] * 30 + ["odd", "huge"]),
    )
    def audio(self, ms: int, chunks: int, how: str) -> None:
        self.send_audio(ms, chunks, how)

    def send_audio(self, ms: int, chunks: int, how: str) -> None:
        for _ in range(chunks):
            # Distinct bytes, so that audio sent twice or out of order does not compare equal.
            data = bytes((self.counter + i) % 251 for i in range(ms * BYTES_PER_MS))
            self.counter += 1
            if how == "odd":
                data += b"\x01"
            elif how == "huge":
                data = bytes(LIMITS.max_frame_bytes + 2)
            self.client(data)

    @precondition(lambda self: self.session.state is State.AWAITING_START)
    @rule(rate=st.sampled_from([16000] * 5 + [12345]), twice=st.sampled_from([False] * 5 + [True]))
    def start(self, rate: int, twice: bool) -> None:
        fmt = audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate
        )
        config = transcription_pb2.TranscriptionConfig(model="m", audio_format=fmt)
        for _ in range(2 if twice else 1):
            self.client(Client(start=stt_pb2.SttStart(config=config)))

    @rule(seconds=st.integers(1, 4))
    def flood(self, seconds: int) -> None:
        """Audio much faster than real time (a file streamed as fast as the socket goes)."""
        self.send_audio(250, 4 * seconds, "whole")

    @rule(kind=st.sampled_from(["keep_alive", "finalize", "update_config"] * 4 + ["close", "none"]))
    def control(self, kind: str) -> None:
        self.counter += 1
        msg = Client()
        if kind == "keep_alive":
            msg.keep_alive.SetInParent()
        elif kind == "finalize":
            msg.finalize.finalize_id = f"f{self.counter}"
        elif kind == "update_config":
            msg.update_config.update_id = f"c{self.counter}"
            msg.update_config.vocabulary.add(phrase="voxwire")
        elif kind == "close":
            msg.close.SetInParent()
        self.client(msg)

    # -- the upstream ------------------------------------------------------------------------

    @precondition(lambda self: self.upstream is not None)
    @rule(what=st.sampled_from(["started", "final", "answer", "speech", "summary"]))
    def upstream_says(self, what: str) -> None:
        up = self.upstream
        assert up is not None
        if up.ended:
            return  # a stream says nothing after its summary
        response: Response | None = None
        if not up.started:
            if what != "started":
                return  # a real stream says nothing before started
            up.started = True
            response = Response(
                started=transcription_pb2.TranscriptionStarted(session_id="up", model="m")
            )
        elif what == "final":
            response = up.final()
        elif what == "answer":
            for answer in up.answer():
                self.carry_out(self.session.upstream_response(answer))
        elif what == "speech":
            response = Response(
                speech_started=transcription_pb2.SpeechStarted(utterance_id=f"u{up.next_index}")
            )
        elif what == "summary" and up.closed and not up.pending and not up.ended:
            up.ended = True
            if (final := up.final()) is not None:
                self.carry_out(self.session.upstream_response(final))
            response = Response(summary=transcription_pb2.TranscriptionSummary())
        if response is not None:
            self.carry_out(self.session.upstream_response(response))

    @precondition(lambda self: self.upstream is not None)
    @rule(
        error=st.sampled_from(
            [errors.BackendUnavailable] * 4
            + [errors.Draining, errors.InternalError, errors.InvalidMessage]
        )
    )
    def upstream_fails(self, error: type[errors.VoxwireError]) -> None:
        self.carry_out(self.session.upstream_failed(error("the toy upstream failed")))

    # -- the gateway and time ----------------------------------------------------------------

    @rule(now=st.sampled_from([False] * 5 + [True]))
    def drain(self, now: bool) -> None:
        if now:  # a drain is a going_away and a later close: most runs should not see one
            self.carry_out(self.session.drain())

    @rule(seconds=st.one_of(st.floats(0.0, 0.5), st.floats(0.0, 12.0)))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds
        if self.clock.now >= self.session.next_deadline():
            self.carry_out(self.session.on_time())

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def coverage(self) -> None:
        event(f"closed: {self.closed}")
        if any(stream.audio for stream, _ in self.segments[1:]):
            event("a failover replayed audio")
        if self.counter and any(
            r.finalize.finalize_id.startswith("vx-forced-")
            for stream, _ in self.segments
            for r in stream.pending
        ):
            event("a forced final pending")

    @invariant()
    def each_upstream_got_the_audio_from_its_offset_once(self) -> None:
        for stream, first_byte in self.segments:
            got = bytes(stream.audio)
            assert got == bytes(self.taken[first_byte : first_byte + len(got)]), (
                f"stream from byte {first_byte}: {len(got)} bytes not the session's audio"
            )

    @invariant()
    def the_window_is_bounded_and_ahead_of_the_ack(self) -> None:
        window = self.session.window
        if window is None:
            return
        if self.session.state in (State.OPENING, State.RECOVERING):
            assert window.lossless, "audio dropped while the upstream opens"
        assert window.held_bytes <= 2 * LIMITS.replay_window_ms * BYTES_PER_MS
        assert self.session.ack.finalized_through_ms <= window.received_ms

    @invariant()
    def a_forced_final_is_upstream_when_the_window_fills(self) -> None:
        window, up = self.session.window, self.upstream
        if self.closed or window is None or up is None or not up.started:
            return
        if self.session.state is not State.STREAMING or window.unacked_ms < FORCE_AT_MS:
            return
        forced = [r for r in up.pending if r.finalize.finalize_id.startswith("vx-forced-")]
        assert forced, f"{window.unacked_ms} ms unacknowledged and no forced final upstream"


# Wider than the profile's default (a run takes about 15 s): failovers with audio behind them
# and floods while an upstream opens need long runs. `make fuzz` (HYPOTHESIS_PROFILE=fuzz)
# multiplies it.
SessionMachine.TestCase.settings = settings(
    settings.default,
    max_examples=4 * settings.default.max_examples,
    stateful_step_count=max(80, settings.default.stateful_step_count),
)
test_stt_session_under_any_sequence = SessionMachine.TestCase

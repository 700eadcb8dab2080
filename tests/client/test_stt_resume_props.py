"""The resume guarantee under any interleaving (hypothesis, stateful): the SDK's
``SttClientState`` and the gateway's ``SttEdgeSession`` (a new one for each connection, as a
new gateway process would make), joined by a simulated WebSocket that delivers in order and can
break at any point, each side driven as its adapter drives it (``voxwire/client/stt.py`` and
``link.py``; ``gateway/stt/runner.py``); upstream streams are the toy model of
``tests.helpers.stt_toy`` (named so), whose final's transcript is a CRC of the audio it covers.

Faults: the connection dropped (either side's messages in flight lost, with or without a close
frame), a drain (going_away, then the close at the end of its grace), the maximum duration's
hand-over, upstream failovers and fatal upstream errors, idle time; the client may finalize,
update, close, send keep-alives, and send audio whenever the SDK's ``send`` would.

Invariants (docs/design/edge.md, "Sessions that survive restarts": "no word lost, none
duplicated, offsets monotonic and continuous"):
- the final results the application sees have consecutive utterance indices from 0, each
  starting where the last ended, and each one's words are those of the audio the application
  sent at its offsets;
- every application finalize and update is answered at most once; ``started`` once;
- the client never drops unacknowledged audio, and never holds more than its window;
- a session fails only for a fault that cannot be resumed (a fatal upstream error, an idle
  client);
- at the end (``teardown``): with the faults over, the client can always send more audio (no
  wait for room that nothing will end), and a ``close`` ends the session with its summary
  after final results covering all of the audio, each finalize and update answered once.
"""

from __future__ import annotations

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
)

from gateway.stt.session import Actions, State, SttEdgeSession
from tests.helpers.resume_machine import Link, ResumeMachine
from tests.helpers.stt_toy import (
    BYTES_PER_MS,
    LIMITS,
    STEP_MS,
    Response,
    ToyUpstream,
    words,
)
from voxwire import errors
from voxwire.client.stt_state import Phase, SttClientState
from voxwire.edge.messages import decode, encode
from voxwire.edge.v1 import stt_pb2
from voxwire.v1 import audio_pb2, transcription_pb2

Client = stt_pb2.SttClientMessage
Server = stt_pb2.SttServerMessage
FORMAT = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000)
CONFIG = transcription_pb2.TranscriptionConfig(model="m", audio_format=FORMAT)
# Errors that end a session for good (the client does not resume them).
FATAL = (errors.InternalError, errors.InvalidMessage)


class Connection(Link):
    def __init__(self, session: SttEdgeSession) -> None:
        super().__init__(session)
        self.upstream: ToyUpstream | None = None


class SttResumeMachine(ResumeMachine):
    conn: Connection | None

    def __init__(self) -> None:
        super().__init__()
        self.state = SttClientState(CONFIG, max_replay_ms=LIMITS.replay_window_ms)
        self.sent = bytearray()  # every byte of audio the application sent, in order
        self.counter = 0
        self.finals: list[transcription_pb2.TranscriptResult] = []
        self.finalizes_asked: set[str] = set()
        self.finalizes_answered: list[str] = []
        self.updates_asked: set[str] = set()
        self.updates_answered: list[str] = []
        self.started = 0
        self.summary = False
        self.fatal_injected = False
        self.idle_possible = False
        self.last_read_at = self.clock.now

    # -- the gateway side (gateway/stt/runner.py, gateway/sessions.py's start handler) --------

    def new_gateway_session(self) -> SttEdgeSession:
        return self.tokens.new_session(
            lambda sid, issue: SttEdgeSession(
                LIMITS,
                session_id=sid,
                issue_token=issue,  # type: ignore[arg-type]
                clock=self.clock,
            )
        )

    def gateway_frame(self, conn: Connection, frame: bytes | str) -> Actions:
        session = conn.session
        if session.input_ended:
            return session.discard()
        if isinstance(frame, bytes):
            return session.client_audio(frame)
        msg = decode(frame, Client, max_bytes=LIMITS.max_frame_bytes)
        if msg.WhichOneof("message") != "start":
            return session.client_message(msg)
        session.check("start")
        start = msg.start
        if not start.HasField("resume"):
            return session.start(start.config)
        config, session_id, resumes = self.tokens.claims[start.resume.resume_token]
        return session.start(
            transcription_pb2.TranscriptionConfig.FromString(config),
            start.resume.ack,
            session_id=session_id,
            resumes=resumes + 1,
        )

    def carry_out(self, conn: Connection, actions: Actions) -> None:
        if conn.gateway_closed:
            assert not actions.to_client and not actions.to_upstream, actions
            return
        if actions.cancel_upstream:
            conn.upstream = None
        for message in actions.to_client:
            conn.to_client.append(encode(message))
        if actions.open_upstream is not None:
            config = actions.open_upstream.config
            assert config.stream_offset_ms == conn.session.ack.finalized_through_ms
            conn.upstream = ToyUpstream(config)
        for request in actions.to_upstream:
            assert conn.upstream is not None, "a request with no upstream open"
            conn.upstream.write(request)
        if actions.close is not None:
            conn.gateway_closed = True
            conn.upstream = None
            conn.to_gateway.clear()
            conn.to_client.append(actions.close.code)

    def gateway_reads(self) -> bool:
        conn = self.conn
        if conn is None or conn.gateway_closed or not conn.to_gateway:
            return False
        if not conn.session.takes_audio:
            return False  # the runner reads nothing now: the frame waits in TCP
        frame = conn.to_gateway.popleft()
        self.last_read_at = self.clock.now
        try:
            actions = self.gateway_frame(conn, frame)
        except errors.VoxwireError as exc:
            actions = conn.session.fail(exc)
        self.carry_out(conn, actions)
        return True

    def upstream_answers(self, what: str) -> bool:
        conn = self.conn
        if conn is None or conn.upstream is None:
            return False
        up = conn.upstream
        responses: list[Response] = []
        if up.ended:
            return False
        if not up.started:
            if what != "started":
                return False
            up.started = True
            responses.append(
                Response(started=transcription_pb2.TranscriptionStarted(session_id="u", model="m"))
            )
        elif what == "final":
            responses += [r for r in (up.final(),) if r is not None]
        elif what == "answer":
            responses += up.answer()
        elif what == "summary" and up.closed and not up.pending:
            up.ended = True
            responses += [r for r in (up.final(),) if r is not None]
            responses.append(Response(summary=transcription_pb2.TranscriptionSummary()))
        for response in responses:
            if conn.upstream is not up:
                break
            self.carry_out(conn, conn.session.upstream_response(response))
        return bool(responses)

    # -- the client side (voxwire/client/stt.py and link.py) ----------------------------------

    def client_reads(self) -> bool:
        conn = self.conn
        if conn is None or not conn.to_client:
            return False
        item = conn.to_client.popleft()
        if isinstance(item, int):
            self.lost(item)
            return True
        outcome = self.state.receive(
            decode(item, Server, max_bytes=1 << 22, ignore_unknown_fields=True)
        )
        if outcome.session_up:
            self.live = True
            replay = self.state.replay()
            if outcome.resumed:
                event("resumed")
                if any(isinstance(piece, bytes) for piece in replay):
                    event("a resume replayed audio")
                if self.state.ack.finalized_through_ms:
                    event("a resume from an ack past 0")
            for piece in replay:
                self.write(piece)
        for ev in outcome.events:
            self.app_sees(ev)
        if outcome.ended:
            self.conn, self.live = None, False
        elif outcome.hand_over:
            self.lost(None)  # the SDK closes the socket itself: no close code read
        return True

    def app_sees(self, ev: object) -> None:
        assert not self.summary, f"an event after the summary: {ev}"
        if isinstance(ev, transcription_pb2.TranscriptResult) and ev.is_final:
            index = int(ev.utterance_id[1:])
            assert index == len(self.finals), (ev, [f.utterance_id for f in self.finals])
            start = self.finals[-1].end_ms if self.finals else 0
            assert ev.start_ms == start, (ev, start)
            audio = bytes(self.sent[ev.start_ms * BYTES_PER_MS : ev.end_ms * BYTES_PER_MS])
            assert len(audio) == (ev.end_ms - ev.start_ms) * BYTES_PER_MS, "a final past the audio"
            assert ev.transcript == words(audio), f"{ev}: not the words of the audio sent there"
            self.finals.append(ev)
        elif isinstance(ev, transcription_pb2.FinalizeAck):
            assert ev.finalize_id in self.finalizes_asked, ev
            assert ev.finalize_id not in self.finalizes_answered, f"answered twice: {ev}"
            self.finalizes_answered.append(ev.finalize_id)
        elif isinstance(ev, transcription_pb2.UpdateConfigAck):
            assert ev.update_id in self.updates_asked, ev
            assert ev.update_id not in self.updates_answered, f"answered twice: {ev}"
            self.updates_answered.append(ev.update_id)
        elif isinstance(ev, transcription_pb2.TranscriptionStarted):
            self.started += 1
            assert self.started == 1, "started twice"
        elif type(ev).__name__ == "SessionSummary":
            self.summary = True

    @initialize(window_ms=st.sampled_from([LIMITS.replay_window_ms] * 3 + [5000, 600]))
    def client_window(self, window_ms: int) -> None:
        """The SDK's ``max_replay_ms``: the gateway's window wins when it is smaller; a
        smaller one (a client short of memory) is the client's bound."""
        self.state = SttClientState(CONFIG, max_replay_ms=window_ms)

    # -- rules: the network ------------------------------------------------------------------

    def new_link(self) -> Connection:
        return Connection(self.new_gateway_session())

    @rule()
    def natural_final(self) -> None:
        """The model ends an utterance (so that most runs have acks to resume from)."""
        self.upstream_answers("final")

    @precondition(
        lambda self: self.conn is not None and self.conn.session.state is not State.AWAITING_START
    )
    @rule()
    def drain(self) -> None:
        assert self.conn is not None
        self.carry_out(self.conn, self.conn.session.drain())

    @rule(seconds=st.one_of(st.floats(0.0, 0.5), st.sampled_from([0.1] * 9 + [6.0, 11.0])))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds
        # The SDK's keep-alive task is not modelled: time with no frame read may idle out.
        if self.clock.now - self.last_read_at >= LIMITS.idle_timeout_s:
            self.idle_possible = True
        conn = self.conn
        if conn is not None and conn.session.state is not State.AWAITING_START:
            if self.clock.now >= conn.session.next_deadline():
                self.carry_out(conn, conn.session.on_time())

    # -- rules: the upstream -----------------------------------------------------------------

    @rule(what=st.sampled_from(["started", "final", "answer", "answer", "summary"]))
    def upstream_says(self, what: str) -> None:
        self.upstream_answers(what)

    @precondition(lambda self: self.conn is not None and self.conn.upstream is not None)
    @rule(error=st.sampled_from([errors.BackendUnavailable] * 8 + [errors.Draining] * 2 + [*FATAL]))
    def upstream_fails(self, error: type[errors.VoxwireError]) -> None:
        assert self.conn is not None
        if error in FATAL:
            self.fatal_injected = True
        self.carry_out(self.conn, self.conn.session.upstream_failed(error("the toy failed")))

    # -- rules: the application --------------------------------------------------------------

    def app_audio(self, ms: int, frames: int) -> bool:
        """``send``: writes when the connection is live and the window has room (else it
        waits: here, the application sends later)."""
        size = ms * BYTES_PER_MS + frames * 2
        size = min(size, self.state.max_piece_bytes, self.state.window_bytes)
        if self.over or self.state.closing or not self.live:
            return False
        if (forced := self.state.forced_finalize(size)) is not None:
            event("the SDK forced a final to make room")
            self.write(forced)
        if self.state.room() < size:
            return False
        data = bytes((self.counter + i) % 251 for i in range(size))
        self.counter += 1
        self.state.audio_sent(data)
        self.sent += data
        self.write(data)
        if (forced := self.state.forced_finalize()) is not None:
            event("the SDK forced a final")
            self.write(forced)
        return True

    @rule(ms=st.integers(1, 250), frames=st.sampled_from([0] * 6 + [1, 7]))
    def send_audio(self, ms: int, frames: int) -> None:
        if not self.app_audio(ms, frames) and self.live:
            event("send waits for room")

    @precondition(lambda self: not self.over and not self.state.closing)
    @rule(kind=st.sampled_from(["finalize", "update", "keep_alive"]))
    def control(self, kind: str) -> None:
        self.counter += 1
        if kind == "finalize":
            ident = f"f{self.counter}"
            self.finalizes_asked.add(ident)
            self.write(self.state.finalize(ident))
        elif kind == "update":
            ident = f"c{self.counter}"
            self.updates_asked.add(ident)
            update = transcription_pb2.UpdateTranscriptionConfig(update_id=ident)
            update.vocabulary.add(phrase=f"w{self.counter}")
            self.write(self.state.update_config(update))
        else:
            self.write(Client(keep_alive={}))

    @precondition(lambda self: not self.over and not self.state.closing)
    @rule(now=st.sampled_from([False] * 4 + [True]))
    def close(self, now: bool) -> None:
        if now:
            self.write(self.state.close())

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def the_client_holds_its_audio(self) -> None:
        window = self.state.window
        assert window.lossless, "the client dropped unacknowledged audio"
        assert window.held_bytes <= self.state.window_bytes
        assert window.received_ms == len(self.sent) // 2 // 16

    @invariant()
    def a_failure_has_a_cause(self) -> None:
        if self.failure is None:
            return
        event(f"failed: {getattr(self.failure, 'reason', type(self.failure).__name__)}")
        allowed = self.fatal_injected or (
            self.idle_possible and getattr(self.failure, "reason", "") == "IDLE_TIMEOUT"
        )
        assert allowed, f"the session failed with no fault to explain it: {self.failure!r}"

    # -- the end -----------------------------------------------------------------------------

    def step(self) -> bool:
        """One step of progress with the faults over (a message carried, a request answered,
        a connection made); False when nothing can move without time passing."""
        if self.over:
            return False
        if self.state.phase is Phase.CONNECTING and self.conn is None:
            self.connect()
            return True
        return (
            self.client_reads()
            or self.gateway_reads()
            or any(self.upstream_answers(what) for what in ("started", "answer", "summary"))
        )

    def teardown(self) -> None:
        if self.over:
            return
        # Audio keeps coming as fast as ``send`` takes it, with no natural final (no pause in
        # the speech), while the messages move one at a time: the window must never fill for
        # good.
        for _ in range(3 * LIMITS.replay_window_ms // 100):
            for _ in range(5000):
                if self.over or self.app_audio(100, 0):
                    break
                assert self.step(), (
                    f"send would wait for ever: {self.state.window.unacked_ms} ms "
                    f"unacknowledged, room {self.state.room()} bytes, phase "
                    f"{self.state.phase.value}"
                )
        if not self.over:
            self.write(self.state.close())
            self.settle()
        if self.failure is not None:
            self.a_failure_has_a_cause()
            return
        assert self.summary, f"no summary: phase {self.state.phase.value}"
        event(f"ended with its summary after {self.tokens.sessions} connections")
        covered = self.finals[-1].end_ms if self.finals else 0
        heard = len(self.sent) // BYTES_PER_MS // STEP_MS * STEP_MS  # what the toy makes finals of
        assert covered == heard, (covered, len(self.sent))
        assert sorted(self.finalizes_answered) == sorted(self.finalizes_asked)
        assert sorted(self.updates_answered) == sorted(self.updates_asked)


SttResumeMachine.TestCase.settings = settings(
    settings.default,
    max_examples=4 * settings.default.max_examples,
    stateful_step_count=max(120, 2 * settings.default.stateful_step_count),
)
test_stt_resume_under_any_interleaving = SttResumeMachine.TestCase

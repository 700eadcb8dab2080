"""The TTS resume under any interleaving (hypothesis, stateful): the SDK's
``SynthesisClientState`` and the gateway's ``TtsEdgeSession`` (a new one for each connection),
joined by a simulated WebSocket that delivers in order and can break at any point, each side
driven as its adapter drives it (``voxwire/client/tts.py``; ``gateway/tts/runner.py``); every
context's upstream call is the toy model of ``tests.helpers.tts_toy`` (named so), whose audio
chunks say which word and part they carry.

SSML (drawn per run): each flush and the close end a ``<speak>`` document, which resumes and
fails over whole, its audio already heard skipped (by the toy, ``skip_audio_ms``, or when the
toy does not honour it, by ``TextReplay.take``): then no part of any word is heard twice.

Faults: the connection dropped (messages in flight lost), drains, upstream failovers and
fatal upstream errors, time (the lead's pacing); the application opens contexts, appends text
(words split across appends too), flushes, closes, cancels, truncates, closes the session, all
whenever the SDK would send them.

Invariants (docs/design/edge.md, "Resume (TTS)", "Upstream failover inside the gateway"):
- each context's audio reaches the application numbered 1, 2, 3... and on one timeline (each
  chunk starting where the last ended), across every resume and failover;
- what it hears is its text's words in order, each word whole once (a word whose audio was cut
  by a fault is spoken again from its start: its first part may come twice, never a word
  skipped or a finished word repeated);
- word timestamps reach it once each, in order, at their offsets in the whole context text;
- a cancelled or truncated context gets nothing after its end, and no context is reopened
  after it ended; flushes are answered at most once; a context error only for a fatal fault;
- at the end (``teardown``): with the faults over, closing everything ends every context
  (``done`` with all of its words, or its stop's event) and the session with its summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
)

from gateway.tts.session import Actions, TtsEdgeSession, TtsLimits
from tests.helpers.resume_machine import Link, ResumeMachine
from tests.helpers.tts_toy import PART_MS, PARTS, RATE, ToySynth, heard
from voxwire import errors
from voxwire.client.stt_state import Phase
from voxwire.client.tts_state import CtxState, SynthesisClientState, SynthesizedAudio
from voxwire.edge.frames import unpack
from voxwire.edge.messages import decode, encode
from voxwire.edge.v1 import session_pb2, tts_pb2
from voxwire.v1 import audio_pb2, synthesis_pb2

Client = tts_pb2.TtsClientMessage
Server = tts_pb2.TtsServerMessage
LIMITS = TtsLimits(
    max_contexts=4,
    idle_timeout_s=1000.0,
    max_session_s=100_000.0,
    duration_warning_s=10.0,
    max_failovers=3,
    drain_grace_s=3.0,
)
CONFIG = synthesis_pb2.SynthesisContextConfig(
    model="toy",
    word_timestamps=True,
    output_format=audio_pb2.AudioFormat(
        encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=RATE
    ),
)
FATAL = (errors.InternalError, errors.InvalidMessage)


class Connection(Link):
    def __init__(self, session: TtsEdgeSession) -> None:
        super().__init__(session)
        self.calls: dict[int, ToySynth] = {}  # upstream calls by the session's key


@dataclass
class AppContext:
    """What the application did with a context and what it got."""

    text: str = ""
    closed: bool = False
    stopped: str = ""  # "cancel" or "truncate"
    in_document: bool = False  # SSML: a <speak> is open
    flushes: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    seq: int = 0
    end_ms: int = 0
    parts: list[tuple[str, int]] = field(default_factory=list)  # (word, part) heard
    words: list[synthesis_pb2.WordTimestamp] = field(default_factory=list)
    ended: object | None = None  # the last event (done, cancelled, truncated) or the error
    fatal: bool = False  # a fatal fault was injected into one of its calls


class TtsResumeMachine(ResumeMachine):
    conn: Connection | None

    def __init__(self) -> None:
        super().__init__()
        self.start = tts_pb2.TtsStart()
        self.state = SynthesisClientState(self.start)
        self.contexts: dict[str, AppContext] = {}
        self.words = 0
        self.counter = 0
        self.summary = False
        self.config = CONFIG
        self.ssml = False
        self.honours_skip = True

    @initialize(
        binary=st.booleans(),
        lead_ms=st.sampled_from([0, 0, 150]),
        ssml=st.booleans(),
        honours_skip=st.booleans(),
    )
    def options(self, binary: bool, lead_ms: int, ssml: bool, honours_skip: bool) -> None:
        self.ssml, self.honours_skip = ssml, honours_skip
        self.config = synthesis_pb2.SynthesisContextConfig()
        self.config.CopyFrom(CONFIG)
        if ssml:
            self.config.text_format = synthesis_pb2.TEXT_FORMAT_SSML
            event("SSML" + ("" if honours_skip else ", a toy that sends the skipped audio again"))
        self.start = tts_pb2.TtsStart(
            audio_delivery=tts_pb2.AUDIO_DELIVERY_BINARY if binary else tts_pb2.AUDIO_DELIVERY_JSON
        )
        self.start.lead.FromMilliseconds(lead_ms)
        self.state = SynthesisClientState(self.start)
        # Every run starts with a live session and a context with text to speak.
        self.connect()
        for _ in range(10):
            if self.live or not self.step():
                break
        self.open_context()
        self.append(0, 6, 0)

    # -- the gateway side --------------------------------------------------------------------

    def new_gateway_session(self) -> TtsEdgeSession:
        return self.tokens.new_session(
            lambda sid, issue: TtsEdgeSession(
                LIMITS,
                session_id=sid,
                issue_token=issue,  # type: ignore[arg-type]
                clock=self.clock,
            )
        )

    def gateway_frame(self, conn: Connection, frame: str) -> Actions:
        session = conn.session
        if session.input_ended:
            return session.discard()
        msg = decode(frame, Client, max_bytes=LIMITS.max_frame_bytes)
        if msg.WhichOneof("message") != "start":
            return session.client_message(msg)
        start = msg.start
        if not start.HasField("resume"):
            return session.start(start)
        config, session_id, resumes = self.tokens.claims[start.resume.resume_token]
        options = tts_pb2.TtsStart.FromString(config)
        options.MergeFrom(start)
        options.ClearField("resume")
        return session.start(options, session_id=session_id, resumes=resumes + 1)

    def carry_out(self, conn: Connection, actions: Actions) -> None:
        if conn.gateway_closed:
            assert not actions.to_client, actions
            return
        for key in actions.cancel_upstream:
            conn.calls.pop(key, None)
        for item in actions.to_client:
            conn.to_client.append(item if isinstance(item, bytes) else encode(item))
        for order in actions.open_upstream:
            assert order.key not in conn.calls
            if order.requests[0].open.skip_audio_ms:
                event("an SSML document reopened upstream, the audio sent skipped")
            conn.calls[order.key] = ToySynth(order.requests, honours_skip=self.honours_skip)
        for key, request in actions.to_upstream:
            if key in conn.calls:
                conn.calls[key].write(request)
        if actions.close is not None:
            conn.gateway_closed = True
            conn.calls.clear()
            conn.to_gateway.clear()
            conn.to_client.append(actions.close.code)

    def gateway_reads(self) -> bool:
        conn = self.conn
        if conn is None or conn.gateway_closed or not conn.to_gateway:
            return False
        frame = conn.to_gateway.popleft()
        try:
            actions = self.gateway_frame(conn, frame)
        except errors.VoxwireError as exc:
            actions = conn.session.fail(exc)
        self.carry_out(conn, actions)
        return True

    def call(self, index: int) -> tuple[int, ToySynth] | None:
        conn = self.conn
        if conn is None or not conn.calls:
            return None
        keys = sorted(conn.calls)
        key = keys[index % len(keys)]
        return key, conn.calls[key]

    def upstream_delivers(self, index: int, n: int) -> bool:
        """The runner reads a call only while the session has room for it."""
        found = self.call(index)
        if found is None:
            return False
        key, call = found
        assert self.conn is not None
        moved = False
        for _ in range(n):
            if not call.out or not self.conn.session.has_room(key):
                break
            if self.conn.calls.get(key) is not call:
                break
            moved = True
            self.carry_out(self.conn, self.conn.session.upstream_response(key, call.out.popleft()))
        return moved

    def time_to(self, now: float) -> None:
        self.clock.now = now
        conn = self.conn
        if conn is not None and conn.session.started and not conn.gateway_closed:
            if self.clock.now >= conn.session.next_deadline():
                self.carry_out(conn, conn.session.on_time())

    # -- the client side ---------------------------------------------------------------------

    def client_reads(self) -> bool:
        conn = self.conn
        if conn is None or not conn.to_client:
            return False
        item = conn.to_client.popleft()
        if isinstance(item, int):
            self.lost(item)
            return True
        if isinstance(item, bytes):
            outcome = self.state.binary_frame(unpack(item))
        else:
            server = decode(item, Server, max_bytes=1 << 22, ignore_unknown_fields=True)
            outcome = self.state.receive(server)
        if outcome.session_up:
            self.live = True
            if outcome.resumed:
                event("resumed")
                messages, stopped = self.state.replay()
                if stopped.events:
                    event("a context stopped before the resume ended at it")
                if any(m.WhichOneof("message") == "append" for m in messages):
                    event("a resume replayed text")
                for msg in messages:
                    if msg.WhichOneof("message") == "open":
                        app = self.contexts[msg.context_id]
                        assert not app.stopped, f"{msg.context_id} reopened after its {app.stopped}"
                    self.write(msg)
                self.deliver(stopped.events, stopped.ended)
        self.deliver(outcome.events, outcome.ended)
        if outcome.session_ended:
            self.conn, self.live = None, False
        elif outcome.hand_over:
            self.lost(None)
        return True

    def deliver(
        self, events: list[tuple[str, object]], ended: list[tuple[str, errors.VoxwireError | None]]
    ) -> None:
        for cid, ev in events:
            if not cid:
                if isinstance(ev, session_pb2.SessionSummary):
                    assert not self.summary
                    self.summary = True
                continue
            app = self.contexts[cid]
            assert app.ended is None, f"{cid}: {type(ev).__name__} after its end {app.ended}"
            if isinstance(ev, SynthesizedAudio):
                assert ev.sequence_number == app.seq + 1, (cid, ev.sequence_number, app.seq)
                assert ev.start_ms == app.end_ms, (cid, ev.start_ms, app.end_ms)
                assert ev.duration_ms == PART_MS
                app.seq, app.end_ms = ev.sequence_number, ev.start_ms + ev.duration_ms
                app.parts.append(heard(ev.audio))
            elif isinstance(ev, synthesis_pb2.WordTimestamps):
                for word in ev.words:
                    span = app.text[word.text_offset : word.text_offset + word.text_length]
                    assert span == word.word, (cid, word, app.text)
                    if app.words:
                        assert word.text_offset > app.words[-1].text_offset, (cid, word)
                    app.words.append(word)
            elif isinstance(ev, synthesis_pb2.FlushAck):
                assert ev.flush_id in app.flushes and ev.flush_id not in app.acked, ev
                app.acked.append(ev.flush_id)
            elif isinstance(ev, synthesis_pb2.ContextDone | synthesis_pb2.ContextCancelled):
                app.ended = ev
                assert ev.last_sequence_number == app.seq, (cid, ev, app.seq)
            elif isinstance(ev, tts_pb2.Truncated):
                app.ended = ev
                assert ev.last_sequence_number == app.seq, (cid, ev, app.seq)
        for cid, error in ended:
            app = self.contexts[cid]
            if error is not None:
                assert app.ended is None
                app.ended = error
                # A fatal fault, or failovers past their bound (the last failure's reason).
                bounded = error.reason in ("BACKEND_UNAVAILABLE", "DRAINING")
                assert app.fatal or bounded, (cid, error)
                event(f"a context failed: {error.reason}")
            else:
                assert app.ended is not None, f"{cid} ended with no event"

    # -- rules: network, gateway, time --------------------------------------------------------

    def new_link(self) -> Connection:
        return Connection(self.new_gateway_session())

    def breaking(self) -> None:
        if any(app.parts and app.parts[-1][1] < PARTS - 1 for app in self.contexts.values()):
            event("the connection broke in the middle of a word")
        if any(app.parts for app in self.contexts.values()):
            event("the connection broke after audio")

    @precondition(lambda self: self.conn is not None and self.conn.session.started)
    @rule(now=st.sampled_from([False] * 4 + [True]))
    def drain(self, now: bool) -> None:
        if now and self.conn is not None:
            self.carry_out(self.conn, self.conn.session.drain())

    @rule(seconds=st.sampled_from([0.02, 0.05, 0.1, 0.3, 1.0, 4.0]))
    def time_passes(self, seconds: float) -> None:
        self.time_to(self.clock.now + seconds)

    @rule(index=st.integers(0, 3), words=st.integers(1, 3), n=st.integers(1, 8))
    def upstream_works(self, index: int, words: int, n: int) -> None:
        found = self.call(index)
        if found is not None:
            for _ in range(words):
                found[1].speak()
            self.upstream_delivers(index, n)

    @precondition(lambda self: self.conn is not None and bool(self.conn.calls))
    @rule(
        index=st.integers(0, 3),
        error=st.sampled_from([errors.BackendUnavailable] * 6 + [errors.Draining, *FATAL]),
    )
    def upstream_fails(self, index: int, error: type[errors.VoxwireError]) -> None:
        found = self.call(index)
        assert found is not None and self.conn is not None
        key, call = found
        if error in FATAL:
            self.contexts[call.context_id].fatal = True
        if call.text:
            event("an upstream with text failed")
        self.carry_out(self.conn, self.conn.session.upstream_failed(key, error("the toy failed")))

    # -- rules: the application (only while live, as the SDK's ``_op`` waits for that) --------

    def app_context(self, index: int) -> tuple[str, AppContext] | None:
        if self.over or not self.live or self.state.closing:
            return None
        usable = [
            cid
            for cid in sorted(self.contexts)
            if (ctx := self.state.contexts.get(cid)) is not None and ctx.state is not CtxState.ENDED
        ]
        if not usable:
            return None
        cid = usable[index % len(usable)]
        return cid, self.contexts[cid]

    @rule()
    def open_context(self) -> None:
        if self.over or not self.live or self.state.closing:
            return
        open_now = sum(1 for c in self.state.contexts.values() if c.state is not CtxState.ENDED)
        if open_now >= 3:
            return
        cid = f"c{len(self.contexts)}"
        self.contexts[cid] = AppContext()
        self.write(self.state.open(cid, self.config))

    @rule(index=st.integers(0, 3), words=st.integers(1, 4), cut=st.integers(0, 3))
    def append(self, index: int, words: int, cut: int) -> None:
        found = self.app_context(index)
        if found is None or found[1].closed:
            return
        cid, app = found
        text = "".join(f"w{self.words + i} " for i in range(words))
        self.words += words
        if self.ssml and not app.in_document:
            app.in_document = True
            text = "<speak> " + text
        pieces = [text] if not cut else [text[: cut + 1], text[cut + 1 :]]  # a word split
        for piece in pieces:
            app.text += piece
            self.write(self.state.append(cid, piece))

    @rule(
        index=st.integers(0, 3),
        what=st.sampled_from(["flush"] * 3 + ["close"] * 3 + ["cancel", "truncate"]),
    )
    def control(self, index: int, what: str) -> None:
        found = self.app_context(index)
        if found is None:
            return
        cid, app = found
        self.counter += 1
        if what == "flush" and not app.closed:
            self.end_document(cid, app)
            app.flushes.append(f"fl{self.counter}")
            self.write(self.state.flush(cid, app.flushes[-1]))
        elif what == "close" and not app.closed:
            self.end_document(cid, app)
            app.closed = True
            self.write(self.state.close_context(cid))
        elif what == "cancel" and not app.stopped:
            app.stopped = "cancel"
            self.write(self.state.cancel(cid))
        elif what == "truncate" and not app.stopped:
            app.stopped = "truncate"
            self.write(self.state.truncate(cid, app.end_ms // 2))

    def end_document(self, cid: str, app: AppContext) -> None:
        """SSML: a flush or the close ends the document the text is in."""
        if app.in_document:
            app.in_document = False
            app.text += "</speak> "
            self.write(self.state.append(cid, "</speak> "))

    @rule(now=st.sampled_from([False] * 6 + [True]))
    def close_session(self, now: bool) -> None:
        if now and not self.over and self.live and not self.state.closing:
            # The contexts' text ends with the session's: SSML documents are ended first (an
            # open one would be no document: SSML_INVALID, as it should).
            for cid, app in self.contexts.items():
                ctx = self.state.contexts.get(cid)
                if ctx is not None and not app.closed:
                    self.end_document(cid, app)
            self.write(self.state.close_session())

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def heard_whole_words_in_order(self) -> None:
        for cid, app in self.contexts.items():
            words = spoken(app.text)
            done = whole_words(cid, app.parts, again=not self.ssml)
            assert done == words[: len(done)], (cid, done, words)
            timestamps = [w.word for w in app.words]
            assert timestamps == words[: len(timestamps)], (cid, timestamps, words)

    @invariant()
    def a_failure_has_a_cause(self) -> None:
        if self.failure is not None:
            raise AssertionError(f"the session failed: {self.failure!r}")

    # -- the end -----------------------------------------------------------------------------

    def step(self) -> bool:
        if self.over:
            return False
        if self.state.phase is Phase.CONNECTING and self.conn is None:
            self.connect()
            return True
        if self.client_reads() or self.gateway_reads():
            return True
        conn = self.conn
        if conn is None:
            return False
        for index in range(len(conn.calls)):
            found = self.call(index)
            assert found is not None
            if self.upstream_delivers(index, 1) or found[1].speak():
                return True
        queued = any(ctx.queue for ctx in conn.session.contexts.values())
        if queued and conn.session.started and not conn.gateway_closed:
            # Chunks wait for their place in the timeline (the lead): time passes to it.
            self.time_to(max(self.clock.now, conn.session.next_deadline()))
            return True
        return False

    def teardown(self) -> None:
        for _ in range(20000):
            if self.over:
                break
            if self.live and not self.state.closing:
                for cid, app in self.contexts.items():
                    ctx = self.state.contexts.get(cid)
                    if ctx is not None and not app.closed:
                        self.end_document(cid, app)
                        app.closed = True
                        self.write(self.state.close_context(cid))
                self.write(self.state.close_session())
            if not self.step():
                break
        assert self.failure is None, self.failure
        assert self.summary, f"no summary: phase {self.state.phase.value}"
        event(f"ended with its summary after {self.tokens.sessions} connections")
        for cid, app in self.contexts.items():
            assert app.ended is not None, f"{cid} never ended"
            if isinstance(app.ended, synthesis_pb2.ContextDone):
                assert whole_words(cid, app.parts, again=not self.ssml) == spoken(app.text), cid
                assert sorted(app.acked) == sorted(app.flushes), (cid, app.flushes, app.acked)
            elif isinstance(app.ended, synthesis_pb2.ContextCancelled | tts_pb2.Truncated):
                assert app.stopped, f"{cid} stopped though the application never stopped it"


def spoken(text: str) -> list[str]:
    """The words of a context's text (SSML's tags are not spoken)."""
    return [token for token in text.split() if not token.startswith("<")]


def whole_words(cid: str, parts: list[tuple[str, int]], *, again: bool = True) -> list[str]:
    """The words heard whole, in order; a word cut by a fault may start again from its first
    part (its audio before the cut was heard) when ``again`` (plain text resumes after the last
    whole word; SSML documents skip what was heard, so nothing is heard twice), nothing else may
    repeat or be skipped."""
    done: list[str] = []
    current, expected = "", 0
    for word, part in parts:
        if part == 0:
            if expected in (0, PARTS):  # the last word was whole: a new one, never it again
                assert word != current, (cid, f"{word} whole twice", parts)
            else:  # the last word was cut: it starts again
                assert again, (cid, f"{current} cut, then heard again from its start", parts)
                assert word == current, (cid, f"{current} cut, then {word}", parts)
                event("a word cut by a fault was spoken again")
            current, expected = word, 1
        else:
            assert word == current and part == expected, (cid, parts)
            expected += 1
        if expected == PARTS:
            done.append(word)
    return done


TtsResumeMachine.TestCase.settings = settings(
    settings.default,
    max_examples=3 * settings.default.max_examples,
    stateful_step_count=max(100, 2 * settings.default.stateful_step_count),
)
test_tts_resume_under_any_interleaving = TtsResumeMachine.TestCase

"""SttClientState: the sans-I/O core of one SDK transcription session (across its connections).

Rules (docs/design/edge.md, "Sessions that survive restarts"):
- Audio goes into an ``AudioReplayWindow`` first, and only then onto the socket; the window
  drops it when an ``ack`` (on a final result, a finalize ack, or alone) says it is reflected in
  final results the client has. So a connection may break at any moment without losing audio.
- A new connection starts with ``start{config}`` before the first session, and with
  ``start{resume{token, ack}}`` after it (the token is the latest the gateway gave: the
  session's, or a ``goingAway``'s). When the gateway answers ``session``, the replay follows:
  the window's audio from ``ack.finalizedThroughMs``, with the controls still due at their
  audio positions (finalizes and updates not answered yet; accepted updates the token's config
  does not hold), then ``close`` if the client closed.
- Events of a resumed connection that the caller has already seen are dropped: a second
  ``started``, a ``speechStarted`` or ``utteranceEnd`` of an utterance id already reported, the
  ack of an update re-sent only because the token does not hold it, a finalize ack already
  delivered. Final results are not filtered: the gateway's stream restarts exactly at the ack,
  so it sends none twice.
- ``goingAway`` hands the session over at once (the socket is closed and the session resumes
  on the next gateway from its ack), unless the client is closing: then the session is given
  its chance to end normally within the grace.
- An error event decides how the connection's close is read: retryable (with its delay) or
  the session's failure; a close without one is read by its code
  (``connection.RESUMABLE_CLOSES``).

Phases, an h11-style table (``_TRANSITIONS``): CONNECTING --connected--> HANDSHAKE
--session--> LIVE; HANDSHAKE/LIVE --lost--> CONNECTING; LIVE --summary--> ENDED; any but
ENDED --failed--> FAILED. A missing entry is a bug of the adapter driving the state, and raises.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from voxwire import errors
from voxwire.audio.formats import resolve_format
from voxwire.client.connection import close_error, resumable
from voxwire.edge.v1 import session_pb2, stt_pb2
from voxwire.replay import AudioReplayWindow
from voxwire.v1 import stream_pb2, transcription_pb2

log = logging.getLogger(__name__)

Message = stt_pb2.SttClientMessage
ServerMessage = stt_pb2.SttServerMessage
SttEvent = (
    transcription_pb2.TranscriptionStarted
    | transcription_pb2.TranscriptResult
    | transcription_pb2.SpeechStarted
    | transcription_pb2.UtteranceEnd
    | transcription_pb2.FinalizeAck
    | transcription_pb2.UpdateConfigAck
    | stream_pb2.StreamNotice
    | session_pb2.SessionSummary
)
# Before the first session message: the gateway's default frame limit (SttLimits).
DEFAULT_MAX_FRAME_BYTES = 64 * 1024
# The SDK's own finalizes (``forced_finalize``): their acks move the position, no event.
SDK_FORCED_PREFIX = "vx-sdk-"


class Phase(enum.Enum):
    CONNECTING = "connecting"  # no connection; the next one starts or resumes the session
    HANDSHAKE = "handshake"  # start sent; waiting for the session message
    LIVE = "live"  # audio and controls flow
    ENDED = "ended"  # the summary came: the session is over
    FAILED = "failed"


_TRANSITIONS: dict[Phase, dict[str, Phase]] = {
    Phase.CONNECTING: {"connected": Phase.HANDSHAKE, "lost": Phase.CONNECTING},
    Phase.HANDSHAKE: {"session": Phase.LIVE, "lost": Phase.CONNECTING},
    Phase.LIVE: {"lost": Phase.CONNECTING, "summary": Phase.ENDED},
    Phase.ENDED: {"lost": Phase.ENDED},
    Phase.FAILED: {},
}


@dataclass(slots=True)
class _Control:
    """A finalize or an update, with the audio frames sent before it."""

    frame: int
    message: Message
    ident: str
    accepted: bool = False  # an update the gateway accepted (kept: see the module rules)


@dataclass(slots=True)
class Outcome:
    """What the adapter does after one input."""

    events: list[SttEvent] = field(default_factory=list)
    # A session message: write ``replay()`` before anything else. ``resumed``: it continues
    # the session on a new connection (the adapter reports the resume).
    session_up: bool = False
    resumed: bool = False
    # The first ``started``: the model took the session's config.
    started: bool = False
    # This connection's ``started`` (the first, or a resumed connection's): it serves the
    # session.
    live: bool = False
    # Close this connection now and resume on the next gateway (going_away).
    hand_over: bool = False
    # The going_away said the server spread the reconnects itself: no jitter of our own.
    reconnect_now: bool = False
    # The connection ended and the session goes on: wait at least this long (server's advice).
    retry_after_s: float = 0.0
    failure: errors.VoxwireError | None = None
    ended: bool = False


class SttClientState:
    """Raises UnsupportedEncoding / UnsupportedSampleRate for a config whose audio format the
    contract does not have, InvalidConfig when it has none."""

    def __init__(
        self, config: transcription_pb2.TranscriptionConfig, *, max_replay_ms: int
    ) -> None:
        if not config.HasField("audio_format"):
            raise errors.InvalidConfig(
                "config.audio_format is required",
                violations=[errors.Violation("config.audio_format", "required")],
            )
        fmt = resolve_format(config.audio_format, "config.audio_format", max_channels=2)
        self.config = transcription_pb2.TranscriptionConfig()
        self.config.CopyFrom(config)
        self.phase = Phase.CONNECTING
        self.window = AudioReplayWindow(
            fmt.bytes_per_frame, fmt.sample_rate_hz, max_ms=max_replay_ms
        )
        self._max_replay_ms = max_replay_ms
        self.frames_sent = 0
        self.ack = stt_pb2.Ack()
        self.token = ""
        self.session_id = ""
        self.resumes = 0
        self.limits = session_pb2.EdgeLimits(max_frame_bytes=DEFAULT_MAX_FRAME_BYTES)
        self.closing = False
        self._controls: list[_Control] = []
        self._token_covers = 0  # accepted updates (in order) the token's config holds
        self._delivered_finalizes: set[str] = set()
        self._started_seen = False
        self._speech_seen = -1
        self._ends_seen = -1
        self._retry_after_s: float | None = None
        self._failure: errors.VoxwireError | None = None
        # The error event of the current connection, if one came: why it ends (the link's
        # "last" cause, when reconnecting gives out).
        self.last_error: errors.VoxwireError | None = None
        self._hand_over = False
        self._reconnect_now = False
        self._forced = 0
        self._forced_pending = False

    def _go(self, event: str) -> None:
        try:
            self.phase = _TRANSITIONS[self.phase][event]
        except KeyError:
            raise RuntimeError(f"{event} in phase {self.phase.value}") from None

    # -- positions and room ------------------------------------------------------------------

    @property
    def frame_bytes(self) -> int:
        return self.window.frame_bytes

    @property
    def max_piece_bytes(self) -> int:
        """The largest audio message the gateway takes, in whole frames."""
        fb = self.window.frame_bytes
        return max(fb, (self.limits.max_frame_bytes or DEFAULT_MAX_FRAME_BYTES) // fb * fb)

    @property
    def window_bytes(self) -> int:
        """The most unacknowledged audio held: the replay window (the gateway's, at most
        ``max_replay_ms``), in whole frames (at least one)."""
        window_ms = self._max_replay_ms
        if self.limits.HasField("replay_window"):
            window_ms = min(window_ms, self.limits.replay_window.ToMilliseconds())
        return max(1, self.window.frame_at(window_ms)) * self.window.frame_bytes

    def room(self) -> int:
        """Bytes of audio that may be sent now without exceeding ``window_bytes``."""
        return max(0, self.window_bytes - self.window.held_bytes)

    # -- the client's side -------------------------------------------------------------------

    def connected(self) -> Message:
        """A connection opened: its first message (a new session, or the resume)."""
        self._go("connected")
        self._retry_after_s = None
        self.last_error = None
        self._hand_over = False
        self._reconnect_now = False
        if not self.token:
            return Message(start=stt_pb2.SttStart(config=self.config))
        resume = stt_pb2.Resume(resume_token=self.token)
        resume.ack.CopyFrom(self.ack)
        return Message(start=stt_pb2.SttStart(resume=resume))

    def audio_sent(self, audio: bytes) -> None:
        """``audio`` (whole frames) is being sent. Raises MisalignedAudio otherwise."""
        if len(audio) % self.window.frame_bytes:
            raise errors.MisalignedAudio(
                f"{len(audio)} bytes is not a whole number of {self.window.frame_bytes}-byte frames"
            )
        self.window.append(audio)
        self.frames_sent += len(audio) // self.window.frame_bytes

    def needs_forced_final(self, next_bytes: int = 0) -> bool:
        """Whether the SDK finalizes by itself now (``forced_finalize``): the window is the
        client's own bound (``max_replay_ms`` below the gateway's ``replayWindow``, or a
        gateway that gave none), no such finalize is unanswered, and unacknowledged audio
        has reached three quarters of the window or leaves no room for ``next_bytes``."""
        if self.closing or self._forced_pending:
            return False
        if self.limits.HasField("replay_window"):
            if self._max_replay_ms >= self.limits.replay_window.ToMilliseconds():
                return False  # the gateway's window is the bound, and it forces in time
        return self.window.held_bytes * 4 >= self.window_bytes * 3 or self.room() < next_bytes

    def forced_finalize(self, next_bytes: int = 0) -> Message | None:
        """A finalize of the SDK's own to send now, if ``needs_forced_final``. The gateway
        forces finals only before its own window fills: without this, a client with a smaller
        window and a stream with no pause (no natural final) waited in ``send`` for an ack
        that never came (test_stt_resume_props found it). Its ack moves the position; it is
        no event."""
        if not self.needs_forced_final(next_bytes):
            return None
        self._forced += 1
        self._forced_pending = True
        return self.finalize(f"{SDK_FORCED_PREFIX}{self._forced}")

    def finalize(self, finalize_id: str) -> Message:
        msg = Message(finalize=transcription_pb2.Finalize(finalize_id=finalize_id))
        self._controls.append(_Control(self.frames_sent, msg, finalize_id))
        return msg

    def update_config(self, update: transcription_pb2.UpdateTranscriptionConfig) -> Message:
        msg = Message(update_config=update)
        self._controls.append(_Control(self.frames_sent, msg, update.update_id))
        return msg

    def close(self) -> Message:
        self.closing = True
        return Message(close=transcription_pb2.CloseStream())

    # -- the server's side -------------------------------------------------------------------

    def receive(self, msg: ServerMessage) -> Outcome:
        """One message of the current connection."""
        out = Outcome()
        if msg.HasField("ack"):
            self._on_ack(msg.ack)
        kind = msg.WhichOneof("message")
        if kind == "session":
            self._on_session(msg.session, out)
        elif kind == "started":
            out.live = True
            if not self._started_seen:
                self._started_seen = True
                out.started = True
                out.events.append(msg.started)
        elif kind == "result":
            out.events.append(msg.result)
        elif kind == "speech_started":
            index = _index(msg.speech_started.utterance_id)
            if index is None or index > self._speech_seen:
                self._speech_seen = self._speech_seen if index is None else index
                out.events.append(msg.speech_started)
        elif kind == "utterance_end":
            index = _index(msg.utterance_end.utterance_id)
            if index is None or index > self._ends_seen:
                self._ends_seen = self._ends_seen if index is None else index
                out.events.append(msg.utterance_end)
        elif kind == "finalize_ack":
            self._settle(msg.finalize_ack.finalize_id, "finalize", True)
            if msg.finalize_ack.finalize_id.startswith(SDK_FORCED_PREFIX):
                self._forced_pending = False
            elif msg.finalize_ack.finalize_id not in self._delivered_finalizes:
                self._delivered_finalizes.add(msg.finalize_ack.finalize_id)
                out.events.append(msg.finalize_ack)
        elif kind == "update_config_ack":
            ack = msg.update_config_ack
            if self._settle(ack.update_id, "update_config", ack.accepted):
                out.events.append(ack)
        elif kind == "notice":
            out.events.append(msg.notice)
        elif kind == "going_away":
            self.token = msg.going_away.resume_token or self.token
            self._token_covers = sum(1 for c in self._controls if c.accepted)
            if msg.going_away.reason == "STREAM_TOO_LONG":
                # The maximum duration: the gateway finalizes what it has and then closes
                # (4009), and the finals come on this connection. Handing over at once threw
                # them away, and the next session decoded the utterance again from its start
                # (replayed, its words could change). The connection's end resumes the
                # session, from the ack of those finals.
                pass
            elif not self.closing:
                self._hand_over = out.hand_over = True
                self._reconnect_now = msg.going_away.reconnect_now
        elif kind == "error":
            self._on_error(errors.from_event(msg.error))
        elif kind == "summary":
            self._go("summary")
            out.events.append(msg.summary)
            out.ended = True
        return out

    def _on_ack(self, ack: stt_pb2.Ack) -> None:
        if ack.finalized_through_ms > self.ack.finalized_through_ms:
            self.ack.finalized_through_ms = ack.finalized_through_ms
        if ack.next_utterance_index > self.ack.next_utterance_index:
            self.ack.next_utterance_index = ack.next_utterance_index
        self.window.ack(self.ack.finalized_through_ms)

    def _on_session(self, started: session_pb2.SessionStarted, out: Outcome) -> None:
        self._go("session")
        out.resumed = bool(self.token)
        self.token = started.resume_token
        self.session_id = started.session_id
        self.resumes = started.resumes
        if started.HasField("limits"):
            self.limits.CopyFrom(started.limits)
        out.session_up = True

    @property
    def replay_ms(self) -> int:
        """Audio a resume replays now (what was sent after the ack)."""
        return self.window.received_ms - self.ack.finalized_through_ms

    def replay(self) -> list[bytes | Message]:
        """After a session message, what to write before anything else: the audio from the ack
        on, with the controls still due at their positions, then the close if the client
        closed. Raises ResumeRejected if that audio is not held (a bug: ``room`` bounds it)."""
        base_ms = self.ack.finalized_through_ms
        # Replayed in the pieces it was sent in: the model sees the same messages again.
        pieces = self.window.pieces_since(base_ms)
        fb = self.window.frame_bytes
        frame = self.window.frame_at(base_ms)  # position of the next piece's first frame
        due = sorted(
            (
                c
                for i, c in enumerate(self._controls)
                if not c.accepted or self._accepted_rank(i) >= self._token_covers
            ),
            key=lambda c: c.frame,
        )
        out: list[bytes | Message] = []
        for piece in pieces:
            while due and due[0].frame <= frame:
                out.append(due.pop(0).message)
            out.append(piece)
            frame += len(piece) // fb
        out += [c.message for c in due]
        if self.closing:
            out.append(Message(close=transcription_pb2.CloseStream()))
        return out

    def _accepted_rank(self, index: int) -> int:
        return sum(1 for c in self._controls[:index] if c.accepted)

    def _settle(self, ident: str, kind: str, accepted: bool) -> bool:
        """A finalize or update was answered; True when the caller has not seen it yet."""
        for i, control in enumerate(self._controls):
            if control.ident != ident or control.message.WhichOneof("message") != kind:
                continue
            if control.accepted:
                return False  # re-sent after a resume: the caller had its ack
            if kind == "update_config" and accepted:
                control.accepted = True
            else:
                del self._controls[i]
            return True
        return kind == "update_config"  # an update this state never sent: pass it on

    def _on_error(self, error: errors.VoxwireError) -> None:
        log.info("error event %s (retryable: %s): %s", error.reason, error.retryable, error)
        self.last_error = error
        if resumable(error):
            delay = error.retry_delay.total_seconds() if error.retry_delay else 0.0
            self._retry_after_s = delay
        else:
            self._failure = error

    # -- the connection's end ------------------------------------------------------------------

    def connection_lost(self, close_code: int | None) -> Outcome:
        """The connection ended (``close_code`` None: no close frame, or the client closed it
        after a hand-over). The outcome says whether the session goes on."""
        if self.phase is Phase.ENDED:
            return Outcome(ended=True)
        failure = self._failure
        if failure is None and self._retry_after_s is None and not self._hand_over:
            failure = close_error(close_code)
        if failure is not None:
            self.fail(failure)
            return Outcome(failure=failure)
        self._go("lost")
        return Outcome(
            retry_after_s=self._retry_after_s or 0.0,
            hand_over=self._hand_over,
            reconnect_now=self._reconnect_now,
        )

    def fail(self, error: errors.VoxwireError) -> None:
        self._failure = error
        self.phase = Phase.FAILED


def _index(utterance_id: str) -> int | None:
    """The index of an utterance id "u<n>" (the contract's form), else None."""
    if utterance_id.startswith("u") and utterance_id[1:].isdigit():
        return int(utterance_id[1:])
    return None

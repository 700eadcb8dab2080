"""SttEdgeSession: the sans-I/O core of one ``WS /v1/stt/stream`` session.

Rules (docs/design/edge.md, "Session states", "Sessions that survive restarts"):
- The socket adapter turns frames, upstream responses, upstream failures and the clock into
  calls here; each returns ``Actions`` (messages for the client, requests for the upstream
  stream, an upstream stream to open, a close). No I/O, no sockets, the clock is injected.
- States and the client messages each takes are the table ``_ACCEPTS``; anything else is an
  error of the session (``start`` twice is CONFIG_ALREADY_SET, the rest INVALID_MESSAGE).
- Audio goes into the replay window first (``voxwire.replay.AudioReplayWindow``) and from there
  upstream. While an upstream stream opens (OPENING, RECOVERING) audio and controls wait; when
  the upstream says ``started``, everything from the upstream's base position on is written in
  the order it arrived. The same path serves the first open and a failover.
- The acknowledged position (``Ack``) is the maximum of the last final result's end and the
  last finalize ack's audio position; it travels on the final or ack that moved it.
- Unacknowledged audio near the replay window forces a final (an internal finalize whose ack
  the client never sees).
- Audio of a format the model does not take (``fit``: a server that does not resample, 16 kHz
  PCM16 mono only, and a browser's 48 kHz) goes upstream converted to the nearest it takes
  (``voxwire.audio.convert``); the window, the acks and the resume token keep the client's
  format. Each upstream stream gets a converter of its own, and its resampler's tail goes before
  every finalize and close, so these cover all the audio before them.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gateway.session_base import Due, EdgeSessionBase
from gateway.wire.query import STT_QUERY_FIELDS
from voxwire import errors
from voxwire.audio.codecs import Encoding, PcmFormat
from voxwire.audio.convert import FormatConverter
from voxwire.audio.formats import ENCODINGS, PROTO_ENCODINGS, resolve_format
from voxwire.edge.v1 import session_pb2, stt_pb2
from voxwire.replay import AudioReplayWindow, continued_from_violations
from voxwire.timings import Clock
from voxwire.v1 import audio_pb2, stream_pb2, timings_pb2, transcription_pb2

Request = transcription_pb2.StreamingTranscribeRequest
Response = transcription_pb2.StreamingTranscribeResponse
Message = stt_pb2.SttServerMessage
# (token, expiry as seconds since the epoch) for a session's current config.
TokenIssuer = Callable[[transcription_pb2.TranscriptionConfig, str, int], tuple[str, float]]
# The format a config's audio goes upstream in when the model does not take it as it is (None:
# as it is); ``voxwire.capabilities.fitted_input`` over what the adapters said of the model.
FormatFit = Callable[[transcription_pb2.TranscriptionConfig], audio_pb2.AudioFormat | None]

_FORCED = "vx-forced-"  # prefix of the gateway's own finalize ids
# Upstream failures a session survives by resuming on another adapter.
_FAILOVER_REASONS = frozenset({"BACKEND_UNAVAILABLE", "DRAINING", "STREAM_TOO_LONG"})
# An adapter's notices the client gets: its replica failover, and audio that does not sound
# like its declared format (once per session: a resumed upstream hears the replay and may say
# it again). Its idle, duration and drain warnings are about the upstream stream, which the
# gateway keeps alive or moves; the session's own warnings come from the gateway (on_time,
# drain).
_PASSED_NOTICES = frozenset(
    {stream_pb2.StreamNotice.KIND_FAILOVER, stream_pb2.StreamNotice.KIND_FORMAT_SUSPECT}
)
_ONCE_NOTICES = frozenset({stream_pb2.StreamNotice.KIND_FORMAT_SUSPECT})


class State(enum.Enum):
    AWAITING_START = "awaiting start"  # no config yet
    OPENING = "opening"  # upstream stream opening; audio waits in the window
    STREAMING = "streaming"
    RECOVERING = "recovering"  # upstream lost; a new one opens (failover)
    CLOSING = "closing"  # close sent upstream; waiting for the summary
    HANDING_OVER = "handing over"  # maximum duration: finishing so the client resumes
    ENDED = "ended"

    # Looked up in the state table once per message: identity hashing (members are singletons)
    # in C, where Enum's own __hash__ is a Python call (hash of the name), twice as slow.
    __hash__ = object.__hash__


_ACCEPTS: dict[State, frozenset[str]] = {
    State.AWAITING_START: frozenset({"start", "keep_alive"}),
    State.OPENING: frozenset({"audio", "finalize", "keep_alive", "update_config", "close"}),
    State.STREAMING: frozenset({"audio", "finalize", "keep_alive", "update_config", "close"}),
    State.RECOVERING: frozenset({"audio", "finalize", "keep_alive", "update_config", "close"}),
    State.CLOSING: frozenset({"keep_alive"}),
    # Audio after the handover began stays in the client's replay buffer (it is not acked).
    State.HANDING_OVER: frozenset({"audio", "keep_alive", "finalize", "update_config"}),
    State.ENDED: frozenset(),
}
_WAITING = frozenset({State.OPENING, State.RECOVERING})


@dataclass(frozen=True, slots=True)
class SttLimits:
    max_frame_bytes: int = 64 * 1024
    idle_timeout_s: float = 30.0
    idle_warning_s: float = 5.0
    max_session_s: float = 3600.0
    duration_warning_s: float = 60.0
    replay_window_ms: int = 30_000
    force_final_margin_ms: int = 5_000
    # Upstream failures survived in a row without the position moving.
    max_failovers: int = 3
    drain_grace_s: float = 20.0

    def to_proto(self) -> session_pb2.EdgeLimits:
        limits = session_pb2.EdgeLimits(max_frame_bytes=self.max_frame_bytes)
        limits.idle_timeout.FromMilliseconds(round(self.idle_timeout_s * 1000))
        limits.idle_warning.FromMilliseconds(round(self.idle_warning_s * 1000))
        limits.max_session_duration.FromMilliseconds(round(self.max_session_s * 1000))
        limits.duration_warning.FromMilliseconds(round(self.duration_warning_s * 1000))
        limits.replay_window.FromMilliseconds(self.replay_window_ms)
        return limits


@dataclass(frozen=True, slots=True)
class OpenUpstream:
    """Open an upstream stream with ``config`` (offsets set) and write it first."""

    config: transcription_pb2.TranscriptionConfig
    failover: bool


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    error: errors.VoxwireError | None = None


@dataclass(slots=True)
class Actions:
    to_client: list[Message] = field(default_factory=list)
    to_upstream: list[Request] = field(default_factory=list)
    open_upstream: OpenUpstream | None = None
    # Stop the current upstream stream (cancel it) before anything else.
    cancel_upstream: bool = False
    close: Close | None = None


@dataclass(slots=True)
class _Control:
    """A finalize or update waiting for its ack, with the audio position it follows."""

    frame: int
    request: Request


class SttEdgeSession(EdgeSessionBase[SttLimits]):
    _DURATION_WARNING = "the session reaches its maximum duration and will be handed over"
    # How errors speak of the session's first message, in the wire's own terms: the
    # WebSocket's ``start`` here; the gRPC front's is the contract's ``config`` (its
    # FrontSttSession), where "send start" named a message its caller does not have.
    _start_again = "start may only be the first message of a session"
    _start_first = "send start (or the config in the query string) first"
    # How errors name the config's fields (``start``'s ``from_query``); a class default, so
    # that a session configured by a message holds nothing for it (idle memory, docs/edge.md).
    _field_names: Callable[[str], str | None] | None = None

    def __init__(
        self,
        limits: SttLimits,
        *,
        session_id: str,
        issue_token: TokenIssuer,
        clock: Clock = time.monotonic,
        transport_limits: session_pb2.EdgeLimits | None = None,
        fit: FormatFit | None = None,
    ) -> None:
        super().__init__(
            limits,
            session_id=session_id,
            issue_token=issue_token,
            clock=clock,
            transport_limits=transport_limits,
        )
        self.state = State.AWAITING_START
        self.config = transcription_pb2.TranscriptionConfig()
        self.window: AudioReplayWindow | None = None
        self.ack = stt_pb2.Ack()
        self._upstream_base_ms = 0  # session position of the current upstream's first byte
        self._written_frame = 0  # frames written to the current upstream (session position)
        self._controls: list[_Control] = []  # sent or queued, not yet acknowledged
        self._forced = 0
        self._forced_pending = False
        self._failovers = 0
        self._opening_since = 0.0
        self._queued: list[float] = []  # arrival times of audio waiting for the upstream
        self._last_speech: str = ""
        self._notices_sent: set[int] = set()  # kinds said once per session (_ONCE_NOTICES)
        self._upstream_timings: list[timings_pb2.StageTimings] = []
        self._closing_requested = False
        self._fit = fit
        # (client's format, the model's) when the audio is converted upstream, and the current
        # upstream stream's converter.
        self._formats: tuple[PcmFormat, PcmFormat] | None = None
        self._converter: FormatConverter | None = None

    # -- start ---------------------------------------------------------------------------------

    def start(
        self,
        config: transcription_pb2.TranscriptionConfig,
        ack: stt_pb2.Ack | None = None,
        *,
        session_id: str = "",
        resumes: int = 0,
        from_query: bool = False,
        from_config: bool = False,
    ) -> Actions:
        """The configuration arrived (query string, ``start``, or a verified resume token with
        the client's last ``ack``; a resume keeps the token's ``session_id``). Raises
        InvalidConfig, UnsupportedEncoding, UnsupportedSampleRate, ConfigAlreadySet.
        ``from_query``: the client set it in the query string, and errors name its fields by
        their parameters there (``sample_rate``, not ``config.audio_format.sample_rate_hz``).
        ``from_config``: ``ack`` is the gRPC front caller's config.stream_offset_ms and
        config.first_utterance_index, not a resume's."""
        if self.state is not State.AWAITING_START:
            raise errors.ConfigAlreadySet("the session already has its configuration")
        if from_query:
            self._field_names = STT_QUERY_FIELDS.get
        if session_id:
            self.session_id = session_id
        self.resumes = resumes
        if not config.HasField("audio_format"):
            raise errors.InvalidConfig(
                "config.audio_format is required",
                violations=[errors.Violation("config.audio_format", "required")],
            )
        fmt = resolve_format(config.audio_format, "config.audio_format", max_channels=2)
        self.config = transcription_pb2.TranscriptionConfig()
        self.config.CopyFrom(config)
        self.config.ClearField("stream_offset_ms")
        self.config.ClearField("first_utterance_index")
        if self._fit is not None and (target := self._fit(self.config)) is not None:
            self._formats = (
                fmt,
                PcmFormat(ENCODINGS[target.encoding], target.sample_rate_hz, target.channels),
            )
        if ack is not None:
            # Checked here, named as the client sent it: passed on, the adapter refused it as
            # config.stream_offset_ms, a field the client never set.
            at, index = (
                ("config.stream_offset_ms", "config.first_utterance_index")
                if from_config
                else ("start.resume.ack.finalizedThroughMs", "start.resume.ack.nextUtteranceIndex")
            )
            if violations := continued_from_violations(
                at=(at, ack.finalized_through_ms), index=(index, ack.next_utterance_index)
            ):
                if from_config:
                    raise errors.InvalidConfig.of("invalid config", violations)
                raise errors.ResumeRejected(
                    "the ack is past where any session could have got to: resume from the "
                    "last ack the session sent, or start a new session",
                    violations=violations,
                )
            self.ack.CopyFrom(ack)
        base = self.ack.finalized_through_ms
        self.window = AudioReplayWindow(
            fmt.bytes_per_frame,
            fmt.sample_rate_hz,
            max_ms=self.limits.replay_window_ms * 2,
            base_ms=base,
        )
        self._written_frame = self.window.frame_at(base)
        token, expires = self._issue_token(self.config, self.session_id, self.resumes)
        started = session_pb2.SessionStarted(
            session_id=self.session_id,
            resume_token=token,
            limits=self._limits_proto(),
            resumed=ack is not None,
            resumes=self.resumes,
        )
        started.resume_expires_at.FromNanoseconds(round(expires * 1e9))
        actions = Actions(to_client=[Message(session=started)])
        self._open(actions, failover=False)
        return actions

    def _limits_proto(self) -> session_pb2.EdgeLimits:
        return self._with_transport(self.limits.to_proto())

    # -- client side ---------------------------------------------------------------------------

    @property
    def input_ended(self) -> bool:
        """The client sent ``close``: what it sends after is ``discard``ed unread."""
        return self._closing_requested

    def discard(self) -> Actions:
        """A client message after ``close``. By the contract (docs/contract.md, "Streaming
        transcription") it is discarded unread and never changes how the session ends, so the
        outcome does not depend on timing (after its close no idle timer runs)."""
        return Actions()

    @property
    def takes_audio(self) -> bool:
        """Whether the runner may read the client's next frame. While an upstream stream opens
        (OPENING, RECOVERING) audio is only held in the replay window, which drops its oldest
        audio past its bound; so while the window has no room for one more frame of the
        largest size, the runner reads nothing and TCP holds the client back until the
        upstream starts and takes the audio (or the session ends). A client that sent more
        than the window right after the handshake lost its oldest audio, and the session hung
        at the upstream's start (test_stt_session_props found it)."""
        window = self.window
        if self.state not in _WAITING or window is None:
            return True
        return window.held_bytes + self.limits.max_frame_bytes <= window.max_bytes

    def client_message(self, msg: stt_pb2.SttClientMessage) -> Actions:
        """One JSON control (``start`` is the adapter's: it needs the credentials). Raises a
        VoxwireError for a protocol error of the client."""
        if self._closing_requested:
            return self.discard()
        kind = msg.WhichOneof("message")
        if kind is None:
            raise errors.InvalidMessage("empty message (no field of the oneof set)")
        self.check(kind)
        self._last_client_at = self._clock()
        self._warned_idle = False
        if kind == "audio":
            return self.client_audio(msg.audio.data)
        actions = Actions()
        if kind == "keep_alive":
            if self.state is State.STREAMING:
                actions.to_upstream.append(Request(keep_alive=stream_pb2.KeepAlive()))
        elif kind == "finalize":
            if msg.finalize.finalize_id.startswith(_FORCED):
                # The gateway's own finalizes are matched by id and their acks swallowed: a
                # client's with that prefix would never be answered.
                raise errors.InvalidMessage(
                    f"finalize ids beginning with {_FORCED!r} are reserved for the gateway",
                    violations=[errors.Violation("finalize.finalize_id", "reserved prefix")],
                )
            self._control(Request(finalize=msg.finalize), actions)
        elif kind == "update_config":
            self._control(Request(update_config=msg.update_config), actions)
        elif kind == "close":
            # While an upstream opens, the close waits behind the audio before it (_on_started).
            self._closing_requested = True
            if self.state is State.STREAMING:
                self._upstream_end(actions, Request(close=transcription_pb2.CloseStream()))
                self.state = State.CLOSING
        return actions

    def client_audio(self, data: bytes) -> Actions:
        """A binary frame of audio. Raises ConfigRequired, ChunkTooLarge, MisalignedAudio,
        InvalidMessage."""
        if self._closing_requested:
            return self.discard()
        self.check("audio")
        assert self.window is not None
        self._last_client_at = now = self._clock()
        self._warned_idle = False
        if len(data) > self.limits.max_frame_bytes:
            raise errors.ChunkTooLarge(
                f"audio frame of {len(data)} bytes exceeds {self.limits.max_frame_bytes}"
            )
        if len(data) % self.window.frame_bytes:
            raise errors.MisalignedAudio(
                f"{len(data)} bytes is not a whole number of {self.window.frame_bytes}-byte frames"
            )
        actions = Actions()
        if not data or self.state is State.HANDING_OVER:
            return actions  # kept by the client until acknowledged: it is replayed on resume
        if self._formats is not None and self._formats[0].encoding is Encoding.PCM_F32LE:
            # Checked as it comes: the converter meets audio held in the window only once the
            # upstream starts. The adapter's reason for such audio, as it is where passed on.
            if not np.isfinite(np.frombuffer(data, "<f4")).all():
                raise errors.InvalidAudio("the audio has NaN or infinite samples")
        self.window.append(data)
        frames = len(data) // self.window.frame_bytes
        if self.state is State.STREAMING:
            if self._converter is None:  # the model takes it as it is: no call on this path
                actions.to_upstream.append(Request(audio=data))
            else:
                self._upstream_audio(actions, data)
            self._written_frame += frames
            self._maybe_force_final(actions)
        else:
            self._queued.append(now)
        return actions

    def check(self, kind: str) -> None:
        """Raises the error of a client message ``kind`` the current state does not take."""
        if kind in _ACCEPTS[self.state] and not (self._closing_requested and kind != "keep_alive"):
            return
        if kind == "start":
            raise errors.ConfigAlreadySet(self._start_again)
        if self.state is State.AWAITING_START:
            raise errors.ConfigRequired(f"{kind} before the configuration: {self._start_first}")
        state = "closing" if self._closing_requested else self.state.value
        raise errors.InvalidMessage(f"{kind} is not accepted while the session is {state}")

    def _control(self, request: Request, actions: Actions) -> None:
        assert self.window is not None
        control = _Control(self.window.frame_at(self.window.received_ms), request)
        self._controls.append(control)
        if self.state is State.STREAMING:
            self._upstream_end(actions, request)

    def _upstream_audio(self, actions: Actions, data: bytes) -> None:
        """Audio for the upstream, converted when the model does not take it as it is."""
        if self._converter is not None:
            data = self._converter.convert(data)
            if not data:
                return  # the resampler holds it back
        actions.to_upstream.append(Request(audio=data))

    def _upstream_end(self, actions: Actions, request: Request) -> None:
        """A control for the upstream; a finalize or close follows the resampler's tail (the
        audio before it, all of it), and the audio after it starts a resampler afresh."""
        converter = self._converter
        if converter is not None and request.WhichOneof("request") != "update_config":
            if tail := converter.flush():
                actions.to_upstream.append(Request(audio=tail))
            assert self._formats is not None
            self._converter = FormatConverter(*self._formats)
        actions.to_upstream.append(request)

    def _maybe_force_final(self, actions: Actions) -> None:
        assert self.window is not None
        limit = self.limits.replay_window_ms - self.limits.force_final_margin_ms
        if self._forced_pending or self.window.unacked_ms < limit:
            return
        self._forced += 1
        self._forced_pending = True
        self._control(
            Request(finalize=transcription_pb2.Finalize(finalize_id=f"{_FORCED}{self._forced}")),
            actions,
        )

    # -- upstream side -------------------------------------------------------------------------

    def _open(self, actions: Actions, *, failover: bool) -> None:
        config = transcription_pb2.TranscriptionConfig()
        config.CopyFrom(self.config)
        config.stream_offset_ms = self.ack.finalized_through_ms
        config.first_utterance_index = self.ack.next_utterance_index
        self._converter = None
        if self._formats is not None:
            model = self._formats[1]
            config.audio_format.encoding = PROTO_ENCODINGS[model.encoding]
            config.audio_format.sample_rate_hz = model.sample_rate_hz
            config.audio_format.channels = model.channels
            self._converter = FormatConverter(*self._formats)
        self._upstream_base_ms = self.ack.finalized_through_ms
        self._opening_since = self._clock()
        self.state = State.RECOVERING if failover else State.OPENING
        actions.open_upstream = OpenUpstream(config, failover)

    def upstream_response(self, resp: Response) -> Actions:
        """One response of the current upstream stream."""
        if self.state is State.ENDED:
            return Actions()  # nothing after the end, whatever the upstream still says
        kind = resp.WhichOneof("response")
        actions = Actions()
        if kind == "started":
            self._on_started(resp, actions)
        elif kind == "result":
            self._on_result(resp.result, actions)
        elif kind == "finalize_ack":
            self._on_finalize_ack(resp.finalize_ack, actions)
        elif kind == "update_config_ack":
            control = self._settle(resp.update_config_ack.update_id, "update_config")
            if control is not None and resp.update_config_ack.accepted:
                self._fold_update(control.request.update_config)
            actions.to_client.append(Message(update_config_ack=resp.update_config_ack))
        elif kind == "speech_started":
            # After a failover the replayed utterance starts again: say it once.
            if resp.speech_started.utterance_id != self._last_speech:
                self._last_speech = resp.speech_started.utterance_id
                actions.to_client.append(Message(speech_started=resp.speech_started))
        elif kind == "utterance_end":
            actions.to_client.append(Message(utterance_end=resp.utterance_end))
        elif kind == "notice" and resp.notice.kind in _PASSED_NOTICES:
            if resp.notice.kind not in self._notices_sent:
                actions.to_client.append(Message(notice=resp.notice))
            if resp.notice.kind in _ONCE_NOTICES:
                self._notices_sent.add(resp.notice.kind)
        elif kind == "summary":
            self._on_summary(resp.summary, actions)
        return actions

    def _on_started(self, resp: Response, actions: Actions) -> None:
        assert self.window is not None
        was = self.state
        self.edge["edge_connect_us"] += round((self._clock() - self._opening_since) * 1e6)
        if was is State.RECOVERING:
            notice = stream_pb2.StreamNotice(
                kind=stream_pb2.StreamNotice.KIND_FAILOVER,
                message=f"the session moved to another inference server; audio from "
                f"{self._upstream_base_ms} ms was replayed",
            )
            actions.to_client.append(Message(notice=notice))
        else:
            # One session id for the client: the session's own (its ``session`` message and
            # its ``summary`` carry it), not the upstream stream's, which a failover or a
            # resume replaces.
            started = Message(started=resp.started)
            started.started.session_id = self.session_id
            actions.to_client.append(started)
        self.state = State.STREAMING
        self._flush_window(actions)
        if self._closing_requested:
            self._upstream_end(actions, Request(close=transcription_pb2.CloseStream()))
            self.state = State.CLOSING
        else:
            # Audio held while the upstream opened may have filled the window already: the
            # forced final goes now, not at the client's next frame (which may be long coming,
            # e.g. a client that waits for acks before sending more).
            self._maybe_force_final(actions)

    def _flush_window(self, actions: Actions) -> None:
        """Write everything from the upstream's base on, controls at their positions."""
        assert self.window is not None
        now = self._clock()
        for arrived in self._queued:
            self.edge["edge_queue_us"] += round((now - arrived) * 1e6)
        self._queued.clear()
        audio = self.window.audio_since(self._upstream_base_ms)
        frame = self.window.frame_at(self._upstream_base_ms)
        step = max(
            self.window.frame_bytes,
            self.limits.max_frame_bytes // self.window.frame_bytes * self.window.frame_bytes,
        )
        controls = sorted(self._controls, key=lambda c: c.frame)
        pos = 0
        for control in controls:
            upto = max(0, (control.frame - frame) * self.window.frame_bytes)
            while pos < min(upto, len(audio)):
                end = min(pos + step, upto, len(audio))
                self._upstream_audio(actions, audio[pos:end])
                pos = end
            self._upstream_end(actions, control.request)
        while pos < len(audio):
            self._upstream_audio(actions, audio[pos : pos + step])
            pos += step
        self._written_frame = self.window.frame_at(self.window.received_ms)

    def _on_result(self, result: transcription_pb2.TranscriptResult, actions: Actions) -> None:
        msg = Message(result=result)
        if result.is_final:
            index = _utterance_index(result.utterance_id)
            self._advance(result.end_ms, index + 1 if index is not None else None)
            msg.ack.CopyFrom(self.ack)
        actions.to_client.append(msg)

    def _on_finalize_ack(self, ack: transcription_pb2.FinalizeAck, actions: Actions) -> None:
        self._settle(ack.finalize_id, "finalize")
        self._advance(ack.audio_ms, None)
        if ack.finalize_id.startswith(_FORCED):
            self._forced_pending = False
            actions.to_client.append(Message(ack=self.ack))
        else:
            msg = Message(finalize_ack=ack)
            msg.ack.CopyFrom(self.ack)
            actions.to_client.append(msg)

    def _advance(self, through_ms: int, next_index: int | None) -> None:
        assert self.window is not None
        if through_ms > self.ack.finalized_through_ms:
            self.ack.finalized_through_ms = min(through_ms, self.window.received_ms)
            self._failovers = 0  # progress: the failover budget is per stuck position
        if next_index is not None and next_index > self.ack.next_utterance_index:
            self.ack.next_utterance_index = next_index
        self.window.ack(self.ack.finalized_through_ms)

    def _settle(self, request_id: str, kind: str) -> _Control | None:
        """The control ``request_id`` was answered: forget it (it is not resent on failover)."""
        for i, control in enumerate(self._controls):
            request = control.request
            if request.WhichOneof("request") != kind:
                continue
            if kind == "finalize":
                cid = request.finalize.finalize_id
            else:
                cid = request.update_config.update_id
            if cid == request_id:
                return self._controls.pop(i)
        return None

    def _fold_update(self, update: transcription_pb2.UpdateTranscriptionConfig) -> None:
        """An accepted update becomes part of the config later upstream streams open with (a
        failover, a resume token issued from now on); set endpointing fields replace, vocabulary
        entries add (as the contract defines an update)."""
        for fd, value in update.endpointing.ListFields():
            setattr(self.config.endpointing, fd.name, value)
        self.config.vocabulary.extend(update.vocabulary)

    def _on_summary(
        self, summary: transcription_pb2.TranscriptionSummary, actions: Actions
    ) -> None:
        self._upstream_timings.append(summary.timings)
        if self.state is State.HANDING_OVER:
            self.state = State.ENDED
            actions.close = Close(
                errors.StreamTooLong.ws_close_code,
                errors.StreamTooLong("maximum session duration: continue with the resume token"),
            )
            return
        self.state = State.ENDED
        assert self.window is not None
        actions.to_client.append(
            Message(
                summary=session_pb2.SessionSummary(
                    session_id=self.session_id,
                    timings=self.timings(),
                    resumes=self.resumes,
                    audio_ms=self.window.received_ms,
                    utterances=self.ack.next_utterance_index,
                )
            )
        )
        actions.close = Close(1000)

    def upstream_failed(
        self, error: errors.VoxwireError, timings: timings_pb2.StageTimings | None = None
    ) -> Actions:
        """The upstream stream ended with ``error``: fail over, or end the session."""
        if timings is not None:
            self._upstream_timings.append(timings)
        actions = Actions(cancel_upstream=True)
        if self.state is State.ENDED:
            return Actions()
        can_move = (
            error.reason in _FAILOVER_REASONS
            and self.window is not None
            and self.window.lossless
            and self._failovers < self.limits.max_failovers
            and self.state is not State.HANDING_OVER
        )
        if not can_move:
            return self.fail(error)
        self._failovers += 1
        self.resumes += 1
        self._open(actions, failover=True)
        return actions

    def fail(self, error: errors.VoxwireError) -> Actions:
        """End the session with ``error`` (an error event, then the close)."""
        if self.state is State.ENDED:
            return Actions()
        self.state = State.ENDED
        if self._field_names is not None:
            error = errors.renamed_fields(error, self._field_names)
        return Actions(
            to_client=[Message(error=errors.to_event(error))],
            cancel_upstream=True,
            close=Close(error.ws_close_code, error),
        )

    # -- time ----------------------------------------------------------------------------------

    def _idle_at(self) -> float:
        """When the session is idle for ``idle_timeout_s``. Never after the client's close: it
        then waits for the server (docs/contract.md, idle_timeout: "STT results after a
        close"), however long its audio takes the model. Before, a client that sent minutes of
        audio and its close at once was closed 4008 IDLE_TIMEOUT 30 s later while the model
        still worked on it (tests/gateway/test_stt_fast_client.py)."""
        if self._closing_requested:
            return math.inf
        return self._last_client_at + self.limits.idle_timeout_s

    def next_deadline(self) -> float:
        """When ``on_time`` should run next (monotonic seconds)."""
        return self._timer_deadline()

    def on_time(self) -> Actions:
        actions = Actions()
        if self.state is State.ENDED:
            return actions
        # A session handing over or closing is ending already: its end is not started again.
        check = self._timers(
            self._clock(), may_end=self.state not in (State.HANDING_OVER, State.CLOSING)
        )
        if check.due is Due.DRAINED:
            return self.fail(self._drained())
        if check.due is Due.IDLE:
            return self.fail(
                errors.IdleTimeout(
                    f"no message for {self.limits.idle_timeout_s:g} s; send audio or keepAlive"
                )
            )
        actions.to_client += [Message(notice=n) for n in check.notices]
        if check.due is Due.MAX_DURATION:
            self._hand_over(actions)
        return actions

    def _hand_over(self, actions: Actions) -> None:
        """Maximum duration: finalize what the upstream has, then close so the client resumes."""
        away = self._going_away("STREAM_TOO_LONG", self.config, grace_s=self.limits.drain_grace_s)
        actions.to_client.append(Message(going_away=away))
        if self.state is State.STREAMING:
            self._upstream_end(actions, Request(close=transcription_pb2.CloseStream()))
            self.state = State.HANDING_OVER
        else:  # nothing upstream to finish: the client resumes from its ack
            self.state = State.ENDED
            actions.cancel_upstream = True
            actions.close = Close(
                errors.StreamTooLong.ws_close_code, errors.StreamTooLong("maximum session duration")
            )

    def drain(self, grace_s: float | None = None, *, reconnect_now: bool = False) -> Actions:
        """The gateway is shutting down: going_away now, the close at the end of the grace."""
        if self.state is State.ENDED or self._drain_ends is not None:
            return Actions()
        away = self._begin_drain(grace_s, reconnect_now, self.config)
        return Actions(to_client=[Message(going_away=away)])

    # -- timings -------------------------------------------------------------------------------

    def timings(self) -> timings_pb2.StageTimings:
        """The session's whole breakdown: every upstream segment's stages plus the edge's."""
        return self._whole_timings(self._upstream_timings)


def _utterance_index(utterance_id: str) -> int | None:
    """The index of an id "u<n>" (the contract's form), or None for another form."""
    if utterance_id.startswith("u") and utterance_id[1:].isdigit():
        return int(utterance_id[1:])
    return None

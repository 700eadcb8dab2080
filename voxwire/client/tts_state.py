"""SynthesisClientState: the sans-I/O core of one SDK synthesis session (many contexts, across
its connections).

Rules (docs/design/edge.md, "Resume (TTS)"):
- Per context the state keeps a ``voxwire.replay.TextReplay``: the text appended and not yet
  spoken, the words received (their text offsets and audio ends) and the audio received (last
  sequence number, end of the timeline). Audio and words are recorded as they are received.
- A new connection starts with ``start{audioDelivery, lead}``, and after the first session with
  ``start{resume{token}}`` as well. When the gateway answers ``session`` on a resume, every
  unfinished context is reopened with its config plus ``timeline_offset_ms`` (end of the audio
  received) and ``first_sequence_number`` (last received + 1), then the text after the last
  word whose audio was received completely, the flushes not yet acknowledged, and ``close`` if
  the client had closed it; then ``closeSession`` if the client had sent it. A context the
  client cancelled or truncated is not reopened: it ends there, with the event the gateway
  would have sent.
- What a resumed context sends again is not passed on twice: its second ``opened``, a chunk
  with a sequence number already received, a word whose text offset is before the end of the
  last word passed on. Word offsets of a reopened context count from its resume point; they
  are passed on as offsets into the whole context text.
- ``goingAway`` hands the session over at once unless the client is closing it; errors and
  closes are read as in the STT state (``connection.resumable`` / ``close_error``).

Contexts: OPENING --opened--> OPEN --close--> CLOSING --done--> ENDED; cancel, truncate or a
context error end any of them; an ended context leaves the state (``_finish``). Phases of the
session are the STT state's table.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from voxwire import errors
from voxwire.audio.formats import sample_bytes
from voxwire.client.connection import close_error, resumable
from voxwire.client.stt_state import _TRANSITIONS, Phase
from voxwire.edge.frames import AudioFrame
from voxwire.edge.v1 import session_pb2, stt_pb2, tts_pb2
from voxwire.replay import TextReplay, WordMark, cut_audio, heard
from voxwire.v1 import stream_pb2, synthesis_pb2

log = logging.getLogger(__name__)

Message = tts_pb2.TtsClientMessage
ServerMessage = tts_pb2.TtsServerMessage
# A context id is 1 to 128 bytes (docs/contract.md, docs/edge.md). The gateway refuses any
# other with INVALID_MESSAGE for the whole session, so it is checked here, before it is sent.
MAX_CONTEXT_ID_BYTES = 128


@dataclass(frozen=True, slots=True)
class SynthesizedAudio:
    """One chunk of a context's audio, in the context's output format."""

    sequence_number: int
    start_ms: int
    duration_ms: int
    audio: bytes


ContextEvent = (
    tts_pb2.ContextOpened
    | SynthesizedAudio
    | synthesis_pb2.WordTimestamps
    | synthesis_pb2.FlushAck
    | synthesis_pb2.ContextDone
    | synthesis_pb2.ContextCancelled
    | tts_pb2.Truncated
    | stream_pb2.StreamNotice
)
SessionEvent = stream_pb2.StreamNotice | session_pb2.SessionSummary


class CtxState(enum.Enum):
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"  # the client closed it; audio still comes
    ENDED = "ended"


@dataclass(eq=False)
class ClientContext:
    context_id: str
    config: synthesis_pb2.SynthesisContextConfig
    state: CtxState = CtxState.OPENING
    replay: TextReplay = field(default_factory=TextReplay)
    pending_flushes: list[str] = field(default_factory=list)
    closed_by_client: bool = False
    handle: int = 0
    reopened: bool = False  # reopened on a resumed connection: Truncated.heard is ours
    opened_seen: bool = False
    word_base: int = 0  # added to the current stream's word text offsets
    reported_to: int = 0  # end (code points) of the last word passed on
    # Every word passed on, in order (whole-context offsets): what a truncate heard.
    words: list[synthesis_pb2.WordTimestamp] = field(default_factory=list)
    # The cancel or truncate the client sent, until the context ends: a resume never reopens
    # the context (it ends here, ``replay``).
    stop: Message | None = None
    # Binary frames carry no duration: the current stream's (each ``opened``'s) first start
    # and the frames received since, from which each frame's end comes as the server computes
    # it (``start + frames * 1000 // rate``, docs/contract.md's tiling).
    stream_base_ms: int = -1
    stream_frames: int = 0

    def binary_duration_ms(self, start_ms: int, audio: bytes) -> int:
        """A binary frame's duration, tiling exactly with the frames before and after it. A
        start that is not where the last frame ended (a stream the server rebased) starts
        the count again from it."""
        fmt = self.config.output_format
        rate = max(1, fmt.sample_rate_hz)
        frames = len(audio) // max(1, sample_bytes(fmt.encoding))
        if self.stream_base_ms < 0 or start_ms != (
            self.stream_base_ms + self.stream_frames * 1000 // rate
        ):
            self.stream_base_ms, self.stream_frames = start_ms, 0
        self.stream_frames += frames
        return self.stream_base_ms + self.stream_frames * 1000 // rate - start_ms


@dataclass(slots=True)
class TtsOutcome:
    """What the adapter does after one input."""

    # (context id or "" for the session, event) in order.
    events: list[tuple[str, ContextEvent | SessionEvent]] = field(default_factory=list)
    # Contexts that ended (their streams close), with the context's error if it failed.
    ended: list[tuple[str, errors.VoxwireError | None]] = field(default_factory=list)
    session_up: bool = False
    resumed: bool = False
    hand_over: bool = False
    # The going_away said the server spread the reconnects itself: no jitter of our own.
    reconnect_now: bool = False
    retry_after_s: float = 0.0
    failure: errors.VoxwireError | None = None
    session_ended: bool = False


class SynthesisClientState:
    def __init__(self, start: tts_pb2.TtsStart) -> None:
        self.start = tts_pb2.TtsStart()
        self.start.CopyFrom(start)
        self.phase = Phase.CONNECTING
        self.token = ""
        self.session_id = ""
        # What the gateway says a context holds unsynthesized on its servers (EdgeLimits;
        # 0: it did not say): long text goes in pieces that fit.
        self.max_pending_text_bytes = 0
        # The last session message's limits (the keepalive fits its idle timeout).
        self.limits: session_pb2.EdgeLimits | None = None
        self.closing = False
        self.contexts: dict[str, ClientContext] = {}
        self._handles: dict[int, ClientContext] = {}
        self._retry_after_s: float | None = None
        self._failure: errors.VoxwireError | None = None
        # The error event of the current connection, if one came: why it ends (the link's
        # "last" cause, when reconnecting gives out).
        self.last_error: errors.VoxwireError | None = None
        self._hand_over = False
        self._reconnect_now = False

    def _go(self, event: str) -> None:
        try:
            self.phase = _TRANSITIONS[self.phase][event]
        except KeyError:
            raise RuntimeError(f"{event} in phase {self.phase.value}") from None

    # -- the client's side -------------------------------------------------------------------

    def connected(self) -> Message:
        self._go("connected")
        self._retry_after_s = None
        self.last_error = None
        self._hand_over = False
        self._reconnect_now = False
        self._handles.clear()
        start = tts_pb2.TtsStart()
        start.CopyFrom(self.start)
        if self.token:
            start.resume.CopyFrom(stt_pb2.Resume(resume_token=self.token))
        return Message(start=start)

    def open(self, context_id: str, config: synthesis_pb2.SynthesisContextConfig) -> Message:
        """Raises InvalidMessage for an id that is not 1 to 128 bytes, ContextAlreadyOpen for
        an id whose context has not ended."""
        if not 1 <= len(context_id.encode()) <= MAX_CONTEXT_ID_BYTES:
            raise errors.InvalidMessage(
                f"a context id is 1 to {MAX_CONTEXT_ID_BYTES} bytes of UTF-8, not "
                f"{len(context_id.encode())}",
                violations=[errors.Violation("contextId", f"1 to {MAX_CONTEXT_ID_BYTES} bytes")],
            )
        ctx = self.contexts.get(context_id)
        if ctx is not None:  # an ended context's entry is gone: its id may be used again
            raise errors.ContextAlreadyOpen(f"context {context_id!r} is already open")
        ctx = ClientContext(context_id, synthesis_pb2.SynthesisContextConfig())
        ctx.config.CopyFrom(config)
        ctx.replay.opened(config)
        self.contexts[context_id] = ctx
        return Message(context_id=context_id, open=config)

    def append(self, context_id: str, text: str) -> Message:
        self._writable(context_id).replay.append(text)
        return Message(context_id=context_id, append=synthesis_pb2.AppendText(text=text))

    def flush(self, context_id: str, flush_id: str) -> Message:
        ctx = self._writable(context_id)
        ctx.pending_flushes.append(flush_id)
        ctx.replay.flushed()
        return Message(context_id=context_id, flush=synthesis_pb2.Flush(flush_id=flush_id))

    def close_context(self, context_id: str) -> Message:
        ctx = self._writable(context_id)
        ctx.closed_by_client = True
        ctx.state = CtxState.CLOSING
        return Message(context_id=context_id, close=synthesis_pb2.CloseContext())

    def cancel(self, context_id: str) -> Message | None:
        """None when the context has already ended (its entry is gone, ``_finish``): nothing
        is left to stop."""
        ctx = self.contexts.get(context_id)
        if ctx is None:
            return None
        ctx.stop = Message(context_id=context_id, cancel=synthesis_pb2.Cancel())
        return ctx.stop

    def truncate(self, context_id: str, played_ms: int) -> Message | None:
        """None when the context has already ended (its ``done`` came before the listener
        heard it all, as it does when audio runs ahead of playback): nothing is left to stop.
        Raises InvalidMessage for a ``played_ms`` outside 0 to 2**32 - 1."""
        if not 0 <= played_ms < 2**32:
            raise errors.InvalidMessage(
                f"played_ms is the audio heard, 0 or more ms, not {played_ms}",
                violations=[errors.Violation("truncate.playedMs", "0 to 4294967295")],
            )
        ctx = self.contexts.get(context_id)
        if ctx is None:
            return None
        ctx.stop = Message(context_id=context_id, truncate=tts_pb2.Truncate(played_ms=played_ms))
        return ctx.stop

    def close_session(self) -> Message:
        self.closing = True
        return Message(close_session=tts_pb2.CloseSession())

    def _context(self, context_id: str) -> ClientContext:
        ctx = self.contexts.get(context_id)
        if ctx is None:
            raise errors.UnknownContext(f"no open context {context_id!r}")
        return ctx

    def _writable(self, context_id: str) -> ClientContext:
        ctx = self._context(context_id)
        if ctx.closed_by_client:
            raise errors.InvalidMessage(f"context {context_id!r} is closed: no more text")
        return ctx

    # -- the server's side -------------------------------------------------------------------

    def receive(self, msg: ServerMessage) -> TtsOutcome:
        out = TtsOutcome()
        kind = msg.WhichOneof("message")
        # None for an ended context too (its entry is gone): its late messages are dropped.
        ctx = self.contexts.get(msg.context_id) if msg.context_id else None
        if kind == "session":
            self._go("session")
            out.resumed = bool(self.token)
            self.token = msg.session.resume_token
            self.session_id = msg.session.session_id
            self.max_pending_text_bytes = msg.session.limits.max_pending_text_bytes
            self.limits = msg.session.limits
            out.session_up = True
        elif kind == "going_away":
            self.token = msg.going_away.resume_token or self.token
            if not self.closing:
                self._hand_over = out.hand_over = True
                self._reconnect_now = msg.going_away.reconnect_now
        elif kind == "error":
            error = errors.from_event(msg.error)
            log.info("error event %s (retryable: %s): %s", error.reason, error.retryable, error)
            self.last_error = error
            if resumable(error):
                delay = error.retry_delay.total_seconds() if error.retry_delay else 0.0
                self._retry_after_s = delay
            else:
                self._failure = error
        elif kind == "summary":
            self._go("summary")
            out.events.append(("", msg.summary))
            out.session_ended = True
        elif kind == "notice" and ctx is None:
            out.events.append(("", msg.notice))
        elif ctx is not None:
            self._context_message(ctx, kind, msg, out)
        return out

    def _context_message(
        self, ctx: ClientContext, kind: str | None, msg: ServerMessage, out: TtsOutcome
    ) -> None:
        cid = ctx.context_id
        if kind == "opened":
            self._handles[msg.opened.handle] = ctx
            ctx.handle = msg.opened.handle
            ctx.stream_base_ms = -1  # a new stream of the context: its frames count anew
            if ctx.state is CtxState.OPENING:
                ctx.state = CtxState.OPEN
            if not ctx.opened_seen:
                ctx.opened_seen = True
                out.events.append((cid, msg.opened))
        elif kind == "audio":
            chunk = msg.audio
            self._audio(
                ctx, chunk.sequence_number, chunk.start_ms, chunk.duration_ms, chunk.audio, out
            )
        elif kind == "words":
            words = self._words(ctx, msg.words)
            if words.words:
                out.events.append((cid, words))
        elif kind == "flush_ack":
            ack = msg.flush_ack
            ack.last_sequence_number = ctx.replay.number(ack.last_sequence_number)
            if msg.flush_ack.flush_id in ctx.pending_flushes:
                ctx.pending_flushes.remove(msg.flush_ack.flush_id)
                ctx.replay.flush_acked()
                out.events.append((cid, msg.flush_ack))
        elif kind in ("done", "cancelled", "truncated"):
            end = getattr(msg, kind)
            end.last_sequence_number = ctx.replay.number(end.last_sequence_number)
            if kind == "truncated" and ctx.reopened and ctx.words:
                # The gateway that answers knows only the words of the stream it reopened
                # (none, when the listener stopped within the audio from before the resume),
                # at offsets in the text it was given: the heard words are the context's own,
                # by the same rule (Truncated.heard: the words whose audio ended by then).
                del end.heard[:]
                end.heard.extend(heard(ctx.words, end.played_ms))
            self._finish(ctx)
            out.events.append((cid, end))
            out.ended.append((cid, None))
        elif kind == "context_error":
            self._finish(ctx)
            out.ended.append((cid, errors.from_event(msg.context_error.error)))
        elif kind == "notice":
            out.events.append((cid, msg.notice))

    def binary_frame(self, frame: AudioFrame) -> TtsOutcome:
        """A binary audio frame (``voxwire.edge.frames.unpack``)."""
        out = TtsOutcome()
        ctx = self._handles.get(frame.handle)
        if ctx is not None:
            duration = ctx.binary_duration_ms(frame.start_ms, frame.audio)
            self._audio(ctx, frame.sequence_number, frame.start_ms, duration, frame.audio, out)
        return out

    def _audio(
        self,
        ctx: ClientContext,
        sequence_number: int,
        start_ms: int,
        duration_ms: int,
        audio: bytes,
        out: TtsOutcome,
    ) -> None:
        if ctx.replay.rewrites:
            taken = ctx.replay.take(sequence_number, start_ms, duration_ms)
            if taken is None:
                return  # received before a resume (SSML speaks its document again)
            if taken.cut_ms:
                audio = cut_audio(audio, taken.cut_ms, ctx.config.output_format)
                duration_ms = max(0, duration_ms - taken.cut_ms)
            sequence_number, start_ms = taken.sequence_number, taken.start_ms
        if sequence_number <= ctx.replay.last_sequence_number:
            return  # already received before a resume
        ctx.replay.audio(sequence_number, start_ms, duration_ms)
        out.events.append(
            (ctx.context_id, SynthesizedAudio(sequence_number, start_ms, duration_ms, audio))
        )

    def _words(
        self, ctx: ClientContext, words: synthesis_pb2.WordTimestamps
    ) -> synthesis_pb2.WordTimestamps:
        passed = synthesis_pb2.WordTimestamps()
        for word in words.words:
            if not word.text_length:
                passed.words.append(word)  # a model without text offsets: nothing to track
                continue
            ctx.replay.word(WordMark(word.text_offset, word.text_length, word.end_ms))
            offset = word.text_offset + ctx.word_base
            if offset < ctx.reported_to:
                continue  # spoken again after a resume; passed on already
            ctx.reported_to = offset + word.text_length
            copy = passed.words.add()
            copy.CopyFrom(word)
            copy.text_offset = offset
            ctx.words.append(copy)
        return passed

    def replay(self) -> tuple[list[Message], TtsOutcome]:
        """After a session message of a resumed connection: reopen every unfinished context
        from its resume point, then ``closeSession`` if the client sent it. A context the
        client cancelled or truncated is not reopened: it ends here, with the event the
        gateway would have sent (returned in the outcome). Its stop may have died with the
        old connection, or its answer did: reopened, the context would speak on after the
        barge-in that stopped it (the zombie context of docs/design/edge.md)."""
        out: list[Message] = []
        ended = TtsOutcome()
        for ctx in list(self.contexts.values()):  # a stopped one ends (leaves) meanwhile
            if ctx.stop is not None:
                self._end_stopped(ctx, ctx.stop, ended)
                continue
            point = ctx.replay.resume_point()
            ctx.replay.resumed(point)
            ctx.reopened = True
            ctx.word_base = point.text_offset
            cid = ctx.context_id
            out += point.messages(Message, cid, ctx.config, ctx.pending_flushes)
            if ctx.closed_by_client:
                out.append(Message(context_id=cid, close=synthesis_pb2.CloseContext()))
        if self.closing:
            out.append(Message(close_session=tts_pb2.CloseSession()))
        return out, ended

    def _end_stopped(self, ctx: ClientContext, stop: Message, out: TtsOutcome) -> None:
        last = ctx.replay.last_sequence_number
        event: synthesis_pb2.ContextCancelled | tts_pb2.Truncated
        if stop.WhichOneof("message") == "truncate":
            played = stop.truncate.played_ms
            event = tts_pb2.Truncated(played_ms=played, last_sequence_number=last)
            event.heard.extend(heard(ctx.words, played))
        else:
            event = synthesis_pb2.ContextCancelled(last_sequence_number=last)
        self._finish(ctx)
        out.events.append((ctx.context_id, event))
        out.ended.append((ctx.context_id, None))

    def _finish(self, ctx: ClientContext) -> None:
        """``ctx`` ended: its entry and its handle go (late messages of an ended context are
        dropped as those of an unknown one), so a session of many turns holds nothing of
        the turns that ended (its memory stays bounded however many context ids it uses).
        Its words go too: the application's context keeps its own reference to that list."""
        ctx.state = CtxState.ENDED
        ctx.words = []
        if self.contexts.get(ctx.context_id) is ctx:
            del self.contexts[ctx.context_id]
        if self._handles.get(ctx.handle) is ctx:
            del self._handles[ctx.handle]

    # -- the connection's end ------------------------------------------------------------------

    def connection_lost(self, close_code: int | None) -> TtsOutcome:
        if self.phase is Phase.ENDED:
            return TtsOutcome(session_ended=True)
        failure = self._failure
        if failure is None and self._retry_after_s is None and not self._hand_over:
            failure = close_error(close_code)
        if failure is not None:
            self._failure = failure
            self.phase = Phase.FAILED
            return TtsOutcome(failure=failure)
        self._go("lost")
        return TtsOutcome(
            retry_after_s=self._retry_after_s or 0.0,
            hand_over=self._hand_over,
            reconnect_now=self._reconnect_now,
        )

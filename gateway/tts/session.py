"""TtsEdgeSession: the sans-I/O core of one ``WS /v1/tts/stream`` session (many contexts).

Rules (docs/design/edge.md, "TTS messages", "Flow control"):
- Each client context has its own upstream ``StreamingSynthesize`` call (keyed by a fresh
  integer, so a reused context id never gets its predecessor's late responses): client
  messages for a context go to its call at once, in order; the adapter keeps the context's
  state.
- Everything the upstream sends for a context waits in the context's pacing queue, in order:
  an audio chunk leaves when its place in the timeline is due (``start <= played + lead``,
  ``played`` being the real time since the context's first chunk left); any other message
  leaves as soon as it reaches the head. So a flush ack or ``done`` never overtakes audio.
- The gateway answers ``cancel`` and ``truncate`` itself, at once: it drops the queue, cancels
  the upstream call and names the last chunk it sent; nothing for the context follows.
- A context whose upstream fails with a retryable error is reopened on another adapter from the
  last word whose audio was sent (``voxwire.replay.TextReplay``), its timeline and sequence
  numbers continuing; the client gets a notice, not an error. Each word timestamp reaches the
  client once: a queued one whose audio is out is sent at the failover (it is not spoken
  again), and one the new upstream repeats (sent before its audio was complete) is dropped, as
  the SDK does after a resume.
- Errors that concern one context end only that context (``context_error``); the rest end the
  session (``error``, then the close).
- A context in a format the model does not make (``fit``: a server that does not resample and a
  phone bridge's 8 kHz mu-law) asks the model for the nearest it makes, and its chunks are
  converted as they come, each keeping its number and place (``gateway.tts.convert``).
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.session_base import Due, EdgeSessionBase
from gateway.tts.convert import ORDERED, ContextConverter
from gateway.wire.frames import pack
from voxwire import errors
from voxwire.audio.codecs import AudioDecodeError, PcmFormat
from voxwire.audio.formats import ENCODINGS, PROTO_ENCODINGS, resolve_format, sample_bytes
from voxwire.edge.v1 import session_pb2, tts_pb2
from voxwire.late_messages import LATE_KINDS, counted, late_errors
from voxwire.replay import TextReplay, WordMark, cut_audio, heard
from voxwire.timings import Clock
from voxwire.v1 import audio_pb2, stream_pb2, synthesis_pb2, timings_pb2

Request = synthesis_pb2.StreamingSynthesizeRequest
Response = synthesis_pb2.StreamingSynthesizeResponse
Message = tts_pb2.TtsServerMessage
# (token, expiry in seconds since the epoch) for the session's options.
TokenIssuer = Callable[[tts_pb2.TtsStart, str, int], tuple[str, float]]
# The format to ask the model for when it does not make a context's (None: the context's own);
# ``voxwire.capabilities.fitted_output`` over what the adapters said of the model.
FormatFit = Callable[[synthesis_pb2.SynthesisContextConfig], audio_pb2.AudioFormat | None]

MAX_CONTEXT_ID_BYTES = 128
# A chunk due within this much counts as due: asyncio may run a timer up to its clock's
# resolution before the deadline it was set for, and the timer would then be re-armed for the
# same instant until the clock moved on.
_DUE_SLACK_S = 0.001
# A context's queue floor is never less than this (docs/design/edge.md, "Flow control").
FLOOR_MIN_BYTES = 64 * 1024
_FAILOVER_REASONS = frozenset({"BACKEND_UNAVAILABLE", "DRAINING", "STREAM_TOO_LONG"})
# An adapter's notices the client gets: a context's replica failover, and text that does not
# look like its declared format (the rest concern the upstream call, which the gateway keeps
# alive or moves; see gateway/stt/session.py).
_PASSED_NOTICES = frozenset(
    {stream_pb2.StreamNotice.KIND_FAILOVER, stream_pb2.StreamNotice.KIND_FORMAT_SUSPECT}
)


class CtxState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # the client closed it; audio still flows
    ENDED = "ended"  # done, cancelled, truncated or failed: nothing follows


@dataclass(frozen=True, slots=True)
class TtsLimits:
    max_frame_bytes: int = 64 * 1024
    max_contexts: int = 8
    # Default lead of audio over real-time playback per context; 0 = as fast as the model.
    lead_ms: int = 1000
    # The largest lead a client may ask for: a context's floor (below) grows with its lead,
    # so an unbounded lead would let one client make the gateway hold all of a long text's
    # audio behind a slow reader.
    max_lead_ms: int = 10_000
    # Queued audio beyond the lead that a context may always hold (its floor; at least
    # 64 KiB) before its upstream reading pauses, whatever the other contexts hold.
    queue_slack_ms: int = 1000
    # Past its floor, a context's upstream is still read while the session's queues together
    # hold less than this: read to its end, a context gives the adapter back its admission
    # place when synthesis ends, not when playback does (docs/design/edge.md, "Flow control").
    # 0: each context reads only its floor.
    read_ahead_bytes: int = 1024 * 1024
    # Words kept per context for `truncated` (the heard words).
    max_words: int = 10_000
    idle_timeout_s: float = 30.0
    idle_warning_s: float = 5.0
    # An open context's upstream gets a keep_alive after this long without a message, so the
    # adapter's idle timeout never ends a context the client still holds.
    upstream_keepalive_s: float = 10.0
    # When a context ends, the runner opens the next context's upstream call ahead and keeps
    # it this long at most (0: never): a turn then skips the call's set-up (BENCHMARKS.md "TTS
    # turns"). Keep it below the adapter's idle timeout minus its idle warning (30 - 5 s by
    # default), after which the adapter warns and ends the call.
    spare_call_max_age_s: float = 10.0
    max_session_s: float = 3600.0
    duration_warning_s: float = 60.0
    max_failovers: int = 3
    drain_grace_s: float = 20.0


@dataclass(frozen=True, slots=True)
class OpenContext:
    key: int
    requests: tuple[Request, ...]  # open first, then what the context needs to go on
    failover: bool
    replaces: int = 0  # a failover's: the key of the call it replaces (0: none)


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    error: errors.VoxwireError | None = None


@dataclass(slots=True)
class Actions:
    to_client: list[Message | bytes] = field(default_factory=list)
    open_upstream: list[OpenContext] = field(default_factory=list)
    to_upstream: list[tuple[int, Request]] = field(default_factory=list)
    # Half-close these contexts' calls once what is queued for them is written: the context
    # is closed, so the adapter ends the call with its summary after ``done``.
    half_close: list[int] = field(default_factory=list)
    cancel_upstream: list[int] = field(default_factory=list)
    close: Close | None = None
    # The audio in ``to_client``, in ms: the runner's client writes count their deadline from
    # when the audio before them has played (voxwire/outbox.py).
    client_audio_ms: int = 0

    def extend(self, other: Actions) -> None:
        self.to_client += other.to_client
        self.client_audio_ms += other.client_audio_ms
        self.open_upstream += other.open_upstream
        self.to_upstream += other.to_upstream
        self.half_close += other.half_close
        self.cancel_upstream += other.cancel_upstream
        self.close = self.close or other.close


@dataclass(slots=True)
class _Item:
    """One thing for the client, waiting its turn: an audio chunk or a message."""

    chunk: synthesis_pb2.AudioChunk | None = None
    message: Message | None = None
    nbytes: int = 0


@dataclass(eq=False)
class EdgeContext:
    key: int
    context_id: str
    handle: int
    config: synthesis_pb2.SynthesisContextConfig
    state: CtxState = CtxState.OPEN
    queue: deque[_Item] = field(default_factory=deque)
    queued_bytes: int = 0
    bytes_per_ms: float = 48.0
    # The listener's playback clock: when the chunk starting at ``first_start_ms`` left (the
    # first chunk, or the first after the listener ran out of audio: ``_after_a_pause``).
    first_sent_at: float | None = None
    first_start_ms: int = 0
    last_sent_seq: int = 0
    sent_end_ms: int = 0
    words: list[synthesis_pb2.WordTimestamp] = field(default_factory=list)
    # Text (code points) up to the end of the last word timestamp the client got.
    words_through: int = 0
    # Word timestamps at the queue's head whose audio is not all sent yet (``release``).
    held_words: list[synthesis_pb2.WordTimestamp] = field(default_factory=list)
    replay: TextReplay = field(default_factory=TextReplay)
    pending_flushes: list[str] = field(default_factory=list)
    # Text offsets of the current upstream call count from here (after a failover).
    text_base: int = 0
    failovers: int = 0
    upstream_at: float = 0.0  # last message written to the upstream call
    open_at: float = 0.0  # when the current upstream call was asked for (edge_connect)
    opened_sent: bool = False
    timings: list[timings_pb2.StageTimings] = field(default_factory=list)
    # The model makes another format: its audio converted (``gateway.tts.convert``).
    converter: ContextConverter | None = None
    # Messages after its close (kind -> count), answered after its end (_answer_late).
    late: dict[str, int] | None = None

    def upstream_config(
        self, config: synthesis_pb2.SynthesisContextConfig
    ) -> synthesis_pb2.SynthesisContextConfig:
        """``config`` (the client's, or a reopening's) as the model is asked it: in the
        format it makes when the audio is converted."""
        if self.converter is None:
            return config
        made = self.converter.made
        asked = synthesis_pb2.SynthesisContextConfig()
        asked.CopyFrom(config)
        asked.output_format.encoding = PROTO_ENCODINGS[made.encoding]
        asked.output_format.sample_rate_hz = made.sample_rate_hz
        return asked


class TtsEdgeSession(EdgeSessionBase[TtsLimits]):
    def __init__(
        self,
        limits: TtsLimits,
        *,
        session_id: str,
        issue_token: TokenIssuer,
        clock: Clock = time.monotonic,
        transport_limits: session_pb2.EdgeLimits | None = None,
        fit: FormatFit | None = None,
    ) -> None:
        # The idle timer runs from the last client message or the last audio sent, whichever is
        # later: a client listening to audio is not idle (docs/contract.md, "Limits").
        super().__init__(
            limits,
            session_id=session_id,
            issue_token=issue_token,
            clock=clock,
            transport_limits=transport_limits,
        )
        self.options = tts_pb2.TtsStart()
        self.started = False
        self.contexts: dict[str, EdgeContext] = {}  # open contexts by client id
        self._by_key: dict[int, EdgeContext] = {}
        self._next_key = 0
        self.closing = False
        self.ended = False
        self.contexts_total = 0
        self.audio_ms = 0
        self._timings: list[timings_pb2.StageTimings] = []
        self._fit = fit

    @property
    def lead_ms(self) -> int:
        if self.options.HasField("lead"):
            return round(self.options.lead.ToMilliseconds())
        return self.limits.lead_ms

    @property
    def binary(self) -> bool:
        return self.options.audio_delivery != tts_pb2.AUDIO_DELIVERY_JSON

    # -- start ---------------------------------------------------------------------------------

    def start(
        self, options: tts_pb2.TtsStart | None = None, *, session_id: str = "", resumes: int = 0
    ) -> Actions:
        """Session options (query string or ``start``; a verified resume keeps its session
        id). Raises ConfigAlreadySet after the session has started, InvalidConfig for a lead
        outside 0 to ``max_lead_ms``."""
        if self.started:
            raise errors.ConfigAlreadySet("start may only be the first message of a session")
        if options is not None:
            self.check_options(options)
        self.started = True
        if options is not None:
            self.options.CopyFrom(options)
            self.options.ClearField("resume")
        if session_id:
            self.session_id = session_id
        self.resumes = resumes
        token, expires = self._issue_token(self.options, self.session_id, self.resumes)
        started = session_pb2.SessionStarted(
            session_id=self.session_id,
            resume_token=token,
            limits=self._limits_proto(),
            resumed=bool(session_id),
            resumes=resumes,
        )
        started.resume_expires_at.FromNanoseconds(round(expires * 1e9))
        return Actions(to_client=[Message(session=started)])

    def check_options(self, options: tts_pb2.TtsStart) -> None:
        """Raises InvalidConfig for a lead outside 0 to ``max_lead_ms``. Also called on the
        query string's options at the upgrade, so that a bad one is refused at once rather
        than when the client's first message starts the session."""
        if options.HasField("lead"):
            lead_ms = options.lead.ToMilliseconds()
            if not 0 <= lead_ms <= self.limits.max_lead_ms:
                raise errors.InvalidConfig.of(
                    "invalid session options",
                    [errors.Violation("lead", f"must be 0 to {self.limits.max_lead_ms} ms")],
                )

    def _limits_proto(self) -> session_pb2.EdgeLimits:
        limits = session_pb2.EdgeLimits(max_frame_bytes=self.limits.max_frame_bytes)
        limits.idle_timeout.FromMilliseconds(round(self.limits.idle_timeout_s * 1000))
        limits.idle_warning.FromMilliseconds(round(self.limits.idle_warning_s * 1000))
        limits.max_session_duration.FromMilliseconds(round(self.limits.max_session_s * 1000))
        limits.duration_warning.FromMilliseconds(round(self.limits.duration_warning_s * 1000))
        limits.tts_lead.FromMilliseconds(self.lead_ms)
        return self._with_transport(limits)

    # -- client side ---------------------------------------------------------------------------

    @property
    def input_ended(self) -> bool:
        """The client sent ``closeSession``: what it sends after is ``discard``ed unread."""
        return self.closing

    def discard(self) -> Actions:
        """A client message after ``closeSession``: discarded unread, as the contract discards
        what follows a close, so a stray message never costs the open contexts their audio;
        it does show that the client is still there."""
        self._last_client_at = self._clock()
        self._warned_idle = False
        return Actions()

    def client_message(self, msg: tts_pb2.TtsClientMessage) -> Actions:
        """One client message. Raises a VoxwireError only for what ends the session."""
        if self.closing:
            return self.discard()
        kind = msg.WhichOneof("message")
        if kind is None:
            raise errors.InvalidMessage("empty message (no field of the oneof set)")
        if kind == "start":
            raise errors.ConfigAlreadySet("start may only be the first message of a session")
        self._last_client_at = self._clock()
        self._warned_idle = False
        actions = Actions() if self.started else self.start()
        if kind == "keep_alive":
            for ctx in self.contexts.values():
                actions.to_upstream.append((ctx.key, Request(keep_alive=stream_pb2.KeepAlive())))
                ctx.upstream_at = self._last_client_at
            return actions
        if kind == "close_session":
            self.closing = True
            for ctx in list(self.contexts.values()):
                if ctx.state is CtxState.OPEN:
                    self._close_context(ctx, actions)
            self._maybe_end(actions)
            return actions
        cid = msg.context_id
        if not cid or len(cid.encode()) > MAX_CONTEXT_ID_BYTES:
            raise errors.InvalidMessage(f"contextId must be 1..{MAX_CONTEXT_ID_BYTES} bytes")
        try:
            self._context_message(kind, msg, actions)
        except errors.ClientError as exc:
            actions.extend(self._context_error(cid, exc))
        return actions

    def _context_message(self, kind: str, msg: tts_pb2.TtsClientMessage, actions: Actions) -> None:
        cid = msg.context_id
        ctx = self.contexts.get(cid)
        if kind == "open":
            self._open(cid, msg.open, actions)
            return
        if ctx is None:
            if kind == "append":
                raise errors.ContextNotOpen(f"text for context {cid!r} before it was opened")
            raise errors.UnknownContext(f"no open context {cid!r} on this session")
        if ctx.state is not CtxState.OPEN and kind in LATE_KINDS:
            # Closing (an ended context is no longer listed): it speaks all its text and ends
            # with done, and the message is answered after that (voxwire/late_messages.py). It
            # failed the context, its audio dropped.
            ctx.late = counted(ctx.late, kind)
            return
        if kind == "append":
            size = len(msg.append.text.encode())
            if size > self.limits.max_frame_bytes:
                raise errors.ChunkTooLarge(f"text of {size} bytes exceeds the frame limit")
            ctx.replay.append(msg.append.text)
            self._forward(ctx, Request(append=msg.append), actions)
        elif kind == "flush":
            ctx.pending_flushes.append(msg.flush.flush_id)
            ctx.replay.flushed()
            self._forward(ctx, Request(flush=msg.flush), actions)
        elif kind == "close":
            self._close_context(ctx, actions)
        elif kind == "cancel":
            self._end(
                ctx,
                Message(
                    context_id=cid,
                    cancelled=synthesis_pb2.ContextCancelled(
                        last_sequence_number=ctx.last_sent_seq
                    ),
                ),
                actions,
            )
        elif kind == "truncate":
            played = msg.truncate.played_ms
            truncated = tts_pb2.Truncated(
                played_ms=played,
                heard=heard(ctx.words, played),
                last_sequence_number=ctx.last_sent_seq,
            )
            self._end(ctx, Message(context_id=cid, truncated=truncated), actions)

    def _open(
        self, cid: str, config: synthesis_pb2.SynthesisContextConfig, actions: Actions
    ) -> None:
        if cid in self.contexts:
            raise errors.ContextAlreadyOpen(f"context {cid!r} is already open")
        if len(self.contexts) >= self.limits.max_contexts:
            raise errors.TooManyContexts(
                f"a session may hold {self.limits.max_contexts} open contexts; close or cancel one"
            )
        if not config.HasField("output_format"):
            raise errors.InvalidConfig(
                "open.output_format is required",
                violations=[errors.Violation("open.output_format", "required")],
            )
        self._next_key += 1
        used = {c.handle for c in self.contexts.values()}
        handle = next(h for h in range(1, 65536) if h not in used)
        ctx = EdgeContext(self._next_key, cid, handle, synthesis_pb2.SynthesisContextConfig())
        ctx.config.CopyFrom(config)
        fmt = config.output_format
        ctx.bytes_per_ms = max(1.0, fmt.sample_rate_hz * sample_bytes(fmt.encoding) / 1000)
        # A reopened context (the SDK's resume) continues its timeline and numbering.
        ctx.last_sent_seq = max(0, config.first_sequence_number - 1)
        ctx.sent_end_ms = config.timeline_offset_ms + config.skip_audio_ms
        ctx.replay.opened(config)
        ctx.upstream_at = ctx.open_at = self._clock()
        if (
            self._fit is not None
            and (asked := _carried(fmt)) is not None
            and (made := self._fit(config)) is not None
        ):
            ctx.converter = ContextConverter(
                PcmFormat(ENCODINGS[made.encoding], made.sample_rate_hz), asked
            )
        self.contexts[cid] = ctx
        self._by_key[ctx.key] = ctx
        self.contexts_total += 1
        actions.open_upstream.append(
            OpenContext(
                ctx.key, (Request(context_id=cid, open=ctx.upstream_config(config)),), False
            )
        )

    def _close_context(self, ctx: EdgeContext, actions: Actions) -> None:
        ctx.state = CtxState.CLOSING
        self._forward(ctx, Request(close=synthesis_pb2.CloseContext()), actions)
        actions.half_close.append(ctx.key)

    def _forward(self, ctx: EdgeContext, request: Request, actions: Actions) -> None:
        request.context_id = ctx.context_id
        ctx.upstream_at = self._clock()
        actions.to_upstream.append((ctx.key, request))

    def _end(self, ctx: EdgeContext, last: Message, actions: Actions) -> None:
        """Cancel or truncate: drop the queue, stop the upstream, send ``last``; nothing after
        but the answers to messages sent after the context's close."""
        self._retire(ctx, actions)
        actions.to_client.append(last)
        self._answer_late(ctx, actions)
        self._maybe_end(actions)

    def _answer_late(self, ctx: EdgeContext, actions: Actions) -> None:
        """After the context's last message: the errors of what came after its close."""
        if ctx.late:
            for error in late_errors(ctx.context_id, ctx.late):
                event = tts_pb2.ContextError(
                    error=errors.to_event(error), last_sequence_number=ctx.last_sent_seq
                )
                actions.to_client.append(Message(context_id=ctx.context_id, context_error=event))
            ctx.late = None

    def _retire(self, ctx: EdgeContext, actions: Actions) -> None:
        if ctx.state is CtxState.CLOSING or ctx.pending_flushes:
            self._wait_ended()  # its done, or its error, is what the client waited for
        ctx.state = CtxState.ENDED
        ctx.queue.clear()
        ctx.queued_bytes = 0
        ctx.held_words.clear()
        self.audio_ms += max(0, ctx.sent_end_ms - ctx.config.timeline_offset_ms)
        self._timings += ctx.timings
        ctx.timings = []
        if self.contexts.get(ctx.context_id) is ctx:
            del self.contexts[ctx.context_id]
        if self._by_key.pop(ctx.key, None) is not None:
            actions.cancel_upstream.append(ctx.key)

    def _context_error(self, cid: str, error: errors.VoxwireError) -> Actions:
        actions = Actions()
        ctx = self.contexts.get(cid)
        last = 0
        if ctx is not None:
            last = ctx.last_sent_seq
            self._retire(ctx, actions)
        event = tts_pb2.ContextError(error=errors.to_event(error), last_sequence_number=last)
        actions.to_client.append(Message(context_id=cid, context_error=event))
        if ctx is not None:
            self._answer_late(ctx, actions)
        self._maybe_end(actions)
        return actions

    def _maybe_end(self, actions: Actions) -> None:
        if self.closing and not self.contexts and not self.ended:
            self.ended = True
            actions.to_client.append(
                Message(
                    summary=session_pb2.SessionSummary(
                        session_id=self.session_id,
                        timings=self.timings(),
                        resumes=self.resumes,
                        audio_ms=self.audio_ms,
                        contexts=self.contexts_total,
                    )
                )
            )
            actions.close = Close(1000)

    # -- upstream side -------------------------------------------------------------------------

    def upstream_response(self, key: int, resp: Response) -> Actions:
        """One response of context ``key``'s upstream call."""
        ctx = self._by_key.get(key)
        if ctx is None:
            return Actions()  # the context ended; late responses are dropped by design
        converter = ctx.converter
        if converter is None or resp.WhichOneof("response") not in ORDERED:
            return self._response(ctx, key, resp)
        try:
            ready = converter.feed(resp)
        except AudioDecodeError:
            return self._context_error(
                ctx.context_id,
                errors.InternalError("the model's audio is not whole frames of its format"),
            )
        actions = Actions()
        for each in ready:
            if self._by_key.get(key) is not ctx:
                break  # ended (done, or an error) by one before
            actions.extend(self._response(ctx, key, each))
        return actions

    def _response(self, ctx: EdgeContext, key: int, resp: Response) -> Actions:
        actions = Actions()
        kind = resp.WhichOneof("response")
        if kind == "opened":
            self.edge["edge_connect_us"] += round((self._clock() - ctx.open_at) * 1e6)
            if not ctx.opened_sent:
                ctx.opened_sent = True
                opened = tts_pb2.ContextOpened(context=resp.opened, handle=ctx.handle)
                actions.to_client.append(Message(context_id=ctx.context_id, opened=opened))
            else:
                actions.to_client.append(
                    Message(
                        context_id=ctx.context_id,
                        notice=stream_pb2.StreamNotice(
                            kind=stream_pb2.StreamNotice.KIND_FAILOVER,
                            message="context resumed on another inference server from "
                            f"{ctx.sent_end_ms} ms",
                        ),
                    )
                )
        elif kind == "audio":
            chunk = self._taken(ctx, resp.audio)
            if chunk is None:
                return actions  # received before a failover (SSML speaks it again)
            if not ctx.queue and ctx.first_sent_at is not None:
                self._after_a_pause(ctx, chunk)
            self._enqueue(ctx, _Item(chunk=chunk, nbytes=len(chunk.audio)))
        elif kind == "words":
            kept = []
            for word in resp.words.words:
                if word.text_length:
                    # TextReplay counts the stream's own offsets from the resume point itself.
                    ctx.replay.word(WordMark(word.text_offset, word.text_length, word.end_ms))
                    word.text_offset += ctx.text_base
                    if word.text_offset < ctx.words_through:
                        continue  # sent before the failover, its audio then cut: not twice
                kept.append(word)
                if len(ctx.words) < self.limits.max_words:
                    ctx.words.append(word)
            if kept:
                message = Message(
                    context_id=ctx.context_id, words=synthesis_pb2.WordTimestamps(words=kept)
                )
                self._enqueue(ctx, _Item(message=message))
        elif kind == "flush_ack":
            ack = resp.flush_ack
            ack.last_sequence_number = ctx.replay.number(ack.last_sequence_number)
            # Still pending until it leaves the queue (``release``): a failover drops the
            # queue, and the new call must be asked again (test_tts_resume_props found an ack
            # queued behind paced audio lost that way).
            self._enqueue(
                ctx, _Item(message=Message(context_id=ctx.context_id, flush_ack=resp.flush_ack))
            )
        elif kind == "done":
            resp.done.last_sequence_number = ctx.replay.number(resp.done.last_sequence_number)
            ctx.timings.append(resp.done.timings)
            self._enqueue(ctx, _Item(message=Message(context_id=ctx.context_id, done=resp.done)))
        elif kind == "error":
            error = errors.from_proto(resp.error.error)
            actions.extend(self._failed(ctx, error, None))
            return actions
        elif kind == "notice" and resp.notice.kind in _PASSED_NOTICES:
            actions.to_client.append(Message(context_id=ctx.context_id, notice=resp.notice))
        actions.extend(self.release(key))
        return actions

    def _taken(
        self, ctx: EdgeContext, chunk: synthesis_pb2.AudioChunk
    ) -> synthesis_pb2.AudioChunk | None:
        """``chunk`` as the client gets it: after a failover of an SSML context, whose
        document is spoken again from its start, without the audio the client has already and
        numbered on from it (``TextReplay.take``)."""
        if not ctx.replay.rewrites:
            return chunk
        taken = ctx.replay.take(chunk.sequence_number, chunk.start_ms, chunk.duration_ms)
        if taken is None:
            return None
        chunk.sequence_number = taken.sequence_number
        if taken.cut_ms:
            chunk.audio = cut_audio(chunk.audio, taken.cut_ms, ctx.config.output_format)
            chunk.start_ms = taken.start_ms
            chunk.duration_ms = max(0, chunk.duration_ms - taken.cut_ms)
        return chunk

    def _enqueue(self, ctx: EdgeContext, item: _Item) -> None:
        ctx.queue.append(item)
        ctx.queued_bytes += item.nbytes

    def upstream_failed(
        self,
        key: int,
        error: errors.VoxwireError,
        timings: timings_pb2.StageTimings | None = None,
        *,
        failover: bool = True,
    ) -> Actions:
        """Context ``key``'s upstream call failed with ``error``; with ``failover`` False (no
        adapter is left to try) the context ends with it."""
        ctx = self._by_key.get(key)
        if ctx is None:
            return Actions()
        return self._failed(ctx, error, timings, failover=failover)

    def _failed(
        self,
        ctx: EdgeContext,
        error: errors.VoxwireError,
        timings: timings_pb2.StageTimings | None,
        *,
        failover: bool = True,
    ) -> Actions:
        if timings is not None:
            self._timings.append(timings)
        actions = Actions()
        if (
            not failover
            or error.reason not in _FAILOVER_REASONS
            or ctx.failovers >= self.limits.max_failovers
        ):
            actions.extend(self._context_error(ctx.context_id, error))
            return actions
        # Reopen from the last word whose audio the client got; what is queued is dropped and
        # comes again from the new call.
        ctx.failovers += 1
        self.resumes += 1
        actions.cancel_upstream.append(ctx.key)
        del self._by_key[ctx.key]
        replaces = ctx.key
        self._next_key += 1
        ctx.key = self._next_key
        self._by_key[ctx.key] = ctx
        self._settle_words(ctx, actions)
        ctx.queue.clear()
        ctx.queued_bytes = 0
        point = ctx.replay.resume_point()
        ctx.replay.resumed(point)
        ctx.text_base = point.text_offset
        if ctx.converter is not None:
            ctx.converter = ctx.converter.fresh()  # what the old call's held is spoken again
        config = ctx.upstream_config(ctx.config)
        requests = point.messages(Request, ctx.context_id, config, ctx.pending_flushes)
        ctx.upstream_at = ctx.open_at = self._clock()
        actions.open_upstream.append(OpenContext(ctx.key, tuple(requests), True, replaces))
        if ctx.state is CtxState.CLOSING:
            self._forward(ctx, Request(close=synthesis_pb2.CloseContext()), actions)
            actions.half_close.append(ctx.key)
        return actions

    def _settle_words(self, ctx: EdgeContext, actions: Actions) -> None:
        """Before a failover drops the queue: queued word timestamps whose audio is out go to
        the client now (those words are not spoken again); the rest are forgotten (they are)."""
        queued = [
            word
            for item in ctx.queue
            if item.message is not None and item.message.WhichOneof("message") == "words"
            for word in item.message.words.words
        ]
        spoken = [w for w in [*ctx.held_words, *queued] if w.end_ms <= ctx.sent_end_ms]
        ctx.held_words.clear()
        if spoken:
            message = Message(
                context_id=ctx.context_id, words=synthesis_pb2.WordTimestamps(words=spoken)
            )
            actions.to_client.append(message)
            self._words_out(ctx, message)
        ctx.words = [w for w in ctx.words if not w.text_length or w.text_offset < ctx.words_through]

    def _words_out(self, ctx: EdgeContext, message: Message) -> None:
        for word in message.words.words:
            if word.text_length:
                ctx.words_through = max(ctx.words_through, word.text_offset + word.text_length)

    # -- pacing --------------------------------------------------------------------------------

    def release(self, key: int) -> Actions:
        """Send what is due of context ``key``'s queue now."""
        actions = Actions()
        ctx = self._by_key.get(key)
        if ctx is None:
            return actions
        now = self._clock()
        while ctx.queue:
            item = ctx.queue[0]
            if item.chunk is not None:
                if not self._due(ctx, item.chunk, now):
                    break
                chunk_end = item.chunk.start_ms + item.chunk.duration_ms
                self._release_words(ctx, actions, chunk_end)  # just before their last audio
                actions.to_client.append(self._audio_out(ctx, item.chunk, now))
                actions.client_audio_ms += item.chunk.duration_ms
            else:
                assert item.message is not None
                kind = item.message.WhichOneof("message")
                if kind == "words":
                    ctx.held_words.extend(item.message.words.words)
                    self._release_words(ctx, actions, ctx.sent_end_ms)
                else:
                    if kind in ("flush_ack", "done"):
                        self._release_words(ctx, actions, None)  # the text before is spoken
                    if kind == "flush_ack" and item.message.flush_ack.flush_id in (
                        pending := ctx.pending_flushes
                    ):
                        pending.remove(item.message.flush_ack.flush_id)
                        ctx.replay.flush_acked()
                        self._wait_ended()
                    actions.to_client.append(item.message)
                if kind == "done":
                    ctx.queue.popleft()
                    self._retire(ctx, actions)
                    self._answer_late(ctx, actions)
                    self._maybe_end(actions)
                    return actions
            ctx.queue.popleft()
            ctx.queued_bytes -= item.nbytes
        return actions

    def _release_words(self, ctx: EdgeContext, actions: Actions, through_ms: int | None) -> None:
        """Send the held word timestamps whose audio ends by ``through_ms`` (None: all of
        them), in order: a word's timestamp goes out just before the chunk that completes its
        audio, never earlier. So the gateway never has to fail over in the middle of a word
        whose timestamp the client has: a failover re-speaks a word cut in the middle from its
        start, later on the timeline than a timestamp sent earlier said, and the SDK, which
        resumes from the last word whose audio it has, read that stale timestamp as the word
        heard whole and skipped the rest of it (test_tts_resume_props found it). Not after
        that chunk either: a connection lost between the two would leave the SDK with the
        whole word's audio and no timestamp, and it would speak the word again."""
        held = ctx.held_words
        if not held:
            return
        n = len(held)
        if through_ms is not None:
            n = 0
            while n < len(held) and held[n].end_ms <= through_ms:
                n += 1
            if not n:
                return
        message = Message(
            context_id=ctx.context_id, words=synthesis_pb2.WordTimestamps(words=held[:n])
        )
        del held[:n]
        actions.to_client.append(message)
        self._words_out(ctx, message)

    def _due(self, ctx: EdgeContext, chunk: synthesis_pb2.AudioChunk, now: float) -> bool:
        if self.lead_ms <= 0 or ctx.first_sent_at is None:
            return True
        return now + _DUE_SLACK_S >= self._due_at(ctx, chunk)

    def _due_at(self, ctx: EdgeContext, chunk: synthesis_pb2.AudioChunk) -> float:
        """When ``chunk`` may leave: its place in the context's timeline less the lead, on the
        listener's playback clock (started when the context's first chunk left, restarted by
        ``_after_a_pause``). ``_due`` and ``next_deadline`` both ask here, so the timer never
        wakes to find the chunk not due."""
        return self._due_at_played(ctx, chunk.start_ms - self.lead_ms)

    def _due_at_played(self, ctx: EdgeContext, timeline_ms: int) -> float:
        """When the listener's playback reaches ``timeline_ms`` of the context."""
        assert ctx.first_sent_at is not None
        return ctx.first_sent_at + (timeline_ms - ctx.first_start_ms) / 1000

    def _after_a_pause(self, ctx: EdgeContext, chunk: synthesis_pb2.AudioChunk) -> None:
        """Audio arriving to an empty queue after the listener has played all it was sent (the
        next text, or the model, came slower than speech): a phone line or a jitter buffer
        plays it when it comes, from where it stopped, so the playback clock restarts with it.
        Kept on the first chunk's clock, all the audio that came during the pause would be
        "due" and leave in one burst, that far ahead of the listener."""
        now = self._clock()
        if now > self._due_at_played(ctx, ctx.sent_end_ms):
            ctx.first_sent_at = now
            ctx.first_start_ms = chunk.start_ms

    def _audio_out(
        self, ctx: EdgeContext, chunk: synthesis_pb2.AudioChunk, now: float
    ) -> Message | bytes:
        self._last_client_at = max(self._last_client_at, now)
        self._warned_idle = False
        if ctx.first_sent_at is None:
            ctx.first_sent_at = now
            ctx.first_start_ms = chunk.start_ms
        ctx.last_sent_seq = chunk.sequence_number
        ctx.sent_end_ms = chunk.start_ms + chunk.duration_ms
        ctx.replay.audio(chunk.sequence_number, chunk.start_ms, chunk.duration_ms)
        if self.binary:
            return pack(ctx.handle, chunk.sequence_number, chunk.start_ms, chunk.audio)
        return Message(context_id=ctx.context_id, audio=chunk)

    def has_room(self, key: int) -> bool:
        """Whether context ``key``'s upstream may be read: its queue is under its floor, or
        the session's queues under ``read_ahead_bytes`` (docs/design/edge.md, "Flow
        control")."""
        ctx = self._by_key.get(key)
        if ctx is None:
            return True
        floor = (self.lead_ms + self.limits.queue_slack_ms) * ctx.bytes_per_ms
        if ctx.queued_bytes < max(floor, FLOOR_MIN_BYTES):
            return True
        # Read-ahead. A session holds at most max_contexts queues: summing them here is
        # cheaper than keeping a running total right on every path that changes one.
        queued = sum(c.queued_bytes for c in self._by_key.values())
        return queued < self.limits.read_ahead_bytes

    # -- time ----------------------------------------------------------------------------------

    def _waiting(self) -> bool:
        """The client waits for the server: a context it flushed whose flushAck is still to
        come, or one it closed whose done is (the audio before them may be queued at the
        adapter or under way). Text only appended is not waited for: the model may hold it
        for more (and the upstream call is kept alive meanwhile)."""
        return any(
            ctx.pending_flushes or ctx.state is CtxState.CLOSING for ctx in self.contexts.values()
        )

    def _wait_ended(self) -> None:
        """The server answered what the client waited for: its idle time starts now."""
        self._last_client_at = max(self._last_client_at, self._clock())
        self._warned_idle = False

    def _idle_at(self) -> float:
        """When the session is idle for ``idle_timeout_s``: never while the client waits for
        the server (docs/contract.md, idle_timeout: "TTS synthesis queued or under way"). The
        idle time counts from the last client message, audio chunk, flushAck or done sent."""
        if self._waiting():
            return math.inf
        return self._last_client_at + self.limits.idle_timeout_s

    def next_deadline(self) -> float:
        times = [self._timer_deadline()]
        for ctx in self.contexts.values():
            times.append(self._keepalive_at(ctx))
            if ctx.queue and ctx.queue[0].chunk is not None and ctx.first_sent_at is not None:
                times.append(self._due_at(ctx, ctx.queue[0].chunk))
        return min(times)

    def _keepalive_at(self, ctx: EdgeContext) -> float:
        """When an open context's upstream call needs a keep_alive. A closing context's never
        does: its call is half-closed and takes no more requests, and the adapter does not
        time out a context whose audio is still to come."""
        if ctx.state is not CtxState.OPEN:
            return math.inf
        return ctx.upstream_at + self.limits.upstream_keepalive_s

    def on_time(self) -> Actions:
        now = self._clock()
        actions = Actions()
        if self.ended:
            return actions
        for ctx in list(self.contexts.values()):
            actions.extend(self.release(ctx.key))
            if now >= self._keepalive_at(ctx) and ctx.key in self._by_key:
                self._forward(ctx, Request(keep_alive=stream_pb2.KeepAlive()), actions)
        check = self._timers(now)
        if check.due is Due.DRAINED:
            actions.extend(self.fail(self._drained()))
            return actions
        if check.due is Due.IDLE:
            idle_s = self.limits.idle_timeout_s
            actions.extend(
                self.fail(errors.IdleTimeout(f"no message for {idle_s:g} s; send keepAlive"))
            )
            return actions
        actions.to_client += [Message(notice=n) for n in check.notices]
        if check.due is Due.MAX_DURATION:
            away = self._going_away("STREAM_TOO_LONG", self.options)
            actions.to_client.append(Message(going_away=away))
            actions.extend(
                self.fail(
                    errors.StreamTooLong(
                        "maximum session duration: continue with the resume token"
                    ),
                    event=False,
                )
            )
        return actions

    def drain(self, grace_s: float | None = None, *, reconnect_now: bool = False) -> Actions:
        if self.ended or self._drain_ends is not None:
            return Actions()
        away = self._begin_drain(grace_s, reconnect_now, self.options)
        return Actions(to_client=[Message(going_away=away)])

    def fail(self, error: errors.VoxwireError, *, event: bool = True) -> Actions:
        """End the session (every context's upstream cancelled), with an error event."""
        actions = Actions()
        if self.ended:
            return actions
        self.ended = True
        for ctx in list(self.contexts.values()):
            self._retire(ctx, actions)
        if event:
            actions.to_client.append(Message(error=errors.to_event(error)))
        actions.close = Close(error.ws_close_code, error)
        return actions

    # -- timings -------------------------------------------------------------------------------

    def timings(self) -> timings_pb2.StageTimings:
        """The session's whole breakdown: every context call's stages plus the edge's."""
        return self._whole_timings(
            [*self._timings, *(t for c in self._by_key.values() for t in c.timings)]
        )


def _carried(fmt: audio_pb2.AudioFormat) -> PcmFormat | None:
    """``fmt`` where the contract carries it (mono): only such a format is converted to;
    another goes to the model as it is, whose refusal names it."""
    try:
        return resolve_format(fmt, "open.output_format", max_channels=1)
    except errors.VoxwireError:
        return None

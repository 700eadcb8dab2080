"""SynthesisSession: multi-context streaming text-to-speech over ``WS /v1/tts/stream`` that
survives gateway restarts, drains and dropped networks.

    async with await SynthesisSession.connect(["ws://gw-a:8080", "ws://gw-b:8080"],
                                              api_key=key) as tts:
        ctx = await tts.open("greeting", config)
        await ctx.append("Hello there. ")
        await ctx.close()
        async for event in ctx:            # ContextOpened, SynthesizedAudio, WordTimestamps,
            ...                            # FlushAck, ..., ContextDone last
        await tts.close()

After a lost connection or a drain the session resumes on the next gateway: every unfinished
context is reopened there with its timeline and sequence numbers continuing, and the text after
the last word whose audio was received completely is sent again (docs/design/edge.md, "Resume
(TTS)"). Context calls wait while the session resumes (up to ``send_timeout_s``).

Failures raise ``voxwire.errors`` classes: a context's error ends its iterator with the
error's class; a session error raises from every call and iterator.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Literal

import aiohttp

from voxwire import errors
from voxwire.client.channel import EventChannel
from voxwire.client.connection import Credentials, Endpoints, TokenProvider
from voxwire.client.link import ResumingLink, SessionClosed, Verdict
from voxwire.client.options import Resumed, SessionOptions
from voxwire.client.tts_state import (
    ContextEvent,
    Message,
    ServerMessage,
    SessionEvent,
    SynthesisClientState,
    SynthesizedAudio,
    TtsOutcome,
)
from voxwire.edge.frames import unpack
from voxwire.edge.messages import decode, encode
from voxwire.edge.v1 import session_pb2, tts_pb2
from voxwire.replay import heard as words_heard
from voxwire.text_pieces import Append, Flush, Op, TextFeed, piece_bytes
from voxwire.v1 import stream_pb2, synthesis_pb2

PATH = "/v1/tts/stream"
_PIECE = "voxwire-piece-"  # the flush ids of a long text's pieces (SynthesisContext.append)
MAX_SERVER_MESSAGE_BYTES = 4 * 1024 * 1024

SynthesisSessionEvent = SessionEvent | Resumed


class SynthesisContext:
    """One context (utterance) of a session; iterate it for its events."""

    def __init__(
        self, session: SynthesisSession, context_id: str, max_events: int, ssml: bool = False
    ) -> None:
        self.context_id = context_id
        self._session = session
        # An SSML document is one unit of markup: it goes whole, never cut into pieces (half a
        # document is malformed XML; a document over what the server holds is its
        # TEXT_TOO_LARGE, as POST /v1/tts says).
        self._ssml = ssml
        self.events: EventChannel[ContextEvent] = EventChannel(max_events)
        # Every word timing the context received, in order: what ``heard`` reads.
        self.words: list[synthesis_pb2.WordTimestamp] = []
        # Long text goes out in pieces as the server speaks them (voxwire.text_pieces): what
        # waits for room, in order with the flushes and the close given after it.
        self._feed = TextFeed(session.piece_bytes, prefix=_PIECE)
        self._feed_lock = asyncio.Lock()  # one sender at a time: the feed's order is the wire's
        self._closing = False
        self._feeders: set[asyncio.Task[None]] = set()
        self._progress = asyncio.Event()  # set when the feed moved (a piece's ack, an end)

    def __aiter__(self) -> AsyncIterator[ContextEvent]:
        """Events until ``done``, ``cancelled`` or ``truncated`` (the last one); raises the
        context's error (its ``voxwire.errors`` class) or the session's."""
        return self.events

    async def append(self, text: str) -> None:
        """Add text to speak. Text of any length: what is longer than a piece (at most 4 KiB,
        ``SynthesisSession.piece_bytes``) goes out in pieces at sentence ends, each
        when the server has spoken all but one piece before it (a flush of the SDK's own,
        whose ack is not passed on), so the context never holds more unspoken text than the
        server allows; text given meanwhile (and flushes, the close) waits its turn. Read the
        context's events meanwhile: the pieces go out as its audio is read. An SSML context's
        text goes whole, one document, one unit (the server's TEXT_TOO_LARGE names its limit:
        split a longer document into several). Raises InvalidMessage after ``close``,
        UnknownContext after the context ended, the session's failure, SessionClosed,
        TimeoutError."""
        if self._closing:
            raise errors.InvalidMessage(f"context {self.context_id!r} is closed: no more text")
        whole = self._ssml or len(text.encode()) <= self._session.piece_bytes
        if not self._feed.holding and whole:
            await self._session._op(lambda s: s.append(self.context_id, text))
            return
        self._feed.append(text)
        await self._send_more()

    async def flush(self, flush_id: str = "") -> str:
        """Synthesize what was appended; a FlushAck event follows its audio. Returns the id."""
        flush_id = flush_id or f"fl-{uuid.uuid4().hex[:12]}"
        if self._feed.idle:
            await self._session._op(lambda s: s.flush(self.context_id, flush_id))
        else:
            self._feed.flush(flush_id)
            await self._send_more()
        return flush_id

    async def close(self) -> None:
        """No more text: the rest is spoken, then ``done``."""
        if self._feed.idle:
            await self._session._op(lambda s: s.close_context(self.context_id))
        else:
            self._closing = True
            self._feed.close()
            await self._send_more()

    async def cancel(self) -> None:
        """Stop now; a ContextCancelled event ends the context. Once the context has ended
        there is nothing left to stop: returns at once."""
        self._stop_feed()
        await self._session._op(lambda s: s.cancel(self.context_id))

    async def truncate(self, played_ms: int) -> None:
        """The listener heard ``played_ms`` of the context: the rest is cancelled and a
        Truncated event (with the words heard) ends the context.

        A barge-in often comes after ``done``: audio runs ahead of playback (the session's
        lead), so the context has ended while its last second still plays. Nothing is left to
        stop then, and this returns at once; ``heard(played_ms)`` gives the words heard, as
        Truncated would have. Raises InvalidMessage for a negative ``played_ms``."""
        if played_ms >= 0:
            self._stop_feed()
        await self._session._op(lambda s: s.truncate(self.context_id, played_ms))

    def heard(self, played_ms: int) -> list[synthesis_pb2.WordTimestamp]:
        """The words whose audio ended at or before ``played_ms`` of the context's timeline,
        in order (the rule of Truncated.heard), from the word timings received so far."""
        return words_heard(self.words, played_ms)

    async def audio(self) -> bytes:
        """All the context's audio, until it ends (reads the events: use it or iterate)."""
        parts = [e.audio async for e in self.events if isinstance(e, SynthesizedAudio)]
        return b"".join(parts)

    @property
    def feeding(self) -> bool:
        """Text (or a close) given to the context still waits to go out in pieces."""
        return self._feed.holding

    async def _send_more(self) -> None:
        """Sends what the feed lets out now, in its order."""
        async with self._feed_lock:
            for op in self._feed.more():
                await self._session._op(functools.partial(_send, self.context_id, op))

    def _acked(self, flush_id: str) -> bool:
        """A flush's ack came (from the session's reader): the next piece goes out, from a
        task of its own (the reader must not wait on a send). True: a piece's own flush, not
        to be passed on."""
        ours = self._feed.acked(flush_id)
        if not self._feed.idle:
            task = asyncio.get_running_loop().create_task(self._feed_on())
            self._feeders.add(task)
            task.add_done_callback(self._feeders.discard)
        self._progress.set()
        return ours

    async def _feed_on(self) -> None:
        try:
            await self._send_more()
        except Exception as exc:  # the rest of the text cannot go: the context ends with why
            self._stop_feed()
            self.events.close(exc)

    def _stop_feed(self) -> None:
        """The context stops or ended: nothing more of its text goes out."""
        self._feed.clear()
        for task in self._feeders:
            task.cancel()
        self._progress.set()


def _send(context_id: str, op: Op, state: SynthesisClientState) -> Message:
    if isinstance(op, Append):
        return state.append(context_id, op.text)
    if isinstance(op, Flush):
        return state.flush(context_id, op.flush_id)
    return state.close_context(context_id)


class SynthesisSession(ResumingLink):
    """Use ``await SynthesisSession.connect(...)``."""

    def __init__(
        self,
        urls: Sequence[str] | str,
        credentials: Credentials,
        start: tts_pb2.TtsStart,
        options: SessionOptions | None = None,
    ) -> None:
        options = options or SessionOptions()
        super().__init__(Endpoints(urls, PATH), credentials, options)
        self.state = SynthesisClientState(start)
        self._events: EventChannel[SynthesisSessionEvent] = EventChannel(options.max_events)
        self._contexts: dict[str, SynthesisContext] = {}
        self._summary: session_pb2.SessionSummary | None = None
        self._piece_bytes = 0  # set by the caller: 0 for what the gateway says

    @property
    def piece_bytes(self) -> int:
        """The size of the pieces long text goes out in (``SynthesisContext.append``): two
        unacknowledged fit what a context holds on the gateway's servers (its session's
        ``limits.max_pending_text_bytes``), at most 4 KiB; 4 KiB when it did not say. Set it
        to choose another (a context takes the size when it opens)."""
        if self._piece_bytes:
            return self._piece_bytes
        return piece_bytes(self.state.max_pending_text_bytes)

    @piece_bytes.setter
    def piece_bytes(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"piece_bytes must be positive, not {size}")
        self._piece_bytes = size

    @classmethod
    async def connect(
        cls,
        urls: Sequence[str] | str,
        *,
        api_key: str | None = None,
        token_provider: TokenProvider | None = None,
        origin: str | None = None,
        lead_ms: int | None = None,
        audio_delivery: Literal["binary", "json"] = "binary",
        options: SessionOptions | None = None,
    ) -> SynthesisSession:
        """Open a session. ``lead_ms``: how far audio may run ahead of real-time playback per
        context (None: the gateway's default; 0: as fast as the model).

        Raises ValueError (credentials, URLs), the gateway's error (Unauthenticated, ...), or
        BackendUnavailable when no gateway answered within the reconnect budget (RateLimited
        when the key's limits refused the last attempt, Overloaded when the service was at
        capacity)."""
        start = tts_pb2.TtsStart(
            audio_delivery=tts_pb2.AUDIO_DELIVERY_JSON
            if audio_delivery == "json"
            else tts_pb2.AUDIO_DELIVERY_BINARY
        )
        if lead_ms is not None:
            start.lead.FromMilliseconds(lead_ms)
        credentials = Credentials(api_key=api_key, token_provider=token_provider, origin=origin)
        session = cls(urls, credentials, start, options)
        await session._start()
        return session

    async def __aenter__(self) -> SynthesisSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.finished:
            await self.abort()

    @property
    def session_id(self) -> str:
        return self.state.session_id

    def events(self) -> AsyncIterator[SynthesisSessionEvent]:
        """Session-wide events: notices, ``Resumed``, the summary last."""
        return self._events

    async def open(
        self, context_id: str, config: synthesis_pb2.SynthesisContextConfig
    ) -> SynthesisContext:
        """Open a context. Raises InvalidMessage (an id not 1 to 128 bytes), ContextAlreadyOpen,
        the session's failure, SessionClosed, TimeoutError. The gateway's answer
        (ContextOpened, or the context's error) comes as the context's first event."""
        ssml = config.text_format == synthesis_pb2.TEXT_FORMAT_SSML
        context = SynthesisContext(self, context_id, self.options.max_events, ssml)
        await self._op(lambda s: s.open(context_id, config), context)
        return context

    async def close(self) -> session_pb2.SessionSummary:
        """Close every context (their audio still comes: read it), then the summary. Raises
        TimeoutError after ``close_timeout_s``, or the session's failure."""
        if self._summary is not None:
            return self._summary
        # Text still going out in pieces is spoken first: closing the session closes its
        # contexts, and their text would be cut. Each piece's ack is progress; none for
        # ``close_timeout_s`` is a TimeoutError.
        while feeding := [c for c in self._contexts.values() if c.feeding]:
            for context in feeding:
                context._progress.clear()
            waits = [asyncio.ensure_future(c._progress.wait()) for c in feeding]
            try:
                done, _ = await asyncio.wait(waits, timeout=self.options.close_timeout_s)
            finally:
                for wait in waits:
                    wait.cancel()
            if not done:
                raise TimeoutError(
                    f"text of {len(feeding)} context(s) waited {self.options.close_timeout_s:g} s "
                    "for the server to speak an earlier piece: are their events read?"
                )
        if not self.state.closing:
            await self._op(lambda s: s.close_session())
        await self.wait_finished(self.options.close_timeout_s)
        if self.failure is not None:
            raise self.failure
        if self._summary is None:
            raise SessionClosed("the session ended without a summary")
        return self._summary

    async def _op(
        self,
        make: Callable[[SynthesisClientState], Message | None],
        context: SynthesisContext | None = None,
    ) -> None:
        self.raise_if_over()
        async with asyncio.timeout(self.options.send_timeout_s):
            while True:
                await self.wait_until(lambda: True)
                async with self.write_lock:
                    if self.live is None:
                        continue
                    msg = make(self.state)
                    if msg is None:
                        return  # nothing to send (a cancel of a context that has ended)
                    if context is not None:
                        self._contexts[context.context_id] = context
                        # The state records the words as it passes them on: one list.
                        context.words = self.state.contexts[context.context_id].words
                    await self.write(encode(msg))
                    return

    # -- the link's hooks ----------------------------------------------------------------------

    def _first_message(self) -> str:
        return encode(self.state.connected())

    def _advertised_limits(self) -> session_pb2.EdgeLimits | None:
        return self.state.limits

    def _keepalive_message(self) -> str:
        return encode(Message(keep_alive=stream_pb2.KeepAlive()))

    async def _on_message(
        self, ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage
    ) -> Verdict | None:
        if msg.type is aiohttp.WSMsgType.BINARY:
            try:
                frame = unpack(msg.data)
            except ValueError as exc:
                raise errors.InvalidMessage(f"bad audio frame from the gateway: {exc}") from exc
            outcome = self.state.binary_frame(frame)
        else:
            server = decode(
                msg.data,
                ServerMessage,
                max_bytes=MAX_SERVER_MESSAGE_BYTES,
                ignore_unknown_fields=True,
            )
            outcome = self.state.receive(server)
            if server.WhichOneof("message") == "summary":
                self._summary = server.summary
        if outcome.session_up:
            resumed_now = outcome.resumed
            stopped = TtsOutcome()

            def replay() -> list[str | bytes]:
                nonlocal stopped
                if not resumed_now:
                    return []
                messages, stopped = self.state.replay()
                return [encode(m) for m in messages]

            resumed = await self.replay_and_go_live(ws, replay)
            if resumed is not None and outcome.resumed:
                await self._events.put(replace(resumed))
            await self._deliver(stopped)  # contexts stopped before the resume end now
        await self._deliver(outcome)
        if outcome.session_ended:
            return Verdict(ended=True)
        if outcome.hand_over:
            return Verdict(hand_over=True)
        return None

    async def _deliver(self, outcome: TtsOutcome) -> None:
        for cid, event in outcome.events:
            if not cid:
                await self._events.put(event)  # type: ignore[arg-type]
            elif (context := self._contexts.get(cid)) is not None:
                if isinstance(event, synthesis_pb2.FlushAck) and context._acked(event.flush_id):
                    continue  # a piece's flush (``SynthesisContext.append``): the SDK's own
                await context.events.put(event)  # type: ignore[arg-type]
        for cid, error in outcome.ended:
            context = self._contexts.pop(cid, None)
            if context is not None:
                context._stop_feed()
                context.events.close(error)

    def _connection_lost(self, close_code: int | None) -> Verdict:
        outcome = self.state.connection_lost(close_code)
        return Verdict(
            ended=outcome.session_ended,
            failure=outcome.failure,
            retry_after_s=outcome.retry_after_s,
            hand_over=outcome.hand_over,
            reconnect_now=outcome.reconnect_now,
            refusal=self.state.last_error,
        )

    def _finish(self, error: BaseException | None) -> None:
        failure = None if isinstance(error, SessionClosed) else error
        for context in self._contexts.values():
            context._stop_feed()
            context.events.close(failure or SessionClosed("the session ended"))
        self._contexts.clear()
        self._events.close(failure)

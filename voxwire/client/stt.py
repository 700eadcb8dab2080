"""TranscriptionSession: streaming speech-to-text over ``WS /v1/stt/stream`` that survives
gateway restarts, drains and dropped networks.

    async with await TranscriptionSession.connect(
        ["ws://gw-a:8080", "ws://gw-b:8080"], config, api_key=key
    ) as stt:
        reader = asyncio.create_task(print_events(stt.events()))
        async for chunk in microphone():
            await stt.send(chunk)          # whole frames; waits while resuming
        summary = await stt.close()

Memory is bounded: ``send`` keeps each piece of audio until an ``ack`` covers it (the gateway
forces one before its replay window fills, and the SDK forces its own when
``SessionOptions.max_replay_ms`` is the smaller window); when the window is full, or while the
session is resuming on another gateway, ``send`` waits (up to
``SessionOptions.send_timeout_s``, then TimeoutError) instead of buffering more. Nothing is
ever dropped: audio handed to ``send`` is either acknowledged or replayed.

Failures raise ``voxwire.errors`` classes: a non-retryable error event raises its class (from
``send``, ``close`` and the event iterator); a resume the gateway refuses raises
ResumeRejected (the SDK never starts a fresh session behind the caller's back, which could
repeat words); a reconnect budget spent raises BackendUnavailable (RateLimited when the
last attempt was refused for the key's limits, Overloaded when for the service's capacity).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from types import TracebackType

import aiohttp

from voxwire import errors
from voxwire.client.channel import EventChannel
from voxwire.client.connection import Credentials, Endpoints, TokenProvider
from voxwire.client.link import ResumingLink, SessionClosed, Verdict
from voxwire.client.options import Resumed, SessionOptions
from voxwire.client.stt_state import Message, ServerMessage, SttClientState, SttEvent
from voxwire.edge.messages import decode, encode
from voxwire.edge.v1 import session_pb2, stt_pb2
from voxwire.v1 import stream_pb2, transcription_pb2

log = logging.getLogger(__name__)

PATH = "/v1/stt/stream"
# Server messages are small; this bounds what one text frame may cost to parse.
MAX_SERVER_MESSAGE_BYTES = 4 * 1024 * 1024
# Finalize ids of the gateway's own (``vx-forced-``) and the SDK's (``vx-sdk-``).
RESERVED_PREFIX = "vx-"

TranscriptionEvent = SttEvent | Resumed


class TranscriptionSession(ResumingLink):
    """Use ``await TranscriptionSession.connect(...)``."""

    # The gateway answers ``session`` before the model has judged the config: ``connect``
    # waits for ``started`` (or the config's error), so that a wrong model, language or
    # endpointing raises from ``connect`` as it promises, not from a later ``send``.
    ready_on_session = False

    def __init__(
        self,
        urls: Sequence[str] | str,
        config: transcription_pb2.TranscriptionConfig,
        credentials: Credentials,
        options: SessionOptions | None = None,
    ) -> None:
        options = options or SessionOptions()
        super().__init__(Endpoints(urls, PATH), credentials, options)
        self.state = SttClientState(config, max_replay_ms=options.max_replay_ms)
        self._events: EventChannel[TranscriptionEvent] = EventChannel(options.max_events)
        self._summary: session_pb2.SessionSummary | None = None
        # The session message of this connection resumed the session, and the audio it
        # replayed: reported as a Resumed once the model takes the config again.
        self._resuming = False
        self._replayed_ms = 0

    @classmethod
    async def connect(
        cls,
        urls: Sequence[str] | str,
        config: transcription_pb2.TranscriptionConfig,
        *,
        api_key: str | None = None,
        token_provider: TokenProvider | None = None,
        origin: str | None = None,
        options: SessionOptions | None = None,
    ) -> TranscriptionSession:
        """Open the session on the first gateway that takes it; returns when the model has
        taken the config (the ``started`` event, the first of ``events()``).

        Raises ValueError (credentials, URLs), InvalidConfig / UnsupportedEncoding /
        UnsupportedSampleRate (the config's audio format), the error the gateway answered
        with (Unauthenticated, InvalidConfig, ...), or BackendUnavailable when no gateway
        answered within the reconnect budget (RateLimited when the key's limits refused the
        last attempt, Overloaded when the service was at capacity)."""
        credentials = Credentials(api_key=api_key, token_provider=token_provider, origin=origin)
        session = cls(urls, config, credentials, options)
        await session._start()
        return session

    async def __aenter__(self) -> TranscriptionSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.finished:
            await self.abort()

    # -- what the caller sees ----------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self.state.session_id

    @property
    def ack(self) -> stt_pb2.Ack:
        """The last acknowledged position (what a resume sends back)."""
        return self.state.ack

    def events(self) -> AsyncIterator[TranscriptionEvent]:
        """Results, speech events, FinalizeAck and UpdateConfigAck, notices, ``Resumed``, and
        the summary last. Ends after the summary; raises the session's failure if it fails.
        The acknowledged position is ``ack`` (it moves with final results; no event of its
        own)."""
        return self._events

    # -- sending -------------------------------------------------------------------------------

    async def send(self, audio: bytes) -> None:
        """Send audio (whole frames of the config's format; any length: it is split to the
        gateway's frame limit). Waits while the session resumes or its replay window is full.

        Raises MisalignedAudio, TimeoutError (no room within ``send_timeout_s``), the
        session's failure, or SessionClosed after ``close`` (also when ``close`` came while
        this send waited: what it had not written by then is not sent)."""
        if len(audio) % self.state.frame_bytes:
            raise errors.MisalignedAudio(
                f"{len(audio)} bytes is not a whole number of {self.state.frame_bytes}-byte frames"
            )
        if self.state.closing:
            raise SessionClosed("send after close")
        view = memoryview(audio)
        pos = 0
        async with asyncio.timeout(self.options.send_timeout_s):
            while pos < len(view):
                # A piece never exceeds the window either, so it always fits after an ack.
                step = min(self.state.max_piece_bytes, self.state.window_bytes, len(view) - pos)
                await self.wait_until(functools.partial(self._may_go_on, step))
                async with self.write_lock:
                    if self.state.closing:
                        # A close from another task while this send waited for room: audio
                        # after it would be discarded by the gateway unread, yet this send
                        # would return as if it had gone.
                        raise SessionClosed(
                            f"close came during send: {pos} of its {len(view)} bytes were sent"
                        )
                    if (forced := self.state.forced_finalize(step)) is not None:
                        await self.write(encode(forced))
                    if self.live is None or self.state.room() < step:
                        continue  # lost the race to another writer or a disconnect
                    piece = bytes(view[pos : pos + step])
                    self.state.audio_sent(piece)
                    pos += step
                    await self.write(piece)
                    if (forced := self.state.forced_finalize()) is not None:
                        await self.write(encode(forced))

    def _may_go_on(self, step: int) -> bool:
        """A waiting ``send`` may go on: room for ``step``, or a finalize of its own to send."""
        return self.state.room() >= step or self.state.needs_forced_final(step)

    async def finalize(self, finalize_id: str = "") -> str:
        """Ask for pending audio as a final result now; the FinalizeAck event answers it.
        Returns the finalize id (generated if empty). Raises ValueError for an id with a
        reserved prefix (``vx-``: the gateway's and the SDK's own), the session's failure or
        SessionClosed."""
        if finalize_id.startswith(RESERVED_PREFIX):
            raise ValueError(f"finalize ids beginning with {RESERVED_PREFIX!r} are reserved")
        finalize_id = finalize_id or f"f-{uuid.uuid4().hex[:12]}"
        await self._control(lambda: self.state.finalize(finalize_id))
        return finalize_id

    async def update_config(self, update: transcription_pb2.UpdateTranscriptionConfig) -> str:
        """Change endpointing or add vocabulary; the UpdateConfigAck event answers it. An
        accepted update holds across resumes. Returns the update id (generated if unset).
        Raises the session's failure or SessionClosed."""
        copy = transcription_pb2.UpdateTranscriptionConfig()
        copy.CopyFrom(update)
        copy.update_id = copy.update_id or f"u-{uuid.uuid4().hex[:12]}"
        await self._control(lambda: self.state.update_config(copy))
        return copy.update_id

    async def keep_alive(self) -> None:
        """Reset the gateway's idle timer (the SDK sends these by itself when idle). Raises
        the session's failure or SessionClosed."""
        self.raise_if_over()
        async with self.write_lock:
            await self.write(self._keepalive_message())

    async def _control(self, make: Callable[[], Message]) -> None:
        self.raise_if_over()
        if self.state.closing:
            raise SessionClosed("no control may follow close")
        async with self.write_lock:
            # Registered in the state first: when no connection is live, the resume sends it.
            await self.write(encode(make()))

    async def close(self) -> session_pb2.SessionSummary:
        """End the session: pending audio becomes final results, then the summary (returned;
        it is also the last event). Raises TimeoutError after ``close_timeout_s``, or the
        session's failure."""
        if self._summary is not None:
            return self._summary
        self.raise_if_over()
        async with self.write_lock:
            if not self.state.closing:
                await self.write(encode(self.state.close()))  # not live: the resume sends it
        await self.wait_finished(self.options.close_timeout_s)
        if self.failure is not None:
            raise self.failure
        if self._summary is None:
            raise SessionClosed("the session ended without a summary")
        return self._summary

    # -- the link's hooks ----------------------------------------------------------------------

    def _first_message(self) -> str:
        return encode(self.state.connected())

    def _advertised_limits(self) -> session_pb2.EdgeLimits | None:
        return self.state.limits if self.state.session_id else None

    def _keepalive_message(self) -> str:
        return encode(Message(keep_alive=stream_pb2.KeepAlive()))

    async def _on_message(
        self, ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage
    ) -> Verdict | None:
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return None  # the STT socket sends no binary frames
        server = decode(
            msg.data, ServerMessage, max_bytes=MAX_SERVER_MESSAGE_BYTES, ignore_unknown_fields=True
        )
        log.debug("received %s", server.WhichOneof("message") or "ack")
        outcome = self.state.receive(server)
        if outcome.session_up:
            self._resuming = outcome.resumed

            def replay() -> list[str | bytes]:
                self._replayed_ms = self.state.replay_ms
                return [i if isinstance(i, bytes) else encode(i) for i in self.state.replay()]

            await self.replay_and_go_live(ws, replay)
        if outcome.live:
            # Up once the model took the config (``started``), not at the session message.
            resumed = self.session_ready()
            if resumed is not None and self._resuming:
                await self._events.put(replace(resumed, replayed_ms=self._replayed_ms))
        self.changed.set()  # an ack may have made room in the window
        for event in outcome.events:
            await self._events.put(event)
        if outcome.ended:
            self._summary = server.summary
            return Verdict(ended=True)
        if outcome.hand_over:
            return Verdict(hand_over=True)
        return None

    def _connection_lost(self, close_code: int | None) -> Verdict:
        outcome = self.state.connection_lost(close_code)
        return Verdict(
            ended=outcome.ended,
            failure=outcome.failure,
            retry_after_s=outcome.retry_after_s,
            hand_over=outcome.hand_over,
            reconnect_now=outcome.reconnect_now,
            refusal=self.state.last_error,
        )

    def _finish(self, error: BaseException | None) -> None:
        self._events.close(None if isinstance(error, SessionClosed) else error)

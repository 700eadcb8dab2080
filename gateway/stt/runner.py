"""The I/O around one SttEdgeSession: the client connection, upstream streams, the clock.

Tasks of one session, all owned here and all ended on every path: the client reader, the
client writer (an ordered ``voxwire.outbox.Outbox``), the timer, and per upstream segment (the
first stream, and one per failover) an upstream writer and an upstream reader. Readers feed the
session; whatever it decides is queued synchronously (so the order it decided is the order on
the wire) and written by the writers.

Backpressure both ways: the client reader reads the next frame only when the current upstream
segment's outbox is under its high-water mark (HTTP/2 flow control -> TCP to the client), and
the upstream reader reads the next response only when the client outbox is (the client's TCP
window -> HTTP/2 to the adapter). Hard bounds turn into SLOW_CONSUMER.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.let_go import forget_tracebacks
from gateway.ports import ClientPort, Frame
from gateway.runner import RunnerLimits, SessionRunner
from gateway.stt.session import Actions, OpenUpstream, SttEdgeSession
from gateway.upstream.call import UpstreamCall, UpstreamError
from gateway.upstream.pool import Adapter, AdapterPool
from gateway.wire.messages import decode, encode
from voxwire import errors
from voxwire.edge.v1 import stt_pb2
from voxwire.outbox import Outbox, OutboxBroken
from voxwire.v1 import transcription_pb2

log = logging.getLogger(__name__)

Request = transcription_pb2.StreamingTranscribeRequest
Response = transcription_pb2.StreamingTranscribeResponse
# Handles a client's ``start`` message (config and/or resume) for the runner: it verifies what
# needs credentials and calls ``session.start``. Raises a VoxwireError.
StartHandler = Callable[[SttEdgeSession, stt_pb2.SttStart], Actions]


@dataclass(eq=False)
class _Segment:
    """One upstream stream of the session."""

    call: UpstreamCall[bytes, Response]
    outbox: Outbox[bytes]  # serialized requests
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    failed: bool = False


class SttRunner(SessionRunner[SttEdgeSession, Actions]):
    def __init__(
        self,
        session: SttEdgeSession,
        port: ClientPort,
        pool: AdapterPool,
        *,
        on_start: StartHandler,
        limits: RunnerLimits | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        on_failover: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(session, port, limits)
        self._pool = pool
        self._on_start = on_start
        self._metadata = tuple(metadata)
        # Called each time an upstream is reopened after its adapter failed (the metrics).
        self._on_failover = on_failover
        self._segment: _Segment | None = None
        self._failed_adapters: list[Adapter] = []
        # The client reader's wait while the session takes no audio (``takes_audio``).
        self._audio_room: asyncio.Future[None] | None = None

    def _execute(self, actions: Actions) -> None:
        if actions.cancel_upstream:
            self._stop_segment(failed=True)
        for message in actions.to_client:
            item = self._client_item(message)
            if item is not None:
                self._put_client(item)
        if actions.open_upstream is not None:
            self._open(actions.open_upstream)
        if actions.to_upstream and self._segment is not None:
            try:
                for request in actions.to_upstream:
                    self._segment.outbox.put(request.SerializeToString())
            except (errors.SlowConsumer, OutboxBroken):
                pass  # the segment's writer reports the failure
        if actions.close is not None:
            self._close(actions.close.code)
        if self._audio_room is not None and self.session.takes_audio:
            if not self._audio_room.done():
                self._audio_room.set_result(None)
            self._audio_room = None
        self._rearm()

    def _stop_upstream(self) -> None:
        self._stop_segment()

    def _client_item(self, message: stt_pb2.SttServerMessage) -> str | bytes | None:
        """What goes on the client's wire for ``message`` (None: nothing). WebSocket: its
        canonical JSON; the gRPC front's runner maps it to the contract's response."""
        return encode(message)

    # -- the client ----------------------------------------------------------------------------

    async def _read_client(self) -> None:
        while self._close_code is None:
            segment = self._segment
            if segment is not None and not segment.outbox.has_room:
                await segment.outbox.wait_room()
            if not self.session.takes_audio:
                # Until the upstream starts (an ``_execute`` wakes it); the reader is cancelled
                # when the session ends, so this wait ends with the session at the latest.
                self._audio_room = asyncio.get_running_loop().create_future()
                await self._audio_room
                continue
            frame = await self._port.receive()
            if frame.closed:
                # The client went away: nothing to tell anyone; the upstream is cancelled.
                self._client_gone(frame.close_code)
                return
            t0 = time.monotonic()
            try:
                actions = self._client_frame(frame)
            except errors.VoxwireError as exc:
                # Its traceback's frames hold the actions that hold it: a reference cycle per
                # failed session, freed only by a full collection (test_session_garbage.py).
                forget_tracebacks(exc)
                actions = self.session.fail(exc)
                if frame.protocol_close_code:
                    assert actions.close is not None
                    actions.close = type(actions.close)(frame.protocol_close_code, exc)
            self.session.charge("edge_receive", time.monotonic() - t0)
            self._execute(actions)

    def _client_frame(self, frame: Frame) -> Actions:
        if self.session.input_ended:
            return self.session.discard()  # after close: unread, whatever it is
        if frame.protocol_error:
            raise errors.InvalidMessage(frame.protocol_error)
        if frame.data is not None:
            return self.session.client_audio(frame.data)
        assert frame.text is not None
        msg = decode(
            frame.text, stt_pb2.SttClientMessage, max_bytes=self.session.limits.max_frame_bytes
        )
        if msg.WhichOneof("message") == "start":
            try:
                self.session.check("start")
            except errors.ConfigAlreadySet:
                # The config may have come in the query string: then a first start is refused
                # too, typically a resume sent to the URL of the session it continues.
                raise errors.ConfigAlreadySet(
                    "start after the session's configuration (the query string's or an "
                    "earlier start); to resume, connect without the config in the query string"
                ) from None
            return self._on_start(self.session, msg.start)
        return self.session.client_message(msg)

    # -- upstream ------------------------------------------------------------------------------

    def _open(self, order: OpenUpstream) -> None:
        try:
            lease = self._pool.choose(exclude=self._failed_adapters)
        except errors.BackendUnavailable as exc:
            if not order.failover or not self._failed_adapters:
                self._execute(self.session.fail(exc))
                return
            # Every other adapter is gone too: try the ones that failed, once.
            self._failed_adapters.clear()
            try:
                lease = self._pool.choose()
            except errors.BackendUnavailable as again:
                self._execute(self.session.fail(again))
                return
        if order.failover and self._on_failover is not None:
            # The stream has an adapter again: one failover (its notice follows the answer).
            self._on_failover()
        call = lease.adapter.streaming_transcribe_serialized()(
            metadata=self._metadata, timeout=self._upstream_timeout()
        )
        # The outbox bounds each write (SlowConsumer past write_timeout): no second deadline.
        upstream: UpstreamCall[bytes, Response] = UpstreamCall(
            self._pool, lease, call, write_timeout=self._limits.write_timeout_s, timed_writes=False
        )
        outbox: Outbox[bytes] = Outbox(
            upstream.write,
            len,
            max_bytes=self._limits.upstream_max_bytes,
            high_water=self._limits.upstream_high_water,
            write_timeout=self._limits.write_timeout_s,
        )
        segment = _Segment(upstream, outbox)
        self._segment = segment
        outbox.put(Request(config=order.config).SerializeToString())
        # The outbox's writer is the task itself, its end read by a callback: no wrapping
        # coroutine frame held for the session's life (BENCHMARKS.md, "Memory per idle
        # WebSocket").
        writer = asyncio.create_task(outbox.run(), name="stt-up-w")
        writer.add_done_callback(functools.partial(self._writer_ended, segment))
        segment.tasks.append(writer)
        segment.tasks.append(asyncio.create_task(self._read_upstream(segment), name="stt-up-r"))

    def _writer_ended(self, segment: _Segment, writer: asyncio.Task[None]) -> None:
        if writer.cancelled() or (exc := writer.exception()) is None:
            return
        if isinstance(exc, UpstreamError):
            self._upstream_failed(segment, exc)
            return
        if isinstance(exc, errors.SlowConsumer):
            why = "the adapter stopped taking audio"
        else:
            log.error("session %s: upstream writer failed", self.session.session_id, exc_info=exc)
            why = f"the upstream writer failed: {type(exc).__name__}"
        self._upstream_failed(segment, UpstreamError(errors.BackendUnavailable(why), None))

    async def _read_upstream(self, segment: _Segment) -> None:
        try:
            while True:
                if not self._client_out.has_room:
                    await self._client_out.wait_room()
                response = await segment.call.read()
                if response is None:
                    return  # ended OK (after the summary the session decided the close)
                if segment is self._segment:
                    self._execute(self.session.upstream_response(response))
        except UpstreamError as exc:
            self._upstream_failed(segment, exc)

    def _upstream_failed(self, segment: _Segment, exc: UpstreamError) -> None:
        if segment.failed or segment is not self._segment:
            return
        segment.failed = True
        self._failed_adapters.append(segment.call.lease.adapter)
        log.info("session %s: upstream failed: %r", self.session.session_id, exc.error)
        self._execute(self.session.upstream_failed(exc.error, exc.timings))

    def _stop_segment(self, *, failed: bool = False) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        segment.failed = segment.failed or failed
        segment.call.cancel()
        current = asyncio.current_task()
        for task in segment.tasks:
            if task is not current:
                task.cancel()
        # A task's exception holds its traceback, whose frames hold the segment: kept in the
        # segment's list, each stopped segment would be a reference cycle.
        segment.tasks.clear()

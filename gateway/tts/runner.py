"""The I/O around one TtsEdgeSession: the client connection, one upstream call per context.

Tasks, all owned here and ended on every path: the client reader, the client writer (an
ordered outbox of JSON text and binary audio frames), the timer (pacing, keepalives, idle,
drain), and per context an upstream writer and reader. A context's reader reads its next
response only while the session says the context's queue has room (``has_room``): a paced or
unread context stops its own upstream, and HTTP/2 flow control carries that to the adapter and
the model, without holding back other contexts.

Spare call: when a context ends (and the client has not closed the session), the runner opens
the next context's call ahead (``[tts] spare_call_max_age_s``), so that a voice agent's next
turn skips the call's set-up at the adapter. A spare carries no message, so the adapter does
not admit it; it is cancelled at its maximum age (before the adapter's idle timeout would end
it as an error), and taken only on an adapter still serving, not ended (grpc.aio learns a
call's status without a read), and not for a failover (which must avoid the adapters the
context failed on). Anything else discards it (cancelled); the session's end discards it too.
Idle sessions never hold one (the first is opened when the first context ends), and neither
does a session whose client sends `closeSession` before its last context ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.let_go import forget_tracebacks
from gateway.ports import ClientPort, Frame
from gateway.runner import RunnerLimits, SessionRunner
from gateway.tts.session import Actions, OpenContext, TtsEdgeSession
from gateway.upstream.call import UpstreamCall, UpstreamError
from gateway.upstream.pool import Adapter, AdapterPool, Lease
from gateway.wire.messages import decode, encode
from voxwire import errors
from voxwire.edge.v1 import tts_pb2
from voxwire.outbox import Outbox, OutboxBroken
from voxwire.v1 import synthesis_pb2

log = logging.getLogger(__name__)

Request = synthesis_pb2.StreamingSynthesizeRequest
Response = synthesis_pb2.StreamingSynthesizeResponse
StartHandler = Callable[[TtsEdgeSession, tts_pb2.TtsStart], Actions]


@dataclass(eq=False)
class _Upstream:
    key: int
    call: UpstreamCall[Request, Response]
    outbox: Outbox[Request]
    room: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    half_close: bool = False
    # The adapters the context failed on before this call (its failovers skip them).
    failed_before: tuple[Adapter, ...] = ()


@dataclass(eq=False, slots=True)
class _Spare:
    """An upstream call opened ahead for the session's next context. It holds no lease: the
    adapter does not admit a call before its first message, and a spare must not count as
    load where the pool picks the least-loaded adapter."""

    adapter: Adapter
    call: Any
    expiry: asyncio.TimerHandle  # discards it at its maximum age: one that exists is younger

    def discard(self) -> None:
        self.expiry.cancel()
        self.call.cancel()


class TtsRunner(SessionRunner[TtsEdgeSession, Actions]):
    def __init__(
        self,
        session: TtsEdgeSession,
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
        self._upstreams: dict[int, _Upstream] = {}
        self._first = True
        self._spare: _Spare | None = None
        self._spares = session.limits.spare_call_max_age_s > 0

    def _execute(self, actions: Actions) -> None:
        # A failover's new call skips the adapters its context failed on, read from the call
        # it replaces before that call is stopped. (The session gives the reopened context a
        # new key, so nothing is kept per key: a session opening contexts for hours holds no
        # entry for each one.) Built only when something opens: this runs for every chunk.
        failed = (
            {o.key: self._failed_on(o.replaces) for o in actions.open_upstream if o.failover}
            if actions.open_upstream
            else {}
        )
        for key in actions.cancel_upstream:
            self._stop(key)
        # The batch's audio moves the client writes' playback clock once (voxwire/outbox.py),
        # with its first message: the rest are written straight after it.
        audio_ms = actions.client_audio_ms
        for item in actions.to_client:
            out = self._client_item(item)
            if out is not None:
                self._put_client(out, audio_ms)
                audio_ms = 0
        for order in actions.open_upstream:
            self._open(order, failed.get(order.key, ()))
        if actions.cancel_upstream and not actions.open_upstream and actions.close is None:
            self._open_spare()  # a context ended and none opened: the next one's call, ahead
        for key, request in actions.to_upstream:
            upstream = self._upstreams.get(key)
            if upstream is not None:
                with contextlib.suppress(errors.SlowConsumer, OutboxBroken):
                    upstream.outbox.put(request)
        for key in actions.half_close:
            upstream = self._upstreams.get(key)
            if upstream is not None:
                upstream.half_close = True
                upstream.outbox.close()
        for key, upstream in self._upstreams.items():
            if self.session.has_room(key):
                upstream.room.set()
            else:
                upstream.room.clear()
        if actions.close is not None:
            self._close(actions.close.code)
        self._rearm()

    def _stop_upstream(self) -> None:
        for key in list(self._upstreams):
            self._stop(key)
        self._spares = False  # the session has ended: nothing more is opened ahead
        if self._spare is not None:
            self._spare.discard()
            self._spare = None

    def _client_item(self, item: tts_pb2.TtsServerMessage | bytes) -> str | bytes | None:
        """What goes on the client's wire for ``item`` (None: nothing). WebSocket: binary
        audio frames as they are, messages as canonical JSON; the gRPC front's runner maps
        them to the contract's responses."""
        return item if isinstance(item, bytes) else encode(item)

    # -- the client ----------------------------------------------------------------------------

    async def _read_client(self) -> None:
        while self._close_code is None:
            frame = await self._port.receive()
            if frame.closed:
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
            self.session.charge("edge_receive", time.monotonic() - t0)
            self._execute(actions)

    def _client_frame(self, frame: Frame) -> Actions:
        if self.session.input_ended:
            return self.session.discard()  # after closeSession: unread, whatever it is
        if frame.protocol_error:
            raise errors.InvalidMessage(frame.protocol_error)
        if frame.data is not None:
            raise errors.InvalidMessage("binary frames are not accepted on the TTS socket")
        assert frame.text is not None
        msg = decode(
            frame.text, tts_pb2.TtsClientMessage, max_bytes=self.session.limits.max_frame_bytes
        )
        first, self._first = self._first, False
        if msg.WhichOneof("message") == "start":
            if not first or self.session.started:
                raise errors.ConfigAlreadySet("start may only be the first message")
            return self._on_start(self.session, msg.start)
        if not self.session.started:
            # No start message: a new session with the default (query-string) options.
            actions = self._on_start(self.session, tts_pb2.TtsStart())
            actions.extend(self.session.client_message(msg))
            return actions
        return self.session.client_message(msg)

    # -- upstream ------------------------------------------------------------------------------

    def _failed_on(self, key: int) -> tuple[Adapter, ...]:
        upstream = self._upstreams.get(key)
        if upstream is None:
            return ()
        return (*upstream.failed_before, upstream.call.lease.adapter)

    def _open(self, order: OpenContext, failed: tuple[Adapter, ...] = ()) -> None:
        spare = self._take_spare(order.failover)
        if spare is not None:
            lease, call = Lease(spare.adapter), spare.call
        else:
            chosen = self._choose(order, failed)
            if chosen is None:
                return
            lease, call = chosen, self._new_call(chosen)
        # The outbox bounds each write (SlowConsumer past write_timeout): no second deadline.
        upstream_call: UpstreamCall[Request, Response] = UpstreamCall(
            self._pool, lease, call, write_timeout=self._limits.write_timeout_s, timed_writes=False
        )
        outbox: Outbox[Request] = Outbox(
            upstream_call.write,
            lambda r: r.ByteSize(),
            max_bytes=self._limits.upstream_max_bytes,
            high_water=self._limits.upstream_high_water,
            write_timeout=self._limits.write_timeout_s,
        )
        upstream = _Upstream(order.key, upstream_call, outbox, failed_before=failed)
        upstream.room.set()
        self._upstreams[order.key] = upstream
        for request in order.requests:
            outbox.put(request)
        upstream.tasks.append(asyncio.create_task(self._write(upstream), name="tts-up-w"))
        upstream.tasks.append(asyncio.create_task(self._read(upstream), name="tts-up-r"))

    def _choose(self, order: OpenContext, failed: tuple[Adapter, ...]) -> Lease | None:
        """A lease for ``order``'s new call, or None when no adapter is left (the context has
        then ended with the error)."""
        try:
            lease = self._pool.choose(exclude=list(failed))
        except errors.BackendUnavailable as exc:
            try:
                lease = self._pool.choose()  # only failed ones are left: try them again
            except errors.BackendUnavailable:
                # Nothing is left to fail over to: the context ends with the error.
                self._execute(self.session.upstream_failed(order.key, exc, failover=False))
                return None
        if order.failover and self._on_failover is not None:
            # The context has an adapter again: one failover (its notice follows the answer).
            self._on_failover()
        return lease

    def _new_call(self, lease: Lease) -> Any:
        return lease.adapter.synthesis().StreamingSynthesize(
            metadata=self._metadata, timeout=self._upstream_timeout()
        )

    def _take_spare(self, failover: bool) -> _Spare | None:
        """The spare call, if it may serve the next context; else None (and it is discarded)."""
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        if failover or not spare.adapter.serving or spare.call.done():
            spare.discard()
            return None
        spare.expiry.cancel()  # it serves a context now
        return spare

    def _open_spare(self) -> None:
        """Open the next context's call ahead, unless there is one or the session is ending."""
        if (
            self._spare is not None
            or not self._spares
            or self.session.input_ended
            or self._close_code is not None
        ):
            return
        try:
            lease = self._pool.choose()
        except errors.BackendUnavailable:
            return  # the next context finds out for itself
        lease.release()  # chosen as a context would be; counted once it serves one
        # Cancelled at its age, not left to the adapter's idle timeout: that would count an
        # IDLE_TIMEOUT error at the adapter for every session quiet for half a minute.
        expiry = asyncio.get_running_loop().call_later(
            self.session.limits.spare_call_max_age_s, self._expire
        )
        self._spare = _Spare(lease.adapter, self._new_call(lease), expiry)

    def _expire(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            spare.discard()

    async def _write(self, upstream: _Upstream) -> None:
        try:
            await upstream.outbox.run()
            if upstream.half_close:
                await upstream.call.done_writing()
        except UpstreamError as exc:
            self._upstream_failed(upstream, exc)
        except errors.SlowConsumer:
            self._upstream_failed(
                upstream,
                UpstreamError(errors.BackendUnavailable("the adapter stopped taking text"), None),
            )

    async def _read(self, upstream: _Upstream) -> None:
        try:
            while True:
                if not upstream.room.is_set():
                    await upstream.room.wait()
                if not self._client_out.has_room:
                    await self._client_out.wait_room()
                response = await upstream.call.read()
                if response is None:
                    return
                if response.WhichOneof("response") == "summary":
                    continue  # the session's own summary covers it (timings come with done)
                if self._upstreams.get(upstream.key) is upstream:
                    self._execute(self.session.upstream_response(upstream.key, response))
        except UpstreamError as exc:
            self._upstream_failed(upstream, exc)

    def _upstream_failed(self, upstream: _Upstream, exc: UpstreamError) -> None:
        if self._upstreams.get(upstream.key) is not upstream:
            return
        log.info("session %s: context upstream failed: %r", self.session.session_id, exc.error)
        self._execute(self.session.upstream_failed(upstream.key, exc.error, exc.timings))

    def _stop(self, key: int) -> None:
        upstream = self._upstreams.pop(key, None)
        if upstream is None:
            return
        upstream.call.cancel()
        current = asyncio.current_task()
        for task in upstream.tasks:
            if task is not current:
                task.cancel()
        upstream.tasks.clear()  # no cycle through their tracebacks (gateway/stt/runner.py)

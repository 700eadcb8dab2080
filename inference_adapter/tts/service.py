"""voxwire.v1.Synthesis: the I/O around SynthesisSession.

One client stream; per open context one replica slot, one ModelStreamInfer call and one task
that reads it (plus one that watches the slot's replica). A context that ends, for whatever
reason, half-closes its call and lets Triton end it (``ModelStream.finish_in``); a unit still in
flight (the client cancelled the context, or the stream ended) runs to its end and
its audio is dropped, in a task of the adapter's (``triton/reaper.py``), because cancelled calls
crash Triton 2.51. ``tts_stop_in_flight = "cancel"`` cancels such calls instead, for a Triton
with the fix. A call whose replica failed is cancelled (there is nothing left to end). The
stream runner (``stream_runner.py``) owns every other task and the ending; the main task reads
the client.

Failover (docs/contract.md, "Failover"): when a context's replica fails (its call breaks, or the
readiness probe takes the replica out; never because one unit is late), the context gets a new
call on another replica that has the model and its unit in flight is submitted there again
(``SynthesisContext.resubmit``); the client gets a StreamNotice FAILOVER for the context. Only
when no replica can take it does the context end with BACKEND_UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry import trace

from inference_adapter.boundary import stream_handler
from inference_adapter.runtime import Runtime
from inference_adapter.stream_runner import StreamRunner
from inference_adapter.triton.replicas import Lease
from inference_adapter.triton.stream import ModelStream
from inference_adapter.triton.tensors import tts_request
from inference_adapter.tts.config import resolve
from inference_adapter.tts.context import FINISHED, CtxState, SynthesisContext
from inference_adapter.tts.session import Actions, SynthesisSession
from voxwire import errors
from voxwire.v1 import stream_pb2, synthesis_pb2, timings_pb2

Request = synthesis_pb2.StreamingSynthesizeRequest
Response = synthesis_pb2.StreamingSynthesizeResponse
log = logging.getLogger(__name__)

# Bound on Triton ending a done context's call after its half-close (it has nothing in flight,
# so it answers at once); past it the call is cancelled. A context's call gets the larger of this
# and ``tts_stop_drain_seconds``, as a stopped one's unit in flight runs out first.
FINISH_BUDGET_S = 2.0
# When the stream ends early: how long its model pumps get to leave the read they are in
# (the next answer, or the call's end after its half-close) before the runner cancels them,
# which would cancel their calls.
STOP_HANDOVER_S = 1.0


class SynthesisService:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        return {"StreamingSynthesize": stream_handler(self.StreamingSynthesize)}

    async def StreamingSynthesize(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> None:
        with self._rt.telemetry.stream_span(
            "voxwire.tts.stream", context.invocation_metadata()
        ) as span:
            body = SynthesisStream(self._rt, span)
            runner = StreamRunner(
                self._rt,
                context,
                Request.FromString,
                service="tts",
                span=span,
                on_send=body.session.charge_send,
                playback_ms=audio_ms,
            )
            await runner.run(body)


def audio_ms(response: Response) -> int:
    """The audio a response carries, in ms: its client may take it at playback pace, so a
    write's deadline counts from when the audio before it has played (inference_adapter/
    outbox.py)."""
    return response.audio.duration_ms if response.HasField("audio") else 0


@dataclass(eq=False)
class _ModelSide:
    lease: Lease
    stream: ModelStream
    attrs: dict[str, str]
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


class SynthesisStream:
    """The body of one StreamingSynthesize stream (see ``StreamBody``)."""

    def __init__(self, rt: Runtime, span: trace.Span) -> None:
        self.rt = rt
        self.span = span
        self.session = SynthesisSession(
            rt.config.limits,
            lambda cfg: resolve(cfg, rt.pool.catalog(), default_model=rt.config.default_tts_model),
            session_id=rt.new_session_id(),
        )
        self.sides: dict[int, _ModelSide] = {}
        self._done = asyncio.Event()
        self._stream: StreamRunner[Request] | None = None
        self._pumps: set[asyncio.Task[Any]] = set()

    # -- StreamBody -----------------------------------------------------------------------------

    def busy(self) -> bool:
        # A client waiting for audio is not idle (docs/contract.md, idle_timeout).
        return self.session.busy

    def timings(self) -> timings_pb2.StageTimings:
        return self.session.timings.to_proto()

    async def serve(self, stream: StreamRunner[Any], first: Request | None) -> None:
        """Read the client until its half-close, then wait for every context to finish."""
        self._stream = stream
        msg = first
        while True:
            actions = self.session.half_close() if msg is None else self.session.receive(msg)
            await self._execute(actions)
            if msg is None:
                break
            msg = await stream.reader.next()
        await self._done.wait()
        stream.outbox.put(self.session.summary())
        await self._pumps_out()  # those of contexts that stopped mid-unit may be in a read

    async def wind_up(self) -> None:
        return None  # contexts end with the stream's STREAM_TOO_LONG

    def notice(self, notice: stream_pb2.StreamNotice) -> Response:
        return Response(notice=notice)

    async def stop(self) -> None:
        """End every context's call (half-closed and drained by the adapter, see the module
        doc), then let the model pumps leave their reads: the runner cancels the stream's tasks
        next, and a task cancelled inside a read cancels its call."""
        self.release()
        await self._pumps_out()

    async def _pumps_out(self) -> None:
        """Wait (bounded) for the model pumps of ended contexts to leave their reads."""
        pumps = [task for task in self._pumps if task is not asyncio.current_task()]
        if pumps:
            await asyncio.wait(pumps, timeout=STOP_HANDOVER_S)

    def release(self) -> None:
        for key in list(self.sides):
            self._close_side(key, cancel=self._stopping(CtxState.CANCELLED))

    # -- contexts -------------------------------------------------------------------------------

    def _count_context_error(self, response: Response) -> None:
        """A context's error, in voxwire.errors by reason (service "tts") and, for the server's
        side (OVERLOADED, BACKEND_UNAVAILABLE, ...), in the log: a TTS capacity refusal ends a
        context, not the stream, and went unseen by both, the stream's errors alone counted."""
        error = errors.from_proto(response.error.error)
        self.rt.telemetry.errors.add(1, {"service": "tts", "reason": error.reason})
        if isinstance(error, errors.ServerError):
            expected = isinstance(error, errors.Overloaded | errors.Draining)
            log.log(
                logging.INFO if expected else logging.WARNING,
                "tts context failed: %s %s",
                error.reason,
                error.message,
            )

    async def _execute(self, actions: Actions) -> None:
        """Carry out a session's decisions in order: open, answer, submit, retire."""
        assert self._stream is not None
        stream = self._stream
        for ctx in actions.open:
            try:
                lease = self.rt.pool.acquire(ctx.config.model.name)
            except errors.VoxwireError as exc:
                actions.extend(self.session.context_failed(ctx, exc))
                continue
            self._open_side(ctx, lease)
            actions.to_client.insert(0, self.session.opened(ctx, lease.replica.name))
        # Queued synchronously: the order the session decided is the order on the wire.
        for response in actions.to_client:
            stream.outbox.put(response)
            if response.HasField("error"):
                self._count_context_error(response)
        for ctx in actions.finished:
            self._close_side(ctx.key, cancel=self._stopping(ctx.state))
            if ctx.state is CtxState.DONE:
                self.rt.telemetry.record_stages(
                    ctx.timings.to_proto(),
                    {"service": "tts"},
                    span=self.span,
                    event="voxwire.context",
                )
        if self.session.done:
            self._done.set()
        for ctx, unit in actions.submit:
            side = self.sides.get(ctx.key)
            if side is None:
                continue
            request = tts_request(
                ctx.config.model.name,
                unit.text,
                ctx.config.model_config(),
                request_id=unit.request_id,  # server-made: never the client's context id
            )
            try:
                await side.stream.send(request)
            except errors.VoxwireError as exc:
                await self._failed(ctx, side, exc)

    def _open_side(self, ctx: SynthesisContext, lease: Lease) -> None:
        assert self._stream is not None
        model = ModelStream(
            self.rt.pool,
            lease,
            metadata=self.rt.telemetry.outgoing_metadata(self.span),
            response_timeout=self.rt.config.model_response_timeout_seconds,
        )
        # The labels of voxwire.sequences.active (STT), "service" included: one query covers
        # both kinds of replica slot.
        attrs = {"service": "tts", "model": ctx.config.model.name, "replica": lease.replica.name}
        side = _ModelSide(lease, model, attrs)
        self.sides[ctx.key] = side
        self.rt.telemetry.contexts.add(1, attrs)
        pump = self._stream.spawn(self._model_pump(ctx, side), "context-model")
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        side.tasks.append(pump)
        side.tasks.append(self._stream.spawn(self._watch(ctx, side), "context-lease"))

    async def _model_pump(self, ctx: SynthesisContext, side: _ModelSide) -> None:
        assert self._stream is not None
        outbox = self._stream.outbox
        timeout = self.rt.config.model_response_timeout_seconds
        while True:
            # Backpressure: a client that does not read its audio stops synthesis reads.
            await outbox.wait_room()
            if self.sides.get(ctx.key) is not side:
                return  # the context ended (done, stopped, or moved to another replica)
            try:
                resp = await side.stream.receive(timeout if ctx.inflight is not None else None)
            except errors.VoxwireError as exc:  # this context's call failed: only it fails
                await self._failed(ctx, side, exc)  # returns if the side is gone (done)
                return
            if self.sides.get(ctx.key) is not side:
                return  # it ended during the read: ``finish_in``'s task reads the rest, drops it
            await self._execute(self.session.model_response(ctx.key, resp))

    async def _watch(self, ctx: SynthesisContext, side: _ModelSide) -> None:
        error = await side.lease.wait_failed()
        for task in side.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await self._failed(ctx, side, error)

    async def _failed(
        self, ctx: SynthesisContext, side: _ModelSide, error: errors.VoxwireError
    ) -> None:
        """The model side of ``ctx`` failed with ``error``: move the context to another
        replica when its replica failed, else (or when none can take it) end the context."""
        if self.sides.get(ctx.key) is not side:
            return  # that side was replaced or closed already
        cfg = self.rt.config
        error = side.stream.failure or error
        moving = ctx.failovers < cfg.max_failovers and ctx.state not in FINISHED
        if moving and not await side.stream.replica_failed(cfg.probe_verdict_seconds):
            moving = False
        if self.sides.get(ctx.key) is not side:
            return  # replaced while the probe decided (the lease watcher moved it)
        if not moving:
            if isinstance(error, errors.BackendUnavailable) and error.retry_delay is None:
                # The bound of failovers hit (or a replica that is fine failed this call):
                # retryable after a wait, as with no replica left (docs/contract.md, "Bounds").
                error = errors.BackendUnavailable(error.message, retry_delay=self._retry_delay())
            await self._execute(self.session.context_failed(ctx, error))
            return
        try:
            # Not the replica that just failed, whatever its probe says yet.
            lease = self.rt.pool.acquire(ctx.config.model.name, exclude=(side.lease.replica,))
        except errors.VoxwireError as exc:
            error = errors.BackendUnavailable(
                f"{error.message}; no other model server can take the context ({exc.message})",
                # Waiting helps: a replica that restarts is routed to again.
                retry_delay=exc.retry_delay or self._retry_delay(),
            )
            await self._execute(self.session.context_failed(ctx, error))
            return
        self._close_side(ctx.key, cancel="replica_failed")
        self._open_side(ctx, lease)
        self.rt.telemetry.failovers.add(1, {"service": "tts", "model": ctx.config.model.name})
        await self._execute(self.session.failed_over(ctx, lease.replica.name))

    def _retry_delay(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=self.rt.config.overload_retry_seconds)

    def _close_side(self, key: int, *, cancel: str = "") -> None:
        """End a context's model side: its call is half-closed and ended by Triton, with what
        is in flight finishing and being dropped (``ModelStream.finish_in``), bounded per
        replica by ``ReplicaPool.may_drain``. ``cancel`` (the reason, counted) cancels the call
        instead: for a replica that failed, past that bound, or by
        ``tts_stop_in_flight = "cancel"``. The lease goes back at once either way."""
        side = self.sides.pop(key, None)
        if side is None:
            return
        self.rt.telemetry.contexts.add(-1, side.attrs)
        if not cancel and side.lease.error is not None:
            cancel = "replica_failed"  # nothing would end the call
        if not cancel and not self.rt.pool.may_drain(side.lease):
            cancel = "drain_limit"  # a client cancelling faster than units run out
        current = asyncio.current_task()
        pump = side.tasks[0] if side.tasks else None
        if cancel:
            side.stream.cancel(cancel)
            side.lease.release()
            pump = None
        else:
            # In the adapter's task, not the stream's: a unit in flight may outlive the stream.
            # The pump keeps its read (cancelling it there would cancel the call) and reads no
            # more once its side is gone. The lease goes back now, as with a cancel: held, a
            # barge-in's new context was refused OVERLOADED while the old unit ran out
            # (benchmarks/tts_barge_in.py).
            side.lease.release()
            budget = max(FINISH_BUDGET_S, self.rt.config.tts_stop_drain_seconds)
            ending = side.stream.finish_in(self.rt.calls, budget, why_not="tts_end_not_ended")
            if ending is not None:
                self.rt.pool.count_drain(side.lease, ending)
        for task in side.tasks:
            if task is not current and task is not pump:
                task.cancel()
        # Not kept listed: a cancelled task's traceback holds a frame that holds the side (a
        # cycle freed only by a full collection); the pump that reads on is ``finish_in``'s.
        side.tasks.clear()

    def _stopping(self, state: CtxState) -> str:
        """The reason to cancel the call of a context ending in ``state``, or "" to end it."""
        if state is CtxState.DONE or self.rt.config.tts_stop_in_flight != "cancel":
            return ""
        return "context_stopped"  # stops a unit in flight at once (the fastest barge-in)

"""voxwire.v1.Synthesis: the I/O around SynthesisSession.

One client stream; per open context one replica slot, one ModelStreamInfer call and one task
that reads it (plus one that watches the slot's replica). Cancelling a context cancels its call,
so Triton drops whatever it had in flight for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import grpc
from opentelemetry import trace

from inference_adapter.boundary import IdleReader, Outbox, abort, as_voxwire, finish
from inference_adapter.runtime import Runtime
from inference_adapter.triton.replicas import Lease
from inference_adapter.triton.stream import ModelStream
from inference_adapter.triton.tensors import tts_request
from inference_adapter.tts.config import resolve
from inference_adapter.tts.context import CtxState, SynthesisContext
from inference_adapter.tts.session import Actions, SynthesisSession
from voxwire import errors
from voxwire.v1 import synthesis_pb2, synthesis_pb2_grpc

log = logging.getLogger(__name__)


class SynthesisService(synthesis_pb2_grpc.SynthesisServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def StreamingSynthesize(  # type: ignore[override]  # writes via context.write
        self,
        request_iterator: AsyncIterator[synthesis_pb2.StreamingSynthesizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        with self._rt.telemetry.stream_span(
            "voxwire.tts.stream", context.invocation_metadata()
        ) as span:
            await _SynthesisStream(self._rt, context, span).run(request_iterator)


@dataclass(eq=False)
class _ModelSide:
    lease: Lease
    stream: ModelStream
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class _SynthesisStream:
    def __init__(self, rt: Runtime, context: grpc.aio.ServicerContext, span: trace.Span) -> None:
        self.rt = rt
        self.context = context
        self.span = span
        self.session = SynthesisSession(
            rt.config.limits,
            lambda cfg: resolve(cfg, rt.pool.catalog(), default_model=rt.config.default_tts_model),
            session_id=rt.new_session_id(),
        )
        self.sides: dict[int, _ModelSide] = {}
        self._admitted = False
        self._outbox = Outbox(context, self.session.charge_send)
        self._done = asyncio.Event()
        self._failure: asyncio.Future[errors.VoxwireError] = (
            asyncio.get_running_loop().create_future()
        )

    async def run(self, requests: AsyncIterator[synthesis_pb2.StreamingSynthesizeRequest]) -> None:
        try:
            await self._serve(requests)
            finish(self.context, self.session.timings.to_proto())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the one boundary: every failure becomes a status
            error = as_voxwire(exc)
            self.rt.telemetry.errors.add(1, {"service": "tts", "reason": error.reason})
            await abort(self.context, error, self.session.timings.to_proto())
        finally:
            for key in list(self.sides):
                self._close_side(key)
            if self._admitted:
                self.rt.leave()

    async def _serve(
        self, requests: AsyncIterator[synthesis_pb2.StreamingSynthesizeRequest]
    ) -> None:
        limits = self.rt.config.limits
        deadline = time.monotonic() + limits.max_stream_seconds
        client = asyncio.create_task(self._client_pump(requests), name="tts-client")
        writer = self._outbox.start()
        drained = asyncio.create_task(self.rt.wait_drain_expired(), name="tts-drain")
        finished = asyncio.create_task(self._done.wait(), name="tts-done")
        tasks = {client, writer, drained, finished}
        try:
            pending = set(tasks) | {self._failure}
            while not self._done.is_set():
                done, pending = await asyncio.wait(
                    pending,
                    timeout=deadline - time.monotonic(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    raise errors.StreamTooLong(
                        f"stream reached max_stream_duration {limits.max_stream_seconds:g} s"
                    )
                for task in done:
                    if task is drained or task is self._failure:
                        raise cast(errors.VoxwireError, task.result())
                    task.result()  # re-raise the client pump's or the writer's error
        except errors.VoxwireError:
            await self._outbox.flush(1.0)  # what was decided still reaches the client
            raise
        finally:
            for task in tasks - {writer}:
                task.cancel()
            await asyncio.gather(*(tasks - {writer}), return_exceptions=True)
        self._outbox.put(self.session.summary())
        await self._outbox.flush(limits.idle_timeout_seconds, strict=True)

    async def _client_pump(
        self, requests: AsyncIterator[synthesis_pb2.StreamingSynthesizeRequest]
    ) -> None:
        reader = IdleReader(requests, self.rt.config.limits.idle_timeout_seconds)
        while True:
            try:
                msg = await reader.next()
            except errors.IdleTimeout:
                if self.session.busy:
                    continue  # the client is waiting for audio, not idle
                raise
            if not self._admitted:
                # Admitted on its first message, not before: refusing a stream (DRAINING)
                # before reading races a grpcio aio client's write (grpc/grpc#36066).
                self.rt.admit()
                self._admitted = True
            actions = self.session.half_close() if msg is None else self.session.receive(msg)
            await self._execute(actions)
            if msg is None:
                return

    async def _execute(self, actions: Actions) -> None:
        """Carry out a session's decisions in order: open, answer, submit, retire."""
        for ctx in actions.open:
            try:
                lease = self.rt.pool.acquire(ctx.config.model.name)
            except errors.VoxwireError as exc:
                actions.extend(self.session.context_failed(ctx, exc))
                continue
            stream = ModelStream(
                self.rt.pool,
                lease,
                metadata=self.rt.telemetry.outgoing_metadata(self.span),
                response_timeout=self.rt.config.model_response_timeout_seconds,
            )
            side = _ModelSide(lease, stream)
            self.sides[ctx.key] = side
            side.tasks.append(asyncio.create_task(self._model_pump(ctx, side), name="tts-model"))
            side.tasks.append(asyncio.create_task(self._watch(ctx, side), name="tts-lease"))
            actions.to_client.insert(0, self.session.opened(ctx, lease.replica.name))
        # Queued synchronously: the order the session decided is the order on the wire.
        for response in actions.to_client:
            self._outbox.put(response)
        for ctx in actions.finished:
            self._close_side(ctx.key)
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
            submit_side = self.sides.get(ctx.key)
            if submit_side is None:
                continue
            request = tts_request(
                ctx.config.model.name,
                unit.text,
                ctx.config.model_config(),
                request_id=f"{ctx.context_id}/{unit.index}",
            )
            try:
                await submit_side.stream.send(request)
            except errors.VoxwireError as exc:
                await self._execute(self.session.context_failed(ctx, exc))

    async def _model_pump(self, ctx: SynthesisContext, side: _ModelSide) -> None:
        timeout = self.rt.config.model_response_timeout_seconds
        try:
            while True:
                # Backpressure: a client that does not read its audio stops synthesis reads.
                await self._outbox.wait_room()
                resp = await side.stream.receive(timeout if ctx.inflight is not None else None)
                await self._execute(self.session.model_response(ctx.key, resp))
        except asyncio.CancelledError:
            raise
        except errors.VoxwireError as exc:
            await self._execute_or_fail(self.session.context_failed(ctx, exc))
        except Exception as exc:
            self._fail_stream(as_voxwire(exc))

    async def _watch(self, ctx: SynthesisContext, side: _ModelSide) -> None:
        error = await side.lease.wait_failed()
        for task in side.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await self._execute_or_fail(self.session.context_failed(ctx, error))

    async def _execute_or_fail(self, actions: Actions) -> None:
        try:
            await self._execute(actions)
        except Exception as exc:  # e.g. the client went away while we wrote the error
            self._fail_stream(as_voxwire(exc))

    def _fail_stream(self, error: errors.VoxwireError) -> None:
        if not self._failure.done():
            self._failure.set_result(error)

    def _close_side(self, key: int) -> None:
        side = self.sides.pop(key, None)
        if side is None:
            return
        side.stream.cancel()
        side.lease.release()
        current = asyncio.current_task()
        for task in side.tasks:
            if task is not current:
                task.cancel()

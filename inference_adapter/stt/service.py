"""voxwire.v1.Transcription: the I/O around TranscriptionSession.

Per client stream: one Triton sequence on one ModelStreamInfer call, two tasks (client -> model,
model -> client) and watchers for the replica lease, the drain and the maximum duration. The
session decides; this module only moves messages and maps failures at one boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import cast

import grpc
from opentelemetry import trace

from inference_adapter.boundary import IdleReader, Outbox, abort, as_voxwire, finish
from inference_adapter.runtime import Runtime
from inference_adapter.stt.config import resolve
from inference_adapter.stt.session import ModelRequest, TranscriptionSession
from inference_adapter.triton.replicas import Lease
from inference_adapter.triton.stream import ModelStream
from inference_adapter.triton.tensors import stt_request
from voxwire import errors
from voxwire.timings import StageClock
from voxwire.v1 import transcription_pb2, transcription_pb2_grpc

log = logging.getLogger(__name__)

# Bound on freeing the Triton side when a client goes away (issue: within 100 ms).
CANCEL_BUDGET_S = 0.1


class TranscriptionService(transcription_pb2_grpc.TranscriptionServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def StreamingTranscribe(  # type: ignore[override]  # writes via context.write
        self,
        request_iterator: AsyncIterator[transcription_pb2.StreamingTranscribeRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        stream = _TranscriptionStream(self._rt, context)
        with self._rt.telemetry.stream_span(
            "voxwire.stt.stream", context.invocation_metadata()
        ) as span:
            stream.span = span
            await stream.run(request_iterator)


class _TranscriptionStream:
    def __init__(self, rt: Runtime, context: grpc.aio.ServicerContext) -> None:
        self.rt = rt
        self.context = context
        self.session: TranscriptionSession | None = None
        self.model: ModelStream | None = None
        self.sequence_id = rt.new_sequence_id()
        self.span: trace.Span | None = None
        self._room = asyncio.Event()  # set while the session may send more model requests
        self._room.set()
        self._outbox = Outbox(context, self._charge_send)

    def _charge_send(self, seconds: float) -> None:
        if self.session is not None:
            self.session.charge_send(seconds)

    async def run(
        self, requests: AsyncIterator[transcription_pb2.StreamingTranscribeRequest]
    ) -> None:
        lease: Lease | None = None
        admitted = False
        attrs: dict[str, str] = {"service": "stt"}
        try:
            reader = IdleReader(requests, self.rt.config.limits.idle_timeout_seconds)
            # Read the config before refusing a stream (e.g. DRAINING): a grpcio aio client
            # whose write races the server's status reports INTERNAL instead (grpc/grpc#36066).
            first = await reader.next()
            self.rt.admit()
            admitted = True
            if first is None or first.WhichOneof("request") != "config":
                raise errors.ConfigRequired("the first message of a stream must be its config")
            cfg = resolve(
                first.config,
                self.rt.pool.catalog(),
                self.rt.config.limits,
                default_model=self.rt.config.default_stt_model,
                request_id=self.rt.new_session_id(),
            )
            lease = self.rt.pool.acquire(cfg.model.name)
            attrs = {"service": "stt", "model": cfg.model.name, "replica": lease.replica.name}
            self.rt.telemetry.active_streams.add(1, attrs)
            self.session = TranscriptionSession(
                cfg,
                self.rt.config.limits,
                session_id=self.rt.new_session_id(),
                replica=lease.replica.name,
            )
            if self.span is not None:
                self.span.set_attributes({**attrs, "voxwire.session_id": self.session.session_id})
            self.model = ModelStream(
                self.rt.pool,
                lease,
                metadata=self.rt.telemetry.outgoing_metadata(self.span) if self.span else (),
                response_timeout=self.rt.config.model_response_timeout_seconds,
            )
            await self._send_model([self.session.start()])
            await self._serve(reader, lease)
            finish(self.context, self.session.timings.to_proto())
        except asyncio.CancelledError:
            # The client cancelled or disconnected: free the Triton side now.
            await self._cancel_model()
            raise
        except Exception as exc:  # the one boundary: every failure becomes a status
            error = as_voxwire(exc)
            self.rt.telemetry.errors.add(1, {**attrs, "reason": error.reason})
            if self.span is not None:
                self.span.set_attribute("voxwire.error.reason", error.reason)
            await self._cancel_model()
            timings = self.session.timings.to_proto() if self.session else StageClock().to_proto()
            await abort(self.context, error, timings)
        finally:
            if self.model is not None:
                self.model.cancel()
            if lease is not None:
                lease.release()
                self.rt.telemetry.active_streams.add(-1, attrs)
            if admitted:
                self.rt.leave()

    async def _serve(self, reader: IdleReader, lease: Lease) -> None:
        assert self.session is not None
        limits = self.rt.config.limits
        deadline = time.monotonic() + limits.max_stream_seconds
        client = asyncio.create_task(self._client_pump(reader), name="stt-client")
        model = asyncio.create_task(self._model_pump(), name="stt-model")
        writer = self._outbox.start()
        lost = asyncio.create_task(lease.wait_failed(), name="stt-lease")
        drained = asyncio.create_task(self.rt.wait_drain_expired(), name="stt-drain")
        tasks = {client, model, writer, lost, drained}
        try:
            pending = set(tasks)
            while not model.done():
                done, pending = await asyncio.wait(
                    pending,
                    timeout=deadline - time.monotonic(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    await self._too_long(client, model)
                for task in done:
                    if task in (lost, drained):
                        raise cast(errors.VoxwireError, task.result())
                    task.result()  # re-raise a pump's or the writer's error
            model.result()
        except errors.VoxwireError:
            # Results decided before the failure still reach the client, then the status.
            await self._outbox.flush(1.0)
            raise
        finally:
            for task in tasks - {writer}:
                task.cancel()
            await asyncio.gather(*(tasks - {writer}), return_exceptions=True)
        # The summary is queued: write everything before the trailers go out.
        await self._outbox.flush(limits.idle_timeout_seconds, strict=True)

    async def _too_long(self, client: asyncio.Task[None], model: asyncio.Task[None]) -> None:
        """Maximum duration reached: stop reading, flush pending audio into results, fail."""
        assert self.session is not None
        client.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await client
        await self._send_model(self.session.half_close().to_model)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(model, self.rt.config.model_response_timeout_seconds)
        raise errors.StreamTooLong(
            f"stream reached max_stream_duration {self.rt.config.limits.max_stream_seconds:g} s"
        )

    async def _client_pump(self, reader: IdleReader) -> None:
        assert self.session is not None
        session = self.session
        while not session.done:
            # Backpressure: stop reading while too many model requests are unanswered.
            await self._room.wait()
            msg = await reader.next()
            actions = session.half_close() if msg is None else session.receive(msg)
            for response in actions.to_client:
                self._outbox.put(response)
            await self._send_model(actions.to_model)
            if msg is None:
                return
            if session.inflight >= self.rt.config.limits.max_inflight_requests:
                self._room.clear()

    async def _model_pump(self) -> None:
        assert self.session is not None and self.model is not None
        session = self.session
        timeout = self.rt.config.model_response_timeout_seconds
        while not session.done:
            # Backpressure: a client that does not read its results stops this pump.
            await self._outbox.wait_room()
            resp = await self.model.receive(timeout if session.inflight else None)
            responses = session.model_response(resp)
            for response in responses:
                if response.HasField("result") and response.result.is_final:
                    self.rt.telemetry.record_stages(
                        response.result.timings,
                        {"service": "stt"},
                        span=self.span,
                        event="voxwire.utterance",
                    )
            # Written from this task when the wire is free: a result reaches the client
            # without waiting for the writer task's turn on the event loop.
            await self._outbox.write_through(responses)
            if session.inflight < self.rt.config.limits.max_inflight_requests:
                self._room.set()

    async def _send_model(self, requests: list[ModelRequest]) -> None:
        assert self.session is not None and self.model is not None
        info = self.session.config.model
        for req in requests:
            await self.model.send(
                stt_request(
                    info.name,
                    self.sequence_id,
                    req.audio,
                    control=req.control,
                    start=req.start,
                    end=req.end,
                    batched=info.batched,
                )
            )

    async def _cancel_model(self) -> None:
        """End the Triton sequence (frees its slot) and cancel the call, within the budget."""
        if self.model is None or self.model.closed or self.session is None:
            return
        model, session = self.model, self.session
        if not session.done:
            req = session.cancel_request()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    model.send(
                        stt_request(
                            session.config.model.name,
                            self.sequence_id,
                            req.audio,
                            control=req.control,
                            end=True,
                            batched=session.config.model.batched,
                        )
                    ),
                    CANCEL_BUDGET_S,
                )
        model.cancel()

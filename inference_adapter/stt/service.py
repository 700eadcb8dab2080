"""voxwire.v1.Transcription: the I/O around TranscriptionSession.

Per client stream: one Triton sequence on one ModelStreamInfer call. The stream runner
(``stream_runner.py``) owns the tasks and the ending; this module is the stream's body: the
model pump is the main task, the client pump and the lease watcher are spawned beside it. The
session decides; this module only moves messages.

Ending early (a failure, or the client gone) must free the Triton sequence slot: END + cancel is
written to the call before anything is cancelled (cancelling a task inside a call operation
cancels the call, and Triton would keep the slot until its idle timeout). Once that END is
answered the call is half-closed and ended by Triton (``ModelStream.finish``); it is cancelled
only when the END could not be sent or answered within its budget (``stop``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry import trace

from inference_adapter.boundary import stream_handler
from inference_adapter.runtime import Runtime
from inference_adapter.stream_runner import StreamRunner
from inference_adapter.stt.config import resolve
from inference_adapter.stt.session import ModelRequest, State, TranscriptionSession
from inference_adapter.triton.replicas import Lease
from inference_adapter.triton.stream import ModelStream, SendsStopped
from inference_adapter.triton.tensors import stt_request
from voxwire import errors
from voxwire.timings import StageClock
from voxwire.v1 import timings_pb2, transcription_pb2

Request = transcription_pb2.StreamingTranscribeRequest
Response = transcription_pb2.StreamingTranscribeResponse

# Bound on handing END + cancel to Triton when a stream ends early (issue: within 100 ms).
CANCEL_BUDGET_S = 0.1
# Bound on waiting for Triton to answer that END (it frees the slot when it does; the requests
# queued before it are answered first).
END_ANSWER_BUDGET_S = 2.0


class TranscriptionService:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        return {
            "StreamingTranscribe": stream_handler(
                self.StreamingTranscribe, Response.SerializeToString
            )
        }

    async def StreamingTranscribe(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> None:
        with self._rt.telemetry.stream_span(
            "voxwire.stt.stream", context.invocation_metadata()
        ) as span:
            body = TranscriptionStream(self._rt, span)
            runner = StreamRunner(
                self._rt,
                context,
                requests,
                Request.FromString,
                service="stt",
                span=span,
                on_send=body.charge_send,
            )
            await runner.run(body)


class TranscriptionStream:
    """The body of one StreamingTranscribe stream (see ``StreamBody``)."""

    def __init__(self, rt: Runtime, span: trace.Span) -> None:
        self.rt = rt
        self.span = span
        self.session: TranscriptionSession | None = None
        self.model: ModelStream | None = None
        self.lease: Lease | None = None
        self.sequence_id = rt.new_sequence_id()
        self._room = asyncio.Event()  # set while the session may send more model requests
        self._room.set()
        self._stream: StreamRunner[Request] | None = None
        self._main: asyncio.Task[Any] | None = None
        self._client: asyncio.Task[None] | None = None
        self._attrs: dict[str, str] = {}

    # -- StreamBody -----------------------------------------------------------------------------

    def busy(self) -> bool:
        # After the close the client waits for its last results and sends nothing.
        return self.session is not None and self.session.state is not State.STREAMING

    def timings(self) -> timings_pb2.StageTimings:
        return self.session.timings.to_proto() if self.session else StageClock().to_proto()

    def charge_send(self, seconds: float) -> None:
        if self.session is not None:
            self.session.charge_send(seconds)

    async def serve(self, stream: StreamRunner[Any], first: Request | None) -> None:
        """Start the sequence, then pump model responses until its END is answered."""
        self._stream = stream
        self._main = asyncio.current_task()
        if first is None or first.WhichOneof("request") != "config":
            raise errors.ConfigRequired("the first message of a stream must be its config")
        cfg = resolve(
            first.config,
            self.rt.pool.catalog(),
            self.rt.config.limits,
            default_model=self.rt.config.default_stt_model,
            request_id=self.rt.new_session_id(),
        )
        self.lease = lease = self.rt.pool.acquire(cfg.model.name)
        self._attrs = {"service": "stt", "model": cfg.model.name, "replica": lease.replica.name}
        self.rt.telemetry.sequences.add(1, self._attrs)
        self.session = TranscriptionSession(
            cfg,
            self.rt.config.limits,
            session_id=self.rt.new_session_id(),
            replica=lease.replica.name,
        )
        self.span.set_attributes({**self._attrs, "voxwire.session_id": self.session.session_id})
        self.model = ModelStream(
            self.rt.pool,
            lease,
            metadata=self.rt.telemetry.outgoing_metadata(self.span),
            response_timeout=self.rt.config.model_response_timeout_seconds,
        )
        stream.spawn(self._watch_lease(lease), "lease")
        stream.spawn(self._watch_answers(self.session), "answers")
        await self._send_model([self.session.start()])
        self._client = stream.spawn(self._client_pump(stream), "client")
        await self._model_pump(stream)
        # The sequence has ended (its END answered): end the call as a client that is done,
        # not with a cancel (triton/stream.py).
        await self.model.finish(END_ANSWER_BUDGET_S)

    async def wind_up(self) -> None:
        """Maximum duration: stop reading, turn pending audio into final results."""
        session, model, main = self.session, self.model, self._main
        if session is None or model is None or main is None or main.done():
            return
        if not await self._stop_client(model):
            return  # a write stayed in flight: the END cannot follow it safely
        for request in session.half_close().to_model:
            await model.send_last(self._tensor(request), CANCEL_BUDGET_S)
        await asyncio.wait({main}, timeout=self.rt.config.model_response_timeout_seconds)

    async def stop(self) -> None:
        """END + cancel to Triton before anything is cancelled, then end the call."""
        session, model, main = self.session, self.model, self._main
        if session is None or model is None or model.closed:
            return
        if model.lease.error is not None:
            # The replica failed: nothing would answer an END (a server that comes back has
            # lost its sequences), and the client gets its status within a second.
            model.cancel()
            return
        sends_idle = await self._stop_client(model)
        if not session.done and not model.closed:
            request = session.cancel()  # None: the END is on its way already
            if request is not None and not (
                sends_idle and await model.send_last(self._tensor(request), CANCEL_BUDGET_S)
            ):
                model.cancel()  # nothing that frees the slot could be sent
                return
            if main is not None and not main.done() and not model.reading:
                # The main task is elsewhere (a client write): it would not read the answer,
                # and cancelling it here cannot cancel the Triton call.
                main.cancel()
                await asyncio.wait({main}, timeout=CANCEL_BUDGET_S)
            if main is not None and not main.done():
                await asyncio.wait({main}, timeout=END_ANSWER_BUDGET_S)  # it reads the answer
            else:
                await self._read_until_done(END_ANSWER_BUDGET_S)
        if session.done and (main is None or main.done()):
            await model.finish(CANCEL_BUDGET_S)  # the END was answered: nothing to stop
        else:
            model.cancel()

    def release(self) -> None:
        if self.model is not None and not self.model.closed:
            self.model.cancel()
        if self.lease is not None:
            self.lease.release()
            self.lease = None
            self.rt.telemetry.sequences.add(-1, self._attrs)

    # -- pumps ----------------------------------------------------------------------------------

    async def _client_pump(self, stream: StreamRunner[Request]) -> None:
        assert self.session is not None
        session = self.session
        limit = self.rt.config.limits.max_inflight_requests
        # A close or half-close ends the client's input: nothing after it is read.
        while session.state is State.STREAMING:
            # Backpressure: stop reading while too many model requests are unanswered.
            await self._room.wait()
            msg = await stream.reader.next()
            actions = session.half_close() if msg is None else session.receive(msg)
            for response in actions.to_client:
                stream.outbox.put(response)
            await self._send_model(actions.to_model)
            if session.inflight >= limit:
                self._room.clear()

    async def _model_pump(self, stream: StreamRunner[Request]) -> None:
        assert self.session is not None and self.model is not None
        session, model = self.session, self.model
        limit = self.rt.config.limits.max_inflight_requests
        while not session.done:
            # Backpressure: a client that does not read its results stops this pump.
            await stream.outbox.wait_room()
            # No deadline here: it would cancel the call, and with it the END that frees the
            # sequence slot. Overdue answers are _watch_answers' business.
            resp = await model.receive(None)
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
            await stream.outbox.write_through(responses)
            if session.inflight < limit:
                self._room.set()

    async def _watch_lease(self, lease: Lease) -> None:
        raise await lease.wait_failed()

    async def _watch_answers(self, session: TranscriptionSession) -> None:
        """Fail the stream (alone: the replica may be fine, e.g. a START queued behind busy
        sequence slots) when a model request stays unanswered for the response timeout."""
        timeout = self.rt.config.model_response_timeout_seconds
        while True:
            since = session.unanswered_since()
            now = time.monotonic()
            if since is not None and now - since >= timeout:
                raise errors.BackendUnavailable(
                    f"model server {self.lease.replica.name if self.lease else ''} did not "
                    f"answer within {timeout:g} s"
                )
            await asyncio.sleep(timeout / 4 if since is None else since + timeout - now)

    # -- Triton ---------------------------------------------------------------------------------

    def _tensor(self, req: ModelRequest) -> Any:
        assert self.session is not None
        info = self.session.config.model
        return stt_request(
            info.name,
            self.sequence_id,
            req.audio,
            control=req.control,
            start=req.start,
            end=req.end,
            batched=info.batched,
        )

    async def _send_model(self, requests: list[ModelRequest]) -> None:
        """Raises BackendUnavailable, or SendsStopped when the stream is ending (the session
        then no longer awaits what was not sent)."""
        assert self.model is not None and self.session is not None
        for i, req in enumerate(requests):
            try:
                await self.model.send(self._tensor(req))
            except SendsStopped:
                self.session.unsent(requests[i:])
                raise

    async def _stop_client(self, model: ModelStream) -> bool:
        """End the client pump without cancelling a Triton write in flight. Returns whether no
        write is in flight any more (then the stream's last request may be sent)."""
        sends_idle = await model.stop_sends(CANCEL_BUDGET_S)
        client = self._client
        if client is not None and not client.done():
            client.cancel()
            await asyncio.wait({client}, timeout=CANCEL_BUDGET_S)
        return sends_idle

    async def _read_until_done(self, within_s: float) -> None:
        """Read the answers of the requests in flight (the main task is gone) until the
        sequence has ended, or ``within_s`` passed."""
        assert self.session is not None and self.model is not None
        deadline = time.monotonic() + within_s
        while not self.session.done and not self.model.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                resp = await self.model.receive(remaining)
            except errors.VoxwireError:
                return  # the call ended or went silent
            try:
                self.session.model_response(resp)
            except errors.VoxwireError:
                continue  # an error event before the END: the END still ends the sequence

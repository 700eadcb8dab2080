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

Failover (docs/contract.md, "Failover"): when the replica fails (its call breaks, or its
readiness probe takes it out; never because one request is late), the model pump moves the
stream to a new sequence on another replica that has the model. The session gives the requests
that continue the stream (``TranscriptionSession.fail_over``); a replay task sends them while
the pump already reads the new call, and the client pump sends nothing new until the replay is
out (``_replayed``), so the new sequence gets its input in order. What the client pump decided
before the move is in the replay and is not sent again (``_generation``). The failed call is
cancelled, never half-closed: its replica is gone, and its sequence with it.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry import trace

from inference_adapter.boundary import stream_handler
from inference_adapter.runtime import Runtime
from inference_adapter.stream_runner import StreamRunner
from inference_adapter.stt.config import resolve
from inference_adapter.stt.replay import ReplayPolicy
from inference_adapter.stt.session import ModelRequest, State, TranscriptionSession
from inference_adapter.triton.replicas import Lease
from inference_adapter.triton.stream import ModelStream, SendsStopped
from inference_adapter.triton.tensors import SequenceRequests
from voxwire import errors
from voxwire.timings import StageClock
from voxwire.v1 import stream_pb2, timings_pb2, transcription_pb2

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
        return {"StreamingTranscribe": stream_handler(self.StreamingTranscribe)}

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
        self._requests: SequenceRequests  # of ``sequence_id``, made with its call (``_take``)
        self._room = asyncio.Event()  # set while the session may send more model requests
        self._room.set()
        self._stream: StreamRunner[Request] | None = None
        self._main: asyncio.Task[Any] | None = None
        self._client: asyncio.Task[None] | None = None
        self._attrs: dict[str, str] = {}
        # Set while the client pump may send: cleared while a failover's replay goes out.
        self._replayed = asyncio.Event()
        self._replayed.set()
        self._generation = 0  # the sequence the stream is on (one more per failover)
        self._lease_watch: asyncio.Task[None] | None = None

    # -- StreamBody -----------------------------------------------------------------------------

    def busy(self) -> bool:
        # After the close the client waits for its last results and sends nothing.
        return self.session is not None and self.session.state is not State.STREAMING

    def timings(self) -> timings_pb2.StageTimings:
        return self.session.timings.to_proto() if self.session else StageClock().to_proto()

    def charge_send(self, seconds: float) -> None:
        if self.session is not None:
            self.session.charge_send(seconds)

    def notice(self, notice: stream_pb2.StreamNotice) -> Response | None:
        if self.session is not None:
            return self.session.notice(notice)  # held until `started`, which comes first
        return Response(notice=notice)  # no config yet: nothing can precede it

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
        lease = self.rt.pool.acquire(cfg.model.name)
        self.session = TranscriptionSession(
            cfg,
            self.rt.config.limits,
            session_id=self.rt.new_session_id(),
            replica=lease.replica.name,
            replay=self._replay_policy(),
        )
        self._take(lease)
        self.span.set_attributes({**self._attrs, "voxwire.session_id": self.session.session_id})
        stream.spawn(self._watch_answers(self.session), "answers")
        await self._send_model([self.session.start()])
        self._client = stream.spawn(self._client_pump(stream), "client")
        await self._model_pump(stream)
        # The sequence has ended (its END answered): end the call as a client that is done,
        # not with a cancel (triton/stream.py). The call of the replica that serves it now. In
        # a task of the adapter's: awaited here, a client that left meanwhile had this task
        # cancelled inside it, which cancelled the call (143 of 8,000 fuzz cases).
        assert self.model is not None  # set by _take, replaced by a failover, never unset
        self.model.finish_in(self.rt.calls, END_ANSWER_BUDGET_S, why_not="stt_end_not_ended")

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
            model.cancel("replica_failed")
            return
        sends_idle = await self._stop_client(model)
        if not session.done and not model.closed:
            request = session.cancel()  # None: the END is on its way already
            if request is not None and not (
                sends_idle and await model.send_last(self._tensor(request), CANCEL_BUDGET_S)
            ):
                model.cancel("end_not_sent")  # nothing that frees the slot could be sent
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
            # The END was answered: nothing to stop. Triton ends the call after its half-close,
            # in a task of the adapter's, so the client's status does not wait for it (a 0.1 s
            # budget here cancelled 409 calls in an 8,000-case fuzz run).
            model.finish_in(self.rt.calls, END_ANSWER_BUDGET_S, why_not="stt_stop_not_ended")
        else:
            model.cancel("end_not_answered")

    def release(self) -> None:
        """The stream ended (the runner's last call): its model side goes, and so do the
        references back to the runner."""
        self._release_model()
        # The runner's outbox holds this body's ``charge_send`` and its tasks' frames hold the
        # body: the references back make each stream a cycle, freed only by a full collection
        # (voxwire/gc_policy.py). Its tasks have ended by now (the runner's ``end_tasks``).
        self._stream = None
        self._main = self._client = self._lease_watch = None

    def _release_model(self) -> None:
        """Cancel the model call if it is open and give its lease back."""
        if self.model is not None and not self.model.closed:
            self.model.cancel("stream_released")
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
            if not self._replayed.is_set():
                await self._replayed.wait()  # a failover's replay goes first
            actions = session.half_close() if msg is None else session.receive(msg)
            for response in actions.to_client:
                stream.outbox.put(response)
            try:
                await self._send_model(actions.to_model)
            except SendsStopped:
                return  # the stream is ending: whoever stopped the sends decides its status
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
            try:
                resp = await model.receive(None)
            except errors.BackendUnavailable as exc:
                model = await self._fail_over(stream, model, exc)
                continue
            utterances = session.utterances
            responses = session.model_response(resp)
            if session.utterances != utterances:  # a final among them (not per interim)
                for response in responses:
                    if response.HasField("result") and response.result.is_final:
                        self.rt.telemetry.record_stages(
                            response.result.timings,
                            {"service": "stt"},
                            span=self.span,
                            event="voxwire.utterance",
                        )
            if responses:  # every request's empty final answer brings none
                # Written from this task when the wire is free: a result reaches the client
                # without waiting for the writer task's turn on the event loop.
                await stream.outbox.write_through(responses)
            if session.inflight < limit:
                self._room.set()

    async def _watch_lease(self, model: ModelStream) -> None:
        error = await model.lease.wait_failed()
        if not self._replay_policy().enabled:
            raise error
        # The probe took the replica out: end the call, so that the model pump (whatever it
        # awaits on it) moves the stream (``_fail_over``) or fails it.
        model.cancel("replica_failed")

    # -- failover -------------------------------------------------------------------------------

    def _replay_policy(self) -> ReplayPolicy:
        cfg = self.rt.config
        return ReplayPolicy(
            window_ms=round(cfg.replay_window_seconds * 1000),
            force_final_margin_ms=round(cfg.force_final_margin_seconds * 1000),
            max_failovers=cfg.max_failovers,
            retry_after=self._retry_delay(),
        )

    def _retry_delay(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=self.rt.config.overload_retry_seconds)

    def _take(self, lease: Lease) -> None:
        """Serve the stream from ``lease``: a new call and a watcher of its replica."""
        assert self._stream is not None and self.session is not None
        self.lease = lease
        self._attrs = {
            "service": "stt",
            "model": self.session.config.model.name,
            "replica": lease.replica.name,
        }
        self.rt.telemetry.sequences.add(1, self._attrs)
        info = self.session.config.model
        self._requests = SequenceRequests(info.name, self.sequence_id, batched=info.batched)
        self.model = ModelStream(
            self.rt.pool,
            lease,
            metadata=self.rt.telemetry.outgoing_metadata(self.span),
            response_timeout=self.rt.config.model_response_timeout_seconds,
        )
        if self._lease_watch is not None:
            self._lease_watch.cancel()  # it watched the old replica
        self._lease_watch = self._stream.spawn(self._watch_lease(self.model), "lease")

    async def _fail_over(
        self, stream: StreamRunner[Request], old: ModelStream, error: errors.BackendUnavailable
    ) -> ModelStream:
        """Move the stream off ``old``'s failed replica: a new sequence on another replica,
        the replay sent by a task of its own. Returns the new call. Raises the call's failure
        when the replica did not fail (a late request fails this stream alone), and
        BackendUnavailable when the stream cannot move or no other replica can take it."""
        assert self.session is not None
        error = old.failure or error
        if old is not self.model or not self._replay_policy().enabled:
            raise error
        if not await old.replica_failed(self.rt.config.probe_verdict_seconds):
            raise error
        # No END: the replica is gone or unreachable, and its sequence with it.
        old.cancel("replica_failed")
        model = self.session.config.model.name
        try:
            # Not the replica that just failed, whatever its probe says yet; the others only
            # while their probe finds them ready.
            lease = self.rt.pool.acquire(model, exclude=(old.lease.replica,))
        except errors.VoxwireError as exc:
            raise errors.BackendUnavailable(
                f"{error.message}; no other model server can take the stream ({exc.message})",
                # Waiting helps: a replica that restarts is routed to again.
                retry_delay=exc.retry_delay or self._retry_delay(),
            ) from exc
        try:
            requests = self.session.fail_over(lease.replica.name)
        except errors.BackendUnavailable:
            lease.release()
            raise
        self._release_model()  # the old lease (and its call, cancelled above)
        self.sequence_id = self.rt.new_sequence_id()
        self._take(lease)
        assert self.model is not None
        self._generation += 1
        self._replayed.clear()
        self.rt.telemetry.failovers.add(1, {"service": "stt", "model": model})
        stream.spawn(self._replay(self.model, requests), "replay")
        return self.model

    async def _replay(self, model: ModelStream, requests: list[ModelRequest]) -> None:
        """Send a failover's requests, then let the client pump send again."""
        try:
            await self._send_to(model, requests)
        except SendsStopped:
            pass  # the stream is ending; the session no longer awaits what was not sent
        finally:
            if model is self.model:
                self._replayed.set()

    async def _watch_answers(self, session: TranscriptionSession) -> None:
        """Fail the stream (alone: the replica may be fine, e.g. a START queued behind busy
        sequence slots) when a model request stays unanswered for the response timeout."""
        timeout = self.rt.config.model_response_timeout_seconds
        while True:
            since = session.unanswered_since()
            now = time.monotonic()
            if since is not None and now - since >= timeout:
                if self.lease is not None:
                    self.lease.replica.warn_silent(f"sequence {self.sequence_id}", timeout)
                raise errors.BackendUnavailable(
                    f"model server {self.lease.replica.name if self.lease else ''} did not "
                    f"answer within {timeout:g} s"
                )
            await asyncio.sleep(timeout / 4 if since is None else since + timeout - now)

    # -- Triton ---------------------------------------------------------------------------------

    def _tensor(self, req: ModelRequest) -> bytes:
        """``req`` as a request of the stream's current sequence, serialized."""
        return self._requests.encode(req.audio, req.control, start=req.start, end=req.end)

    async def _send_model(self, requests: list[ModelRequest]) -> None:
        """Send what the session just decided to the stream's current call. Raises
        BackendUnavailable, or SendsStopped when the stream is ending (the session then no
        longer awaits what was not sent)."""
        assert self.model is not None
        await self._send_to(self.model, requests)

    async def _send_to(self, model: ModelStream, requests: list[ModelRequest]) -> None:
        """Send ``requests`` on ``model`` while it is the stream's call. A failover in between
        ends this quietly: the session decided them before it, so its replay holds them; and
        a broken call is the model pump's to fail over (it reads the same call)."""
        assert self.session is not None
        generation = self._generation
        for i, req in enumerate(requests):
            if generation != self._generation:
                return
            try:
                await model.send(self._tensor(req))
            except SendsStopped:
                if generation != self._generation:
                    return
                if model.closed and self._replay_policy().enabled:
                    # The call was cancelled under the stream (its replica was taken out):
                    # the model pump moves the stream, whose replay holds these requests, or
                    # fails it. Not this task's to end.
                    return
                self.session.unsent(requests[i:])
                raise
            except errors.BackendUnavailable:
                if generation != self._generation:
                    return
                if model.broken and self._replay_policy().enabled:
                    # The model pump sees the call end and moves the stream (or fails it, if
                    # the replica turns out fine).
                    model.cancel("call_broken")
                    return
                raise

    async def _stop_client(self, model: ModelStream) -> bool:
        """End the client pump without cancelling a Triton write in flight. Returns whether no
        write is in flight any more (then the stream's last request may be sent)."""
        sends_idle = await model.stop_sends(CANCEL_BUDGET_S)
        client, stream = self._client, self._stream
        if client is not None and not client.done():
            if stream is not None and stream.reader.reading is client:
                # In a client read, which is never cancelled (boundary.ClientReader): what it
                # reads is dropped, and so is the rest; the stream's end takes the task.
                stream.reader.dropping = True
            else:
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

"""One ``ModelStreamInfer`` call to one replica, as an async object with deadlines.

No threads, no callbacks: ``send`` writes a request, ``receive`` reads the next decoded
response. In-band model errors become ModelError (KServe v2 streaming: errors arrive in
``error_message`` and the stream stays open); a failed or silent call becomes
BackendUnavailable for this stream only (a transport failure also asks the pool for a probe,
which decides about the replica).

Cancelling a task while it awaits ``send`` or ``receive`` cancels the whole call (grpc.aio
cancels an RPC whose operation is cancelled), and so does a ``receive`` deadline. So a stream
that must send a last request (STT: END, which frees the Triton sequence slot) reads without a
deadline (it watches for overdue answers apart), stops its tasks through ``stop_sends`` and the
``reading`` flag, sends the END with ``send_last``, and only then cancels anything.

A call whose work is over ends with ``finish_in``: a half-close, then Triton ends the call itself
(its status after the last response), like any client that is done. ``cancel`` (an RST_STREAM)
is kept for work that must stop (a barge-in with audio in flight) and as the fallback when
``finish`` runs out of time: Triton 2.51 crashes under storms of cancelled streaming calls
(``tools/triton_cancel_storm.py``), and before ``finish`` every stream's end was a cancel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TypeAlias

import grpc
from tritonclient.grpc import service_pb2

from inference_adapter.triton.reaper import CallReaper
from inference_adapter.triton.replicas import Lease, ReplicaPool
from inference_adapter.triton.tensors import ModelResponse, parse_response
from voxwire.errors import BackendUnavailable
from voxwire.stream_write import write_unless_ended
from voxwire.watchdog import Watchdog

log = logging.getLogger(__name__)

# Codes of a call that mean the transport to the replica failed (the server or the way to it),
# not that one request was bad: the stream may move to another replica at once. Any failure of
# the call has the pool probe the replica at once; the probe decides whether it is out.
_TRANSPORT_DOWN = frozenset({grpc.StatusCode.UNAVAILABLE})
# A request as the call takes it: serialized already (``SequenceRequests``), or a message.
Request: TypeAlias = "bytes | service_pb2.ModelInferRequest"


class SendsStopped(Exception):
    """The stream is ending: its tasks send nothing more (only ``send_last`` may)."""


class ModelStream:
    def __init__(
        self,
        pool: ReplicaPool,
        lease: Lease,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        response_timeout: float,
    ) -> None:
        self._pool = pool
        self.lease = lease
        self._timeout = response_timeout
        self._write_deadline = Watchdog(response_timeout)
        self._call = lease.replica.stream_infer(tuple(metadata))
        self.closed = False
        # The transport to the replica failed under this call (not a late or refused request):
        # the replica is gone or unreachable, and the stream may move to another one.
        self.transport_failed = False
        # The call ended under the stream, for whatever reason (transport or not); the first
        # failure is kept, as later ones only say that the call is gone.
        self.broken = False
        self.failure: BackendUnavailable | None = None
        # True while a task awaits a response: cancelling that task cancels the call.
        self.reading = False
        # Made only while ``finish`` waits for another task's read to end (not per message).
        self._read_over: asyncio.Future[None] | None = None
        self._sending = 0
        self._sends_idle = asyncio.Event()
        self._sends_idle.set()
        self._sends_stopped = False

    async def send(self, request: Request) -> None:
        """Write one request. Raises BackendUnavailable if the replica does not take it in time,
        SendsStopped once ``stop_sends`` was called."""
        if self._sends_stopped:
            raise SendsStopped("the stream is ending")
        await self._write(request)

    async def _write(self, request: Request) -> None:
        self._sending += 1
        self._sends_idle.clear()
        try:
            # One watchdog timer per call, not a timer per write (voxwire/watchdog.py).
            with self._write_deadline:
                sent = await write_unless_ended(self._call, request)
            if not sent:
                raise await self._ended_under_write()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            raise self._failure(exc) from exc
        except TimeoutError as exc:
            self.closed = True  # grpc.aio cancelled the call with the interrupted write
            raise self._failure(exc, "model server did not accept a request in time") from exc
        except asyncio.CancelledError:
            raise self._cancelled_call() from None
        finally:
            self._sending -= 1
            if not self._sending:
                self._sends_idle.set()

    async def _ended_under_write(self) -> BackendUnavailable:
        """The failure of a call that ended before or while a request was sent, from its real
        status: grpc.aio's own ``write`` would have replaced an UNAVAILABLE (the replica gone)
        with INTERNAL "Internal error from Core" (grpc/grpc#36066, voxwire/stream_write.py),
        and the stream would have waited for the readiness probe instead of moving at once."""
        code = await self._call.code()
        if code is grpc.StatusCode.OK:  # Triton never ends a stream the client has not closed
            self.transport_failed = self.broken = True
            return self._failure(None, "model server ended the stream")
        return self._failure_status(code, await self._call.details())

    async def stop_sends(self, within_s: float) -> bool:
        """Refuse further ``send`` calls and wait (up to ``within_s``) for the one in flight.
        Returns whether no send is in flight any more (its task may then be cancelled)."""
        self._sends_stopped = True
        try:
            await asyncio.wait_for(self._sends_idle.wait(), within_s)
        except TimeoutError:
            return False
        return True

    async def send_last(self, request: Request, within_s: float) -> bool:
        """Send the stream's last request (after ``stop_sends``), within ``within_s``.
        Returns whether it was sent; never raises."""
        try:
            await asyncio.wait_for(self._write(request), within_s)
        except (BackendUnavailable, TimeoutError):
            return False
        return True

    async def receive(self, within_s: float | None) -> ModelResponse:
        """Read the next response; ``within_s`` None waits as long as it takes.

        Raises BackendUnavailable (transport failure, stream ended, or no answer within
        ``within_s``) or ModelError (the model reported an error in-band).
        """
        self.reading = True
        try:
            if within_s is None:  # the hot path: no timer made and cancelled per message
                msg = await self._call.read()
            else:
                async with asyncio.timeout(within_s):
                    msg = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise self._failure(exc) from exc
        except TimeoutError as exc:
            self.closed = True  # grpc.aio cancelled the call with the interrupted read
            why = f"model server did not answer within {within_s:.1f} s"
            assert within_s is not None  # only a read with a deadline times out
            self.lease.replica.warn_silent("a model call", within_s)
            raise self._failure(exc, why) from exc
        except asyncio.CancelledError:
            raise self._cancelled_call() from None
        finally:
            self.reading = False
            if self._read_over is not None and not self._read_over.done():
                self._read_over.set_result(None)
        if msg is grpc.aio.EOF:
            if not self.closed:
                # Triton never ends a stream the client has not half-closed (``finish``): its
                # end is the server's (a shutdown), and the sequence went with it.
                self.transport_failed = self.broken = True
            raise self._failure(None, "model server ended the stream")
        return parse_response(msg)

    async def half_close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                await asyncio.wait_for(self._call.done_writing(), self._timeout)
            except (grpc.aio.AioRpcError, TimeoutError, asyncio.InvalidStateError):
                pass

    def finish_in(
        self, calls: CallReaper, within_s: float, *, why_not: str = "finish_not_ended"
    ) -> asyncio.Task[bool] | None:
        """End a call in a task of ``calls`` (the adapter's, not the stream's: it may outlive
        the stream): half-close, then wait (up to ``within_s``) for Triton to end it, reading
        and dropping what is left. Work still in flight (a TTS unit of a stopped context) runs
        to its end instead of being cancelled (``triton/reaper.py``). The call is taken at once,
        so nothing else ends or cancels it; None when it was closed already.

        A task in a read when this starts keeps it (cancelling it there would cancel the call):
        its read returns with the next answer, and the caller must see to it that the task
        reads no more (its context is gone); then the ending task reads the rest. The call is
        cancelled, counted as ``why_not``, when Triton has not ended it in time, or when the
        ending task is cancelled (a call left neither ended nor cancelled would keep grpc.aio's
        task for it waiting on its status). The task's result: whether the call ended without
        a cancel."""
        if self.closed:
            return None
        self.closed = True
        self._sends_stopped = True
        return calls.spawn(self._finish(within_s, why_not), "finish")

    async def _finish(self, within_s: float, why_not: str) -> bool:
        ended = broke = False
        try:
            async with asyncio.timeout(within_s):
                await self._call.done_writing()
                while True:
                    if self.reading:
                        self._read_over = asyncio.get_running_loop().create_future()
                        await self._read_over
                        continue
                    if await self._call.read() is grpc.aio.EOF:
                        break  # anything read before is an answer nobody waits for any more
                await self._call.code()  # the status: Triton has ended the call
                ended = True
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            broke = True  # ended under us (its replica failed): no cancel goes out
        except TimeoutError:
            pass
        finally:
            if ended:
                self.lease.replica.calls_ended["finished"] += 1
            elif broke:
                self.lease.replica.calls_ended["failed"] += 1
            else:
                # A timeout inside a call operation has cancelled the call already (grpc.aio).
                self._count_cancel(why_not)
                self._call.cancel()
        return ended

    def cancel(self, why: str) -> None:
        """Cancel the call: Triton cancels everything in flight on it. ``why`` is counted
        (``Replica.calls_cancelled``, the ``voxwire.triton.cancels`` metric)."""
        self.closed = True
        self._sends_stopped = True
        if not self._call.done():
            self._count_cancel(why)
            self._call.cancel()

    def _count_cancel(self, why: str) -> None:
        self.lease.replica.calls_ended["cancelled"] += 1
        self.lease.replica.calls_cancelled[why] += 1

    def _cancelled_call(self) -> BaseException:
        """What an operation raises when it ends in CancelledError: this task's cancellation
        goes on; otherwise grpc.aio reports a call that was cancelled before (it raises
        CancelledError for every operation on a locally cancelled call)."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            return asyncio.CancelledError()
        self.closed = True
        return self._failure(None, "the model call was cancelled")

    async def replica_failed(self, within_s: float) -> bool:
        """Whether this call failed because its replica did (the stream may then move to
        another): its transport failed, or the readiness probe took the replica out. A call
        that broke otherwise (an INTERNAL or other status: the replica may still serve) waits
        up to ``within_s`` for the probe, which alone decides (docs/contract.md, "Health"); a
        late answer is never the replica's."""
        if self.lease.error is not None or self.transport_failed:
            return True
        if not self.broken:
            return False
        try:
            async with asyncio.timeout(within_s):
                await self.lease.failed.wait()
        except TimeoutError:
            return False
        return True

    def _failure(self, exc: BaseException | None, why: str = "") -> BackendUnavailable:
        """The error for this stream. A call that broke also has the pool probe the replica
        (the probe decides whether it is out); a timeout concerns this stream alone."""
        if isinstance(exc, grpc.aio.AioRpcError):
            return self._failure_status(exc.code(), exc.details())
        if isinstance(exc, asyncio.InvalidStateError):
            self.broken = True
            why = "the call had ended"
            self._pool.probe_soon(self.lease.replica, why)
        return self._error(why)

    def _failure_status(self, code: grpc.StatusCode, details: str | None) -> BackendUnavailable:
        """The error for a call that ended with ``code``: the pool probes the replica."""
        self.broken = True
        self.transport_failed = self.transport_failed or code in _TRANSPORT_DOWN
        why = f"{code.name}: {details}"
        self._pool.probe_soon(self.lease.replica, why)
        return self._error(why)

    def _error(self, why: str) -> BackendUnavailable:
        replica = self.lease.replica
        if self.lease.error is not None:
            error = self.lease.error
        else:
            error = BackendUnavailable(f"model server {replica.name}: {why}")
        if self.failure is None:
            self.failure = error
        return error

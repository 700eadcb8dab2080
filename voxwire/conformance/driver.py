"""Runs one planned stream against the server and records everything it did.

One writer (this coroutine) and one reader task per stream. For each message sent the driver
notes how many responses had arrived by then (a "mark"): ordering promises ("results before the
ack", "nothing after the cancel ack", "never beyond the audio sent") are checked on that.
Every wait has a deadline; the call itself has one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from voxwire.conformance.plan import Gate, Plan, Reading, Send, Sleep, Wait
from voxwire.stream_write import CORE_RACE_DETAILS, write_unless_ended
from voxwire.v1 import synthesis_pb2, transcription_pb2
from voxwire.wire import serialized

METHODS = {
    "stt": "/voxwire.v1.Transcription/StreamingTranscribe",
    "tts": "/voxwire.v1.Synthesis/StreamingSynthesize",
}
RESPONSES: dict[str, Any] = {
    "stt": transcription_pb2.StreamingTranscribeResponse,
    "tts": synthesis_pb2.StreamingSynthesizeResponse,
}
# A case that expects an error leaves its stream open this long for the server to end it,
# then half-closes (so a server that accepted the bad input ends the stream, and says OK).
SETTLE_S = 3.0


@dataclass(slots=True)
class Outcome:
    """What one stream did."""

    responses: list[Any] = field(default_factory=list)
    marks: list[tuple[int, Send]] = field(default_factory=list)  # (responses by then, sent)
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    details: str = ""
    trailers: dict[str, str | bytes] = field(default_factory=dict)
    write_failed: bool = False
    missed_wait: str = ""  # the wait that timed out, if any
    deadline_hit: bool = False  # the kit's own deadline ended the call
    ended: bool = False  # the response stream has ended
    elapsed_s: float = 0.0

    def kinds(self, context: str | None = None) -> list[str]:
        return [
            r.WhichOneof("response")
            for r in self.responses
            if context is None or r.context_id == context
        ]

    def of(self, kind: str, context: str | None = None) -> list[tuple[int, Any]]:
        """(index, payload) of every response of ``kind`` (for ``context``)."""
        return [
            (i, getattr(r, kind))
            for i, r in enumerate(self.responses)
            if r.WhichOneof("response") == kind and (context is None or r.context_id == context)
        ]

    def audio_ms_before(self, index: int) -> int:
        """STT: the audio ms the kit had sent when response ``index`` arrived."""
        sent = 0
        for mark, send in self.marks:
            if mark <= index:
                sent = max(sent, send.audio_ms)
        return sent

    @property
    def rpc_race(self) -> bool:
        """grpc/grpc#36066: a write after the server's status replaced it with INTERNAL (only
        where ``write_unless_ended`` must fall back on ``call.write``, see voxwire.stream_write)."""
        return (
            self.write_failed
            and self.code is grpc.StatusCode.INTERNAL
            and CORE_RACE_DETAILS in self.details
        )


async def run_stream(
    channel: grpc.aio.Channel, plan: Plan, *, timeout_s: float, settle_s: float = SETTLE_S
) -> Outcome:
    """Send ``plan`` on a new stream and read the stream to its end (never raises for the
    server's behaviour: everything is in the Outcome). A case that expects an error gets
    ``settle_s`` for the server to end the stream before the kit half-closes."""
    kind = plan.case.kind
    method = channel.stream_stream(
        METHODS[kind],
        request_serializer=serialized,
        response_deserializer=RESPONSES[kind].FromString,
    )
    started = time.monotonic()
    deadline = started + timeout_s
    call = method(timeout=timeout_s)
    out = Outcome()
    arrived, reading = asyncio.Event(), asyncio.Event()
    reading.set()
    reader = asyncio.create_task(_read(call, out, arrived, reading), name="conformance-reader")
    try:
        await _write(call, plan, out, (arrived, reading), deadline)
        reading.set()  # whatever the steps did, the rest of the stream is read
        await _end(call, plan, reader, deadline, settle_s)
    finally:
        if not reader.done():
            call.cancel()
            out.deadline_hit = True
        await asyncio.gather(reader, return_exceptions=True)
    out.code = await call.code()
    out.details = await call.details() or ""
    out.trailers = dict(await call.trailing_metadata() or ())
    out.elapsed_s = time.monotonic() - started
    if out.code is grpc.StatusCode.DEADLINE_EXCEEDED and out.elapsed_s >= timeout_s * 0.98:
        out.deadline_hit = "grpc-status-details-bin" not in out.trailers
    return out


async def _read(call: Any, out: Outcome, arrived: asyncio.Event, reading: asyncio.Event) -> None:
    """Read every response, pausing while ``reading`` is clear (a client that stops reading)."""
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
        while True:
            await reading.wait()
            response = await call.read()
            if response is grpc.aio.EOF:
                break
            out.responses.append(response)
            arrived.set()
    out.ended = True
    arrived.set()


async def _write(
    call: Any,
    plan: Plan,
    out: Outcome,
    events: tuple[asyncio.Event, asyncio.Event],
    deadline: float,
) -> None:
    arrived, reading = events
    last_mark = 0
    write = _plain_write if plan.case.writer == "plain" else write_unless_ended
    for action in plan.actions:
        if call.done():
            return
        if isinstance(action, Sleep):
            await asyncio.sleep(max(0.0, min(action.seconds, deadline - time.monotonic())))
        elif isinstance(action, Reading):
            if action.on:
                reading.set()
            else:
                reading.clear()
        elif isinstance(action, Gate):
            action.reached.set()
            if not await _hold(call, action, deadline):
                out.write_failed = True
                return
        elif isinstance(action, Wait):
            if not await _wait_for(out, arrived, _matcher(action), last_mark, deadline):
                out.missed_wait = action.kind + (f" for {action.context}" if action.context else "")
                return
        else:
            last_mark = len(out.responses)
            out.marks.append((last_mark, action))
            try:
                sent = await write(call, action.message)
            except (asyncio.InvalidStateError, grpc.aio.UsageError, grpc.aio.AioRpcError):
                sent = False
            if not sent:
                out.write_failed = True
                return


async def _plain_write(call: Any, message: Any) -> bool:
    """grpc.aio's own write (a case with ``writer = "plain"``): a write under way when the
    server's status comes replaces the status with INTERNAL (grpc/grpc#36066)."""
    await call.write(message)
    return True


async def _hold(call: Any, gate: Gate, deadline: float) -> bool:
    """Wait for the gate's ``go`` (or the deadline), keeping the stream alive. False when a
    write failed (the server ended the stream)."""
    while not gate.go.is_set() and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(gate.every_s, max(0.0, deadline - time.monotonic()))):
                await gate.go.wait()
        if not gate.go.is_set() and gate.keep_alive is not None and not call.done():
            try:
                if not await write_unless_ended(call, gate.keep_alive):
                    return False
            except (asyncio.InvalidStateError, grpc.aio.UsageError):
                return False
    return True


def _matcher(wait: Wait) -> Callable[[Any], bool]:
    def match(response: Any) -> bool:
        if response.WhichOneof("response") != wait.kind:
            return False
        return wait.context is None or response.context_id == wait.context

    return match


async def _wait_for(
    out: Outcome, arrived: asyncio.Event, match: Callable[[Any], bool], since: int, deadline: float
) -> bool:
    """True once a response after index ``since`` matches; False at the deadline or the end."""
    while True:
        if any(match(r) for r in out.responses[since:]):
            return True
        if out.ended:
            return False
        arrived.clear()
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await arrived.wait()
        except TimeoutError:
            return False


async def _end(
    call: Any, plan: Plan, reader: asyncio.Task[None], deadline: float, settle_s: float
) -> None:
    """Half-close (at once, or after the settle time when an error is expected), then wait for
    the server to end the stream, within the deadline."""
    mode = plan.case.half_close
    if mode == "settle":
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, min(settle_s, deadline - time.monotonic()))):
                await asyncio.shield(reader)
    if mode != "never" and not call.done() and not reader.done():
        with contextlib.suppress(
            grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError
        ):
            await call.done_writing()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            await asyncio.shield(reader)

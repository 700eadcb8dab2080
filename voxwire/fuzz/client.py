"""Run one fuzz case against a server and record what came back.

Requests go out as raw bytes through a grpc.aio call with identity serializers (so corrupt
messages reach the server as they are); responses come back raw and are parsed only for valid
streams, which the contract oracle checks. Every wait has a deadline: a stream whose status does
not arrive within ``status_timeout_s`` is recorded as having none.

grpc/grpc#36066: a grpc.aio client whose write fails because the server already ended the call
may report INTERNAL "Internal error from Core" instead of the server's status. The client writes
with ``voxwire.stream_write.write_unless_ended``, which keeps the server's status; what still
looks like the race (a grpcio without the internals it uses, or the CANCELLED form) is told
apart (``core_36066``) and never blamed on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2

from voxwire.fuzz.cases import Case
from voxwire.fuzz.oracle import SynthesisOracle, TranscriptionOracle
from voxwire.stream_write import CORE_RACE_DETAILS, write_unless_ended
from voxwire.v1 import synthesis_pb2, transcription_pb2

DETAILS_KEY = "grpc-status-details-bin"
TIMINGS_KEY = "voxwire-timings-bin"
# What grpc.aio reports instead of the server's status when a client write races it
# (grpc/grpc#36066): INTERNAL from the failed batch, or the call it cancelled itself.
_RACE_STATUSES = {
    ("INTERNAL", CORE_RACE_DETAILS),
    ("CANCELLED", "Locally cancelled by application!"),
}


@dataclass(slots=True)
class Outcome:
    """What one stream got. ``verdict`` classifies it (see ``classify``)."""

    index: int
    service: str
    family: str
    valid: bool
    got_status: bool = False
    code: str = ""
    details: str = ""
    reason: str = ""
    retryable: str = ""
    trailers: bool = False  # the timing trailers arrived
    write_failed: bool = False
    responses: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    verdict: str = ""


def _rich(trailers: tuple[tuple[str, str | bytes], ...]) -> tuple[str, str]:
    """(reason, retryable) from the google.rpc.Status in the trailers ('' when absent)."""
    for key, value in trailers:
        if key == DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info.reason, info.metadata.get("retryable", "")
    return "", ""


async def _write_all(call: grpc.aio.StreamStreamCall, case: Case, out: Outcome) -> bool:
    """Write the case's messages; True when the client cut the stream (cancel/disconnect)."""
    cut = case.ending in ("cancel", "disconnect")
    try:
        for i, message in enumerate(case.messages):
            if cut and i == case.cut_after:
                return True
            if not await write_unless_ended(call, message):
                out.write_failed = True  # the server ended the call: its status stands
                return False
        if cut:
            return True
        if case.ending == "half_close":
            await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
        out.write_failed = True  # the server ended the call while we were writing
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # our own task is being cancelled (the status deadline)
        # grpc.aio cancels the call itself when a write races the server's status (the
        # CANCELLED "Locally cancelled" form of grpc/grpc#36066): a failed write, not ours.
        out.write_failed = True
    return False


async def run_case(
    channel: grpc.aio.Channel, case: Case, *, status_timeout_s: float, own_channel: bool = False
) -> Outcome:
    """Run ``case`` on ``channel`` (closed afterwards when ``own_channel``)."""
    out = Outcome(case.index, case.service, case.family, case.valid)
    t0 = time.monotonic()
    multi = channel.stream_stream(case.method, request_serializer=None, response_deserializer=None)
    call = multi(timeout=case.deadline_s or status_timeout_s * 2)
    raw: list[bytes] = []

    async def read() -> None:
        # grpc.aio raises CancelledError from a call the client cancelled: that ends the read.
        with contextlib.suppress(
            grpc.aio.AioRpcError, asyncio.InvalidStateError, asyncio.CancelledError
        ):
            async for message in call:
                raw.append(message)

    reader = asyncio.create_task(read())
    try:
        async with asyncio.timeout(status_timeout_s):
            if await _write_all(call, case, out):
                if case.ending == "disconnect":
                    await channel.close()
                else:
                    call.cancel()
            await reader
            code = await call.code()
            out.got_status = True
            out.code = code.name
            out.details = (await call.details()) or ""
            trailers = tuple(await call.trailing_metadata() or ())
            out.reason, out.retryable = _rich(trailers)
            out.trailers = any(k == TIMINGS_KEY for k, _ in trailers)
    except TimeoutError:
        out.got_status = False
    finally:
        call.cancel()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        if own_channel:
            await channel.close()
    out.responses = len(raw)
    out.seconds = time.monotonic() - t0
    if case.valid:
        out.violations = check_valid(case, raw, out.code == "OK")
    out.verdict = classify(case, out)
    return out


def check_valid(case: Case, raw: list[bytes], ok: bool) -> list[str]:
    """The oracle's verdict on a valid stream (its requests and raw responses)."""
    oracle: TranscriptionOracle | SynthesisOracle
    if case.service == "stt":
        stt = TranscriptionOracle()
        for m in case.messages:
            stt.request(transcription_pb2.StreamingTranscribeRequest.FromString(m))
        for r in raw:
            stt.response(transcription_pb2.StreamingTranscribeResponse.FromString(r))
        oracle = stt
    else:
        tts = SynthesisOracle()
        for m in case.messages:
            tts.request(synthesis_pb2.StreamingSynthesizeRequest.FromString(m))
        for r in raw:
            tts.response(synthesis_pb2.StreamingSynthesizeResponse.FromString(r))
        oracle = tts
    oracle.end(ok)
    return oracle.violations


def classify(case: Case, out: Outcome) -> str:
    """One verdict per stream:

    no_status     no status within the deadline (a hung stream: a server defect)
    crash         UNKNOWN (an exception escaped the handler) or reason INTERNAL (a server fault)
    core_36066    INTERNAL "Internal error from Core" (or CANCELLED "Locally cancelled", the
                  call grpc.aio cancelled itself) after a client write failed because the server
                  had ended the call: the client library's bug, the server's status is unknown
    client_ended  a status without a reason on a call the client cancelled or dropped, or
                  DEADLINE_EXCEEDED from the client's own deadline
    grpc_limit    RESOURCE_EXHAUSTED "Received message larger than max": gRPC core refused a
                  message over the server's receive limit before the server saw it (the
                  contract documents this; the server cannot attach a reason to it)
    no_reason     another non-OK status without an ErrorInfo reason
    disturbed     a valid stream that did not end OK or broke the contract
    ok            a valid stream that completed correctly, or a hostile one ended OK
    rejected      a hostile stream refused with a status and its reason
    """
    if not out.got_status:
        return "no_status"
    # The client never cancels a call before its status unless the case says so: a local
    # cancellation on another case is grpc.aio's own, after a write or read raced the status.
    library = out.write_failed or out.code == "CANCELLED"
    if not out.reason and library and case.ending not in ("cancel", "disconnect"):
        if (out.code, out.details) in _RACE_STATUSES:
            return "core_36066"
    if out.code == "UNKNOWN" or out.reason == "INTERNAL":
        return "crash"
    if case.ending in ("cancel", "disconnect") and not out.reason:
        return "client_ended"  # the client dropped the call: its status is a local one
    if case.ending == "wait" and out.code == "DEADLINE_EXCEEDED" and not out.reason:
        return "client_ended"  # the client's own deadline
    if case.valid:
        return "ok" if out.code == "OK" and not out.violations else "disturbed"
    if out.code == "OK":
        return "ok"
    if (
        not out.reason
        and out.code == "RESOURCE_EXHAUSTED"
        and "Received message larger than max" in (out.details or "")
    ):
        return "grpc_limit"
    return "rejected" if out.reason else "no_reason"

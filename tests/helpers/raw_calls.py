"""Streaming calls with raw request bytes, as a hostile or broken client makes them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

from localstack.client import StreamOutcome, collect
from voxwire.stream_write import write_unless_ended

TRANSCRIBE = "/voxwire.v1.Transcription/StreamingTranscribe"
SYNTHESIZE = "/voxwire.v1.Synthesis/StreamingSynthesize"


@dataclass(frozen=True)
class RawOutcome:
    code: grpc.StatusCode
    details: str
    reason: str  # ErrorInfo.reason, "" without one
    violations: int
    trailer_bytes: int  # every trailer's key and value
    responses: int


def outcome_of(code, details, trailers, responses: int) -> RawOutcome:
    reason, violations = "", 0
    raw = dict(trailers).get("grpc-status-details-bin")
    if raw:
        for detail in status_pb2.Status.FromString(raw).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = len(bad.field_violations)
    size = sum(len(k) + len(v) for k, v in trailers)
    return RawOutcome(code, details or "", reason, violations, size, responses)


async def raw_stream(
    channel: grpc.aio.Channel,
    method: str,
    messages: Sequence[bytes],
    *,
    deadline_s: float = 10.0,
    half_close: bool = True,
) -> RawOutcome:
    """Write ``messages`` as they are, then half-close (unless told not to); read to the end."""
    call = channel.stream_stream(method)(timeout=deadline_s)

    async def write() -> None:
        # A plain write racing the server's refusal would turn it into INTERNAL (grpc#36066).
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            for message in messages:
                if not await write_unless_ended(call, message):
                    return
            if half_close and not call.done():
                await call.done_writing()

    writer = asyncio.create_task(write())
    out = await collect(call)
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    return outcome_of(out.code, out.details, tuple(out.trailers.items()), len(out.responses))


async def read_rest(call: grpc.aio.StreamStreamCall) -> StreamOutcome:
    """``collect`` for a call read with ``read()`` (grpc.aio allows one reading style per call)."""
    out = StreamOutcome()
    try:
        while (response := await call.read()) is not grpc.aio.EOF:
            out.responses.append(response)
    except grpc.aio.AioRpcError:
        pass
    out.code = await call.code()
    out.details = await call.details() or ""
    out.trailers = dict(await call.trailing_metadata() or ())
    return out


async def bytes_taken_unread(
    channel: grpc.aio.Channel,
    first: bytes,
    chunks: Sequence[bytes],
    *,
    metadata: Sequence[tuple[str, str]] = (),
    within_s: float = 2.0,
) -> int:
    """Open a transcription stream with the serialized request ``first``, then write
    ``chunks`` (serialized audio requests), over and over, as fast as the server takes them and
    without reading a response, for ``within_s``: how many bytes of them the server took. The
    call is cancelled after."""
    call = channel.stream_stream(TRANSCRIBE)(metadata=tuple(metadata) or None)
    taken = 0
    try:
        await call.write(first)
        async with asyncio.timeout(within_s):
            for chunk in itertools.cycle(chunks):
                await call.write(chunk)
                taken += len(chunk)
    except TimeoutError:
        pass
    finally:
        call.cancel()
    return taken


async def plain_burst_after_a_bad_chunk(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = (), chunks: int = 320
) -> RawOutcome:
    """A plain grpc.aio client (``call.write``, not ``write_unless_ended``): a valid bench_stt
    config, 3 bytes of PCM16 (MISALIGNED_AUDIO), then ``chunks`` 100 ms chunks (320: 1 MiB,
    16 windows) as fast as the call takes them, and its half-close; it reads its responses
    meanwhile, as every client must: gRPC gives a call's status to a client only after the
    responses before it were read (a ``started`` the server sent before it refused the chunk,
    left unread, kept the status from this client until its deadline). How the call ended."""
    from voxwire.v1 import audio_pb2, transcription_pb2

    req = transcription_pb2.StreamingTranscribeRequest
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000)
    config = req(config=transcription_pb2.TranscriptionConfig(model="bench_stt", audio_format=fmt))
    chunk = req(audio=bytes(3200)).SerializeToString()
    call = channel.stream_stream(TRANSCRIBE)(metadata=metadata, timeout=30)
    reading = asyncio.create_task(read_rest(call))
    try:
        await call.write(config.SerializeToString())
        await call.write(req(audio=b"\x00\x00\x00").SerializeToString())
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            for _ in range(chunks):
                await call.write(chunk)
            await call.done_writing()  # the call ended under the writes: its status says why
        async with asyncio.timeout(20):
            out = await reading
    finally:
        reading.cancel()
        call.cancel()
    return outcome_of(out.code, out.details, tuple(out.trailers.items()), len(out.responses))

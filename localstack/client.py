"""A small asyncio client of the voxwire contract, for the demo, the benchmark and the tests.

It drives the real gRPC API (grpc.aio, generated stubs) and collects what came back,
including the timing trailers.
"""

from __future__ import annotations

import asyncio
import contextlib
import wave
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from voxwire.audio.formats import sample_bytes
from voxwire.stream_write import write_unless_ended
from voxwire.timings import SERVER_TIMING_TRAILER, TIMINGS_TRAILER
from voxwire.v1 import (
    audio_pb2,
    synthesis_pb2,
    synthesis_pb2_grpc,
    timings_pb2,
    transcription_pb2,
    transcription_pb2_grpc,
)


@dataclass(slots=True)
class StreamOutcome:
    """Everything a stream returned: responses, status, trailers."""

    responses: list = field(default_factory=list)
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    trailers: dict[str, str | bytes] = field(default_factory=dict)

    @property
    def timings(self) -> timings_pb2.StageTimings:
        return timings_pb2.StageTimings.FromString(self.trailers[TIMINGS_TRAILER])  # type: ignore[arg-type]

    @property
    def server_timing(self) -> str:
        return str(self.trailers.get(SERVER_TIMING_TRAILER, ""))

    def of(self, kind: str) -> list:
        return [getattr(r, kind) for r in self.responses if r.WhichOneof("response") == kind]


async def collect(call: grpc.aio.StreamStreamCall) -> StreamOutcome:
    """Read a call to its end (never raises for a failed status: it is in the outcome)."""
    out = StreamOutcome()
    try:
        async for response in call:
            out.responses.append(response)
    except grpc.aio.AioRpcError:
        pass
    out.code = await call.code()
    out.details = await call.details() or ""
    out.trailers = dict(await call.trailing_metadata() or ())
    return out


def read_wav(path: Path) -> tuple[bytes, int]:
    """(PCM s16le mono bytes, rate) of a 16-bit mono WAV. Raises ValueError otherwise."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"{path}: need 16-bit mono PCM")
        return wav.readframes(wav.getnframes()), wav.getframerate()


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def chunks(data: bytes, size: int) -> Iterable[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def transcribe(
    channel: grpc.aio.Channel,
    audio: bytes,
    audio_format: audio_pb2.AudioFormat,
    *,
    model: str = "",
    chunk_ms: int = 100,
    realtime: bool = False,
    interim_results: bool = True,
    word_timestamps: bool = True,
    metadata: tuple[tuple[str, str], ...] = (),
    deadline_s: float = 60.0,
) -> StreamOutcome:
    """Stream ``audio`` in ``chunk_ms`` chunks (paced at real time if asked), then half-close."""
    bytes_per_frame = sample_bytes(audio_format.encoding) * (audio_format.channels or 1)
    chunk_bytes = audio_format.sample_rate_hz * chunk_ms // 1000 * bytes_per_frame

    stub = transcription_pb2_grpc.TranscriptionStub(channel)
    call = stub.StreamingTranscribe(metadata=metadata, timeout=deadline_s)
    messages = [
        transcription_pb2.StreamingTranscribeRequest(
            config=transcription_pb2.TranscriptionConfig(
                model=model,
                audio_format=audio_format,
                interim_results=interim_results,
                word_timestamps=word_timestamps,
            )
        ),
        *(
            transcription_pb2.StreamingTranscribeRequest(audio=c)
            for c in chunks(audio, chunk_bytes)
        ),
    ]
    writer = asyncio.create_task(
        write_all(call, messages, pace_s=chunk_ms / 1000 if realtime else 0.0)
    )
    outcome = await collect(call)
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    return outcome


async def write_all(
    call: grpc.aio.StreamStreamCall, messages: Iterable, *, pace_s: float = 0.0
) -> None:
    """Write ``messages`` then half-close, stopping as soon as the call has ended.

    The writes leave the server's status as it was sent when the server ends the call first
    (``write_unless_ended``; a plain write racing it turns it into INTERNAL "Internal error
    from Core", grpc/grpc#36066).
    """
    for i, message in enumerate(messages):
        if i and pace_s and not call.done():
            await asyncio.sleep(pace_s)
        if not await write_unless_ended(call, message):
            return
    if not call.done():
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await call.done_writing()


async def synthesize(
    channel: grpc.aio.Channel,
    text: str,
    *,
    model: str = "",
    output_format: audio_pb2.AudioFormat | None = None,
    word_timestamps: bool = True,
    context_id: str = "c1",
    deadline_s: float = 60.0,
) -> StreamOutcome:
    """One context: open, append ``text``, close, half-close; collect everything."""
    fmt = output_format or audio_pb2.AudioFormat(
        encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=24000
    )
    req = synthesis_pb2.StreamingSynthesizeRequest
    messages = [
        req(
            context_id=context_id,
            open=synthesis_pb2.SynthesisContextConfig(
                model=model, output_format=fmt, word_timestamps=word_timestamps
            ),
        ),
        req(context_id=context_id, append=synthesis_pb2.AppendText(text=text)),
        req(context_id=context_id, close=synthesis_pb2.CloseContext()),
    ]
    stub = synthesis_pb2_grpc.SynthesisStub(channel)
    return await collect(stub.StreamingSynthesize(iter(messages), timeout=deadline_s))


def transcript(outcome: StreamOutcome) -> str:
    """The final results joined in order."""
    return " ".join(r.transcript for r in outcome.of("result") if r.is_final and r.transcript)

"""The ``grpc`` target: any server of the ``voxwire.v1`` contract (docs/contract.md).

One grpc.aio channel per worker carries every stream. STT: ``StreamingTranscribe`` with the
config first, audio messages, then ``close`` and a half-close. TTS: ``StreamingSynthesize``
with one context per turn. The stream's end reads the status, the voxwire reason from the
``grpc-status-details-bin`` trailer (google.rpc.Status with ErrorInfo) and the stage timings
from ``voxwire-timings-bin``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from loadtest.events import (
    CONNECT_FAILED,
    Audio,
    ContextDone,
    ContextFailed,
    ContextOpened,
    Ended,
    Event,
    Notice,
    Result,
    Started,
    notice_kind,
)
from loadtest.targets.base import SttOptions, TtsOptions
from voxwire.stream_write import write_unless_ended
from voxwire.timings import EDGE_STAGES, STAGES, TIMINGS_TRAILER
from voxwire.v1 import errors_pb2, synthesis_pb2, synthesis_pb2_grpc, timings_pb2
from voxwire.v1 import transcription_pb2 as stt_pb2
from voxwire.v1 import transcription_pb2_grpc as stt_grpc

_DETAILS = "grpc-status-details-bin"
# How grpc core details a call that never reached a server: nothing listening or refused
# ("failed to connect to all addresses; last error: ..."), or a name that does not resolve
# ("DNS resolution failed ...", "errors resolving ..."). Its status is UNAVAILABLE either way.
_NOT_CONNECTED = ("failed to connect to all addresses", "DNS resolution failed", "errors resolving")
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]


def stages_from_trailers(trailers: Any) -> dict[str, int]:
    """The ``voxwire-timings-bin`` trailer as {stage: µs} (plus first and total)."""
    raw = dict(trailers or ()).get(TIMINGS_TRAILER)
    if not isinstance(raw, bytes):
        return {}
    return stages_from_timings(timings_pb2.StageTimings.FromString(raw))


def stages_from_timings(msg: timings_pb2.StageTimings) -> dict[str, int]:
    """A StageTimings message (a trailer, or a gateway summary's ``timings``) as
    {stage: µs}, plus first and total."""
    out = {name: int(getattr(msg, fld)) for name, fld in STAGES.items()}
    # An edge in front (the gateway) adds its own stages; absent (zero) for a bare adapter.
    out |= {name: int(getattr(msg, fld)) for name, fld in EDGE_STAGES.items() if getattr(msg, fld)}
    if msg.HasField("first_response_us"):
        out["first"] = msg.first_response_us
    out["total"] = msg.total_us
    return out


def reason_from_trailers(trailers: Any) -> str:
    """The ErrorInfo reason of a failed call's rich status ('' when there is none)."""
    raw = dict(trailers or ()).get(_DETAILS)
    if not isinstance(raw, bytes):
        return ""
    with contextlib.suppress(Exception):
        for detail in status_pb2.Status.FromString(raw).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return str(info.reason)
    return ""


def connect_reason(code: grpc.StatusCode, details: str | None) -> str:
    """``CONNECT_FAILED`` for a call that could not connect, '' otherwise: the gRPC status
    stays UNAVAILABLE, the reason is the one every target gives that cause."""
    if code == grpc.StatusCode.UNAVAILABLE and (details or "").startswith(_NOT_CONNECTED):
        return CONNECT_FAILED
    return ""


def retry_delay_from_trailers(trailers: Any) -> int | None:
    """The RetryInfo delay (ms) of a failed call's rich status, None when it has none."""
    raw = dict(trailers or ()).get(_DETAILS)
    if not isinstance(raw, bytes):
        return None
    with contextlib.suppress(Exception):
        for detail in status_pb2.Status.FromString(raw).details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return int(info.retry_delay.ToMilliseconds())
    return None


class _Call:
    """A bidi call's common part: safe writes, and the end as an ``Ended`` event."""

    def __init__(self, call: Any) -> None:
        self.call = call

    async def write(self, message: Any) -> None:
        # A plain write racing the server's status makes grpcio replace it with INTERNAL
        # (grpc/grpc#36066); this one leaves it alone. The end arrives as Ended.
        with contextlib.suppress(grpc.aio.UsageError, RuntimeError):
            await write_unless_ended(self.call, message)

    async def done_writing(self) -> None:
        if not self.call.done():
            with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError):
                await self.call.done_writing()

    async def read(self) -> Any | None:
        """The next message, or None at the end of the call (failed or not)."""
        try:
            message = await self.call.read()
        except grpc.aio.AioRpcError:
            return None
        return None if message is grpc.aio.EOF else message

    async def ended(self) -> Ended:
        code = await self.call.code()
        trailers = await self.call.trailing_metadata()
        at = time.monotonic()
        if code == grpc.StatusCode.OK:
            return Ended(at, code.name, "", stages_from_trailers(trailers))
        details = await self.call.details()
        return Ended(
            at,
            code.name,
            reason_from_trailers(trailers) or connect_reason(code, details),
            stages_from_trailers(trailers),
            retry_delay_from_trailers(trailers),
            details or "",
        )

    def cancel(self) -> None:
        self.call.cancel()


class VoxwireStt(_Call):
    async def send_audio(self, pcm: bytes) -> None:
        await self.write(stt_pb2.StreamingTranscribeRequest(audio=pcm))

    async def finish(self) -> None:
        await self.write(stt_pb2.StreamingTranscribeRequest(close=stt_pb2.CloseStream()))
        await self.done_writing()

    async def next_event(self) -> Event:
        while (message := await self.read()) is not None:
            at = time.monotonic()
            kind = message.WhichOneof("response")
            if kind == "result":
                r = message.result
                return Result(at, r.is_final, r.transcript, r.end_ms)
            if kind == "started":
                return Started(at)
            if kind == "notice":
                return Notice(at, notice_kind(message.notice.kind))
        return await self.ended()


class VoxwireTts(_Call):
    def __init__(self, call: Any, options: TtsOptions) -> None:
        super().__init__(call)
        self._config = synthesis_pb2.SynthesisContextConfig(
            model=options.model, voice=options.voice, output_format=options.audio_format
        )

    async def open_context(self, context_id: str) -> None:
        request = synthesis_pb2.StreamingSynthesizeRequest
        await self.write(request(context_id=context_id, open=self._config))

    async def append(self, context_id: str, text: str) -> None:
        append = synthesis_pb2.AppendText(text=text)
        await self.write(
            synthesis_pb2.StreamingSynthesizeRequest(context_id=context_id, append=append)
        )

    async def close_context(self, context_id: str) -> None:
        close = synthesis_pb2.CloseContext()
        await self.write(
            synthesis_pb2.StreamingSynthesizeRequest(context_id=context_id, close=close)
        )

    async def finish(self) -> None:
        await self.done_writing()

    async def next_event(self) -> Event:
        while (message := await self.read()) is not None:
            at = time.monotonic()
            kind, cid = message.WhichOneof("response"), message.context_id
            if kind == "audio":
                a = message.audio
                return Audio(at, cid, float(a.start_ms), float(a.duration_ms))
            if kind == "opened":
                return ContextOpened(at, cid)
            if kind == "done":
                return ContextDone(at, cid)
            if kind == "cancelled":
                return ContextFailed(at, cid, "CANCELLED")
            if kind == "error":
                reason = message.error.error.reason
                name = _reason_name(reason)
                return ContextFailed(at, cid, name, message.error.error.message)
            if kind == "notice":
                return Notice(at, notice_kind(message.notice.kind), cid)
        return await self.ended()


def _reason_name(value: errors_pb2.ErrorReason.ValueType) -> str:
    name = errors_pb2.ErrorReason.Name(value) if value else "UNSPECIFIED"
    return name.removeprefix("ERROR_REASON_")


class VoxwireTarget:
    name = "grpc"

    def __init__(self, address: str, api_key: str = "") -> None:
        self.address = address
        # A server behind auth (the gateway's gRPC front): the key goes on every call.
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._channel: grpc.aio.Channel | None = None

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.address, options=_CHANNEL_OPTIONS)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    def _ch(self) -> grpc.aio.Channel:
        if self._channel is None:
            raise RuntimeError("target not started")
        return self._channel

    async def open_stt(self, options: SttOptions) -> VoxwireStt:
        call = stt_grpc.TranscriptionStub(self._ch()).StreamingTranscribe(
            timeout=options.deadline_s, metadata=self._metadata
        )
        config = stt_pb2.TranscriptionConfig(
            model=options.model,
            audio_format=options.audio_format,
            interim_results=options.interim_results,
        )
        stream = VoxwireStt(call)
        await stream.write(stt_pb2.StreamingTranscribeRequest(config=config))
        return stream

    async def open_tts(self, options: TtsOptions) -> VoxwireTts:
        stub = synthesis_pb2_grpc.SynthesisStub(self._ch())
        call = stub.StreamingSynthesize(timeout=options.deadline_s, metadata=self._metadata)
        return VoxwireTts(call, options)

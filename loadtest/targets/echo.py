"""The ``echo`` target: a raw-bytes grpc.aio bidi echo (benchmarks/echo_server.py), the floor
of one Python gRPC hop. Audio chunks go out as they are and every echo is an ``Ack`` of the
chunk it returns (in order); a first ``hello`` message, echoed, is the stream's ``Started``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import grpc

from loadtest.events import Ack, Ended, Event, Started
from loadtest.targets.base import SttOptions, TtsOptions
from loadtest.targets.voxwire_grpc import connect_reason

# The method benchmarks/echo_server.py serves (ECHO_METHOD there).
ECHO_METHOD = "/voxwire.bench.Echo/Echo"


class EchoStream:
    def __init__(self, call: Any) -> None:
        self._call = call
        self._answers = -1  # the hello comes back first

    async def _write(self, message: bytes) -> None:
        if not self._call.done():
            with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError):
                await self._call.write(message)

    async def send_audio(self, pcm: bytes) -> None:
        await self._write(pcm)

    async def finish(self) -> None:
        if not self._call.done():
            with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError):
                await self._call.done_writing()

    async def next_event(self) -> Event:
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            return Ended(
                time.monotonic(), exc.code().name, connect_reason(exc.code(), exc.details())
            )
        at = time.monotonic()
        if message is grpc.aio.EOF:
            return Ended(at, (await self._call.code()).name)
        index, self._answers = self._answers, self._answers + 1
        return Started(at) if index < 0 else Ack(at, index)

    def cancel(self) -> None:
        self._call.cancel()


class EchoTarget:
    name = "echo"

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel: grpc.aio.Channel | None = None

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.address)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def open_stt(self, options: SttOptions) -> EchoStream:
        assert self._channel is not None, "target not started"
        # No (de)serializers: bytes out, the same bytes back.
        stream = EchoStream(self._channel.stream_stream(ECHO_METHOD)(timeout=options.deadline_s))
        await stream.send_audio(b"hello")
        return stream

    async def open_tts(self, options: TtsOptions) -> Any:
        raise NotImplementedError("the echo target carries STT audio only")

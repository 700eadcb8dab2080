"""The ``null-relay`` target: the gateway's floor (benchmarks/null_relay.py), STT only.

The null relay passes WebSocket binary frames to an adapter's ``StreamingTranscribe`` as raw
bytes and each raw response back as a binary frame, parsing nothing. So this client does the
protobuf work a gateway would do for it: every frame it sends is a serialized
``voxwire.v1.StreamingTranscribeRequest`` (the config first, then audio, then ``close``), and
every frame it receives a serialized ``StreamingTranscribeResponse``. The relay ends the socket
with 1000 when the call ended OK, else 1011 with the gRPC status name as the close reason; the
adapter's summary carries the stage timings.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from loadtest.events import Ended, Event, Result, Started
from loadtest.targets.base import SttOptions, TtsOptions, UnconnectedStream
from loadtest.targets.gateway import _CLOSED, _Socket, ws_connect
from loadtest.targets.voxwire_grpc import stages_from_timings
from voxwire.v1 import transcription_pb2 as stt_pb2

# The path benchmarks/null_relay.py serves.
RELAY_PATH = "/relay"
_CLOSE = stt_pb2.StreamingTranscribeRequest(close=stt_pb2.CloseStream()).SerializeToString()


class RelayStt(_Socket):
    _stages: dict[str, int] | None = None

    async def send_audio(self, pcm: bytes) -> None:
        await self.send_bytes(stt_pb2.StreamingTranscribeRequest(audio=pcm).SerializeToString())

    async def finish(self) -> None:
        await self.send_bytes(_CLOSE)

    async def next_event(self) -> Event:
        if self.ended is not None:
            return self.ended
        while True:
            message = await self.ws.receive()
            at = time.monotonic()
            if message.type is aiohttp.WSMsgType.BINARY:
                response = stt_pb2.StreamingTranscribeResponse.FromString(message.data)
                kind = response.WhichOneof("response")
                if kind == "result":
                    r = response.result
                    return Result(at, r.is_final, r.transcript, r.end_ms)
                if kind == "started":
                    return Started(at)
                if kind == "summary":
                    self._stages = stages_from_timings(response.summary.timings)
            elif message.type in _CLOSED or message.type is aiohttp.WSMsgType.ERROR:
                code = self.ws.close_code
                if code == 1000:
                    self.ended = Ended(at, "OK", "", self._stages or {})
                elif message.type is aiohttp.WSMsgType.CLOSE and message.extra:
                    # The relay's close reason is the call's gRPC status name.
                    self.ended = Ended(at, str(message.extra), "")
                else:
                    self.ended = self.closed_event(message, at)
                return self.ended


class NullRelayTarget:
    name = "null-relay"

    def __init__(self, address: str) -> None:
        self.address = address
        self._http: aiohttp.ClientSession | None = None
        self._closing: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def close(self) -> None:
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    async def open_stt(self, options: SttOptions) -> RelayStt | UnconnectedStream:
        if self._http is None:
            raise RuntimeError("target not started")
        ws = await ws_connect(self._http, f"ws://{self.address}{RELAY_PATH}")
        if ws is None:
            return UnconnectedStream()  # UNAVAILABLE/CONNECT_FAILED, as every target says it
        stream = RelayStt(ws, self._closing)
        config = stt_pb2.TranscriptionConfig(
            model=options.model,
            audio_format=options.audio_format,
            interim_results=options.interim_results,
        )
        first = stt_pb2.StreamingTranscribeRequest(config=config)
        await stream.send_bytes(first.SerializeToString())
        return stream

    async def open_tts(self, options: TtsOptions) -> Any:
        raise NotImplementedError("the null relay carries STT only")
